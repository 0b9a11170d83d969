"""One locust run against the app served as in production, measured.

    python bench/load_run.py --users 200 --spawn-rate 20 --time 5m

Builds three fresh PostgreSQL databases (``<prefix>_center`` ...), seeds the demo
region, starts gunicorn (``gunicorn.conf.py``, gevent workers) and one relay process
on a free loopback port, runs ``bench/locustfile.py`` headless for a warm-up that is
not counted (``--warmup``), reads each worker's resident memory, runs it again for
the given time, reads the memory again and prints, per page, the requests, failures
and response times (p50, p95, p99), then each worker's RSS at start, before and after
the counted run (and its peak).  ``--json FILE`` writes the same figures for a
program to read (``tests/test_load.py`` runs a short one).
Loopback only; everything it started is stopped at the end.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from serving import free_port, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
SILOS = ("center", "hospital", "ems")


def fresh_databases(server_url, prefix):
    """Drop and create ``<prefix>_<silo>``; return their URLs."""
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
    """The gunicorn master's worker processes."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def memory(pid):
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


def page_figures(stats_csv):
    """Per page (and the aggregate): requests, failures, p50, p95, p99 in ms."""
    rows = []
    with open(stats_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({"page": row["Name"] if row["Type"] else "all", "method": row["Type"],
                         "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                         "p50": row["50%"], "p95": row["95%"], "p99": row["99%"]})
    return rows


def _locust(url, users, spawn_rate, duration, csv_prefix, pids=(), every=30):
    """Run locust headless; meanwhile read the workers' RSS every ``every`` seconds.

    Returns ``(CompletedProcess, samples)``, each sample ``(seconds since the start,
    {pid: RSS MiB})``: the curve tells a plateau (a worker that has reached its working
    size) from a steady climb (a leak).
    """
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
               "-u", str(users), "-r", str(spawn_rate), "-t", duration, "--host", url, "--only-summary",
               "--stop-timeout", "10", "--csv", str(csv_prefix)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, samples = time.monotonic(), []
    deadline = started + _seconds(duration) + 300
    while True:
        try:
            stdout, stderr = process.communicate(timeout=max(1.0, min(every, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                process.kill()
                stdout, stderr = process.communicate()
                break
            samples.append((round(time.monotonic() - started), {pid: memory(pid)[0] for pid in pids}))
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), samples


def run(users, spawn_rate, duration, workers, prefix, server_url, warmup="0"):
    urls = fresh_databases(server_url, prefix)
    env = dict(os.environ, MEDPORT_CENTER_DATABASE_URL=urls["center"],
               MEDPORT_HOSPITAL_DATABASE_URL=urls["hospital"], MEDPORT_EMS_DATABASE_URL=urls["ems"],
               SECRET_KEY="load-run-" + os.urandom(8).hex(), MEDPORT_SIGNAL_BACKEND="postgres",
               MEDPORT_INPROCESS_RELAY="0", MEDPORT_ACCESS_LOG="",
               # All the users sign in from one address.
               MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS="100000")
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    for args in (["db", "upgrade"], ["medport", "seed-demo"]):
        subprocess.run(flask + args, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    scratch = Path(tempfile.mkdtemp(prefix="medport-load-"))
    log = open(scratch / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", str(workers),
                               "-b", f"127.0.0.1:{port}", "wsgi:app"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    relay = subprocess.Popen(flask + ["medport", "relay", "--poll", "0.5"], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(url, server, timeout=120)
        pids = workers_of(server.pid)
        at_start = {pid: memory(pid) for pid in pids}
        warmed = None
        if _seconds(warmup):
            # The same users for a while first, not counted: templates compiled, statement
            # caches and connection pools filled, so "before" is a worker at work.
            _locust(url, users, spawn_rate, warmup, scratch / "warmup")
            warmed = next(row for row in page_figures(scratch / "warmup_stats.csv") if row["page"] == "all")
        before = {pid: memory(pid) for pid in pids}
        started = time.monotonic()
        locust, samples = _locust(url, users, spawn_rate, duration, scratch / "load", pids)
        elapsed = time.monotonic() - started
        after = {pid: memory(pid) for pid in pids}
        pages = page_figures(scratch / "load_stats.csv")
    finally:
        for process in (relay, server):
            process.terminate()
        for process in (relay, server):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
    return {
        "users": users, "spawn_rate": spawn_rate, "duration": duration, "warmup": warmup, "workers": workers,
        "warmup_requests": warmed and warmed["requests"], "warmup_failures": warmed and warmed["failures"],
        "elapsed_seconds": round(elapsed, 1), "locust_exit": locust.returncode,
        "pages": pages,
        "workers_rss_mib": [{"pid": pid, "at_start": at_start[pid][0], "before": before[pid][0],
                             "after": after[pid][0], "growth_percent": _growth(before[pid][0], after[pid][0]),
                             "peak": after[pid][1]} for pid in pids],
        "rss_samples": [{"seconds": at, "rss_mib": [rss[pid] for pid in pids]} for at, rss in samples],
        "load_average": os.getloadavg(), "scratch": str(scratch),
        "locust_tail": locust.stderr[-3000:],
    }


def _seconds(duration):
    """Seconds in a locust ``-t`` value such as ``20s``, ``5m``, ``1h`` (or a bare number)."""
    units = {"s": 1, "m": 60, "h": 3600}
    return int(duration[:-1]) * units[duration[-1]] if duration[-1] in units else int(duration)


def _growth(before, after):
    return round(100 * (after - before) / before, 1)


def report(result):
    print(f"{result['users']} users (spawn {result['spawn_rate']}/s), {result['duration']} after "
          f"{result['warmup']} of warm-up, "
          f"{result['workers']} gunicorn workers + 1 relay, PostgreSQL; load average after: "
          + ", ".join(f"{x:.1f}" for x in result["load_average"]))
    if result["warmup_requests"] is not None:
        print(f"warm-up (not counted below): {result['warmup_requests']} requests, "
              f"{result['warmup_failures']} failures")
    print(f"{'page':<42} {'requests':>8} {'failures':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for row in result["pages"]:
        name = f"{row['method']} {row['page']}".strip()
        print(f"{name:<42} {row['requests']:>8} {row['failures']:>8} {row['p50']:>7} {row['p95']:>7} "
              f"{row['p99']:>7}")
    if result["rss_samples"]:
        print("RSS during the run (MiB per worker): " + "; ".join(
            f"{sample['seconds']} s: " + " / ".join(f"{mib:.1f}" for mib in sample["rss_mib"])
            for sample in result["rss_samples"]))
    for worker in result["workers_rss_mib"]:
        print(f"worker {worker['pid']}: RSS {worker['at_start']} MiB at start, {worker['before']} MiB "
              f"after warm-up, {worker['after']} MiB after the run ({worker['growth_percent']:+}%), "
              f"peak {worker['peak']} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--spawn-rate", type=int, default=20)
    parser.add_argument("--time", default="5m", help="locust -t: 20s, 5m, ...")
    parser.add_argument("--warmup", default="60s",
                        help="locust -t of an uncounted run first (0: none); RSS 'before' is read after it")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db-prefix", default="medport_load")
    parser.add_argument("--postgres", default=os.environ.get("MEDPORT_TEST_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = run(args.users, args.spawn_rate, args.time, args.workers, args.db_prefix,
                 args.postgres.rstrip("/").replace("postgresql://", "postgresql+psycopg2://", 1), args.warmup)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
