"""Sign-in rush: N users signing in within a few seconds, as at the start of a shift.

    python bench/signin_rush.py --users 200 --within 10
    python bench/signin_rush.py --code /tmp/medport-before   # the same run against other code

Builds three fresh PostgreSQL databases (``<prefix>_center`` ...), seeds the demo region,
starts gunicorn (``gunicorn.conf.py``, gevent workers, ``--workers``) on a free loopback port
from ``--code`` (default: this checkout), then starts one user every ``within / users``
seconds, each on its own connection: ``GET /login`` (the form and its CSRF token), then
``POST /login`` with a demo account's email and password.  Meanwhile it reads every worker's
RSS from ``/proc`` every 0.2 s.

Prints, for the POST (the password check) and for the whole sign-in (GET + POST): p50, p95,
p99 and max in milliseconds, the answers by status, the CPU time the workers used over the rush
(from ``/proc``: a cost the machine's load does not change, where the wall-clock figures are
mostly waiting for a CPU on a busy machine), each worker's RSS at start, its highest sample and
its peak (``VmHWM``), and the load average.  Figures are printed, never asserted.
Loopback only; everything it started is stopped at the end.
"""
import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import sqlalchemy as sa
from serving import free_port, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
SILOS = ("center", "hospital", "ems")
PASSWORD = "medport-demo"
ACCOUNTS = ([f"nurse@{s}.medport.test" for s in ("altoona", "mountnittany", "juniata", "johnstown", "bedford",
                                                  "tyrone")]
            + [f"dispatch@{s}.medport.test" for s in ("altoonaems", "blaircounty", "centrelifelink",
                                                      "alleghenycct", "huntingdonrescue", "cambriamedical")]
            + ["coordinator@medport.test"])


def fresh_databases(server_url, prefix):
    engine = sa.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    urls = {}
    with engine.connect() as conn:
        for silo in SILOS:
            name = f"{prefix}_{silo}"
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            urls[silo] = f"{server_url}/{name}"
    engine.dispose()
    return urls


def workers_of(master_pid):
    return sorted(int(pid) for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split())


def memory(pid):
    """(RSS, peak RSS) of a process in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid):
    """User + system CPU time a process (all its threads) has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sign_in(port, email, results):
    """One user: GET the form, POST it; appends (status, post ms, total ms) to ``results``."""
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/login")
        response = conn.getresponse()
        page = response.read().decode()
        cookie = "; ".join(c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or [])
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        posted = time.perf_counter()
        conn.request("POST", "/login", body=urlencode({"csrf_token": token, "email": email, "password": PASSWORD}),
                     headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        response = conn.getresponse()
        response.read()
        done = time.perf_counter()
        conn.close()
        results.append((response.status, (done - posted) * 1000, (done - started) * 1000))
    except (OSError, http.client.HTTPException, AttributeError) as error:
        results.append((type(error).__name__, None, (time.perf_counter() - started) * 1000))


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run(args):
    server_url = args.postgres.rstrip("/").replace("postgresql://", "postgresql+psycopg2://", 1)
    urls = fresh_databases(server_url, args.db_prefix)
    code = Path(args.code).resolve()
    env = dict(os.environ, MEDPORT_CENTER_DATABASE_URL=urls["center"],
               MEDPORT_HOSPITAL_DATABASE_URL=urls["hospital"], MEDPORT_EMS_DATABASE_URL=urls["ems"],
               SECRET_KEY="rush-" + os.urandom(8).hex(), MEDPORT_SIGNAL_BACKEND="postgres",
               MEDPORT_INPROCESS_RELAY="0", MEDPORT_ACCESS_LOG="", WEB_CONCURRENCY=str(args.workers),
               MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS="100000")
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    for command in (["db", "upgrade"], ["medport", "seed-demo"]):
        subprocess.run(flask + command, cwd=code, env=env, check=True, capture_output=True, timeout=600)
    port = free_port()
    scratch = Path(tempfile.mkdtemp(prefix="medport-rush-"))
    log = open(scratch / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                               "-b", f"127.0.0.1:{port}", "wsgi:app"],
                              cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
    results, highest = [], {}
    try:
        wait_until_up(f"http://127.0.0.1:{port}", server, timeout=120)
        pids = workers_of(server.pid)
        # Each worker's first sign-in opens its pools and compiles the templates: not counted.
        for email in ACCOUNTS[: 2 * len(pids)]:
            sign_in(port, email, [])
        at_start = {pid: memory(pid)[0] for pid in pids}
        highest = dict(at_start)
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                for pid in pids:
                    highest[pid] = max(highest[pid], memory(pid)[0])
                stop.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        load_before = os.getloadavg()
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        gap = args.within / args.users
        began = time.perf_counter()
        users = []
        for i in range(args.users):
            delay = began + i * gap - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            user = threading.Thread(target=sign_in, args=(port, ACCOUNTS[i % len(ACCOUNTS)], results))
            user.start()
            users.append(user)
        for user in users:
            user.join(timeout=300)
        elapsed = time.perf_counter() - began
        stop.set()
        watcher.join(timeout=5)
        peaks = {pid: memory(pid)[1] for pid in pids}
        cpu_used = sum(cpu_seconds(pid) - cpu_before[pid] for pid in pids)
        load_after = os.getloadavg()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    statuses = Counter(status for status, _, _ in results)
    posts = [ms for _, ms, _ in results if ms is not None]
    totals = [total for _, _, total in results]
    print(f"code: {code}; {args.users} users starting within {args.within} s on {args.workers} gevent workers; "
          f"all answered after {elapsed:.1f} s; load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")
    print("answers to POST /login: " + ", ".join(f"{status}: {count}" for status, count in sorted(
        statuses.items(), key=str)))
    for label, values in (("POST /login", posts), ("GET + POST", totals)):
        print(f"{label:<12} p50 {statistics.median(values):7.0f} ms  p95 {percentile(values, 0.95):7.0f} ms  "
              f"p99 {percentile(values, 0.99):7.0f} ms  max {max(values):7.0f} ms")
    signed_in = statuses.get(302, 0)
    print(f"workers' CPU over the rush: {cpu_used:.1f} s"
          + (f", {cpu_used / signed_in * 1000:.0f} ms per sign-in answered 302" if signed_in else ""))
    for pid in pids:
        print(f"worker {pid}: RSS {at_start[pid]:.1f} MiB at start, highest sample {highest[pid]:.1f} MiB, "
              f"peak (VmHWM) {peaks[pid]:.1f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--within", type=float, default=10.0, help="seconds over which the users start")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--code", default=str(ROOT), help="the checkout to serve (default: this one)")
    parser.add_argument("--db-prefix", default="medport_rush")
    parser.add_argument("--postgres", default=os.environ.get("MEDPORT_TEST_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432"))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
