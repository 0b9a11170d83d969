"""Live-signal fan-out: a posted request reaches N connected streams; how fast, at what memory cost.

    python bench/sse_fanout.py [--clients 500] [--trips 20] [--workers 2]

What it runs, all on this machine:
* three fresh PostgreSQL databases (``medport_bench_*``, or ``--db-prefix``, dropped and re-created),
  migrated and seeded with the demo region;
* the app under gunicorn (``gunicorn.conf.py``: gevent workers) on a free
  loopback port, with ``MEDPORT_SIGNAL_BACKEND=postgres``, and one
  ``flask medport relay`` process, as in a deployment;
* a client process holding N SSE connections (asyncio, raw sockets), signed
  in as the users who may all see the posted requests (the coordinator, the
  Altoona nurse, every agency's dispatcher).

This process posts requests through the trips service (one commit each, as
the hospital's page would) and takes the time of each commit; the clients
take the time each signal arrives.  Latency = arrival - commit, over every
client and request: posting → outbox → relay (woken by NOTIFY) → live signal
→ NOTIFY → every worker's hub → every stream.  Memory per client = growth
of the server's resident memory (master and workers) from warm and idle to
N connected, divided by N.  Server CPU = user and system time of the master and
workers while posting, per signal of a posted request received and per message
received (those signals and the alerts the requests raised, for their users).
Figures are printed, not asserted.
"""
import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from urllib.parse import urlencode

from serving import free_port, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
USERS = ["coordinator@medport.test", "nurse@altoona.medport.test"] + [
    f"dispatch@{slug}.medport.test" for slug in
    ("altoonaems", "blaircounty", "centrelifelink", "alleghenycct", "huntingdonrescue", "cambriamedical")]
PASSWORD = "medport-demo"
#: ``<prefix>_<silo>``; the prefix is ``--db-prefix`` (default ``medport_bench``).
DATABASES = {silo: f"medport_bench_{silo}" for silo in ("center", "hospital", "ems")}


# --- the client process: N streams, arrival times --------------------------------------------

async def _stream(port, cookie, seen, connected, state):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write((f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
                  "Accept: text/event-stream\r\n\r\n").encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream answered {status!r}")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b": connected"):
                connected.set()
            elif line.startswith(b"data: "):
                seen.setdefault(line[6:].strip().decode(), time.time())
                state.messages += 1
                state.check()
    finally:
        writer.close()


class _Progress:
    """Which streams have received every expected signal."""

    def __init__(self, arrivals):
        self.arrivals, self.ids, self.done = arrivals, None, asyncio.Event()
        #: Every signal received (the posted requests' and the alerts they raise), all clients.
        self.messages = 0

    def check(self):
        if self.ids is not None and all(self.ids <= seen.keys() for seen in self.arrivals):
            self.done.set()


async def _clients(port, cookies, count, timeout):
    arrivals = [{} for _ in range(count)]
    progress = _Progress(arrivals)
    gate = asyncio.Semaphore(50)  # connect in waves, as pages open over a shift

    async def one(i):
        connected = asyncio.Event()
        async with gate:
            task = asyncio.create_task(_stream(port, cookies[i % len(cookies)], arrivals[i], connected,
                                               progress))
            await asyncio.wait_for(connected.wait(), 60)
        return task

    tasks = await asyncio.gather(*(one(i) for i in range(count)))
    print("CONNECTED", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)  # "IDS a,b,c" once posting is over
    progress.ids = set(line.split()[1].split(","))
    progress.check()
    try:
        await asyncio.wait_for(progress.done.wait(), timeout)
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    print(json.dumps({"messages": progress.messages,
                      "arrivals": [{k: v for k, v in seen.items() if k in progress.ids} for seen in arrivals]}),
          flush=True)


def client_main(args):
    cookies = json.loads(Path(args.cookies).read_text())
    asyncio.run(_clients(args.port, cookies, args.clients, args.timeout))


# --- the orchestrating process ---------------------------------------------------------------


def _rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _server_pids(master_pid):
    """The gunicorn master and its workers."""
    pids = [master_pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{master_pid}$", status, re.M):
                pids.append(int(entry.name))
    return pids


def _server_rss_kb(master_pid):
    """Resident memory of the gunicorn master and its workers."""
    return sum(_rss_kb(pid) for pid in _server_pids(master_pid))


def _server_cpu_seconds(master_pid):
    """CPU time (user + system) the server's processes have used so far."""
    total = 0
    for pid in _server_pids(master_pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _request(port, method, path, cookies=None, form=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Cookie": cookies} if cookies else {}
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    jar = [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or []]
    conn.close()
    return response.status, jar, text


def _login(port, email):
    _, jar, page = _request(port, "GET", "/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    status, jar2, _ = _request(port, "POST", "/login", "; ".join(jar),
                               {"csrf_token": token, "email": email, "password": PASSWORD})
    if status != 302:
        raise RuntimeError(f"login of {email} answered {status}")
    cookies = dict(c.split("=", 1) for c in jar + jar2)
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def _prepare_databases(base):
    import sqlalchemy as sa

    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in DATABASES.values():
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return {silo: f"{base}/{name}" for silo, name in DATABASES.items()}


def _post_requests(count, interval):
    """Post ``count`` requests as the Altoona nurse would; return {public id: commit time}."""
    import sqlalchemy as sa

    from dashboard import create_app
    from dashboard.events.outbox import Actor
    from dashboard.extensions import db
    from dashboard.models.base import utcnow
    from dashboard.models.center import Hospital, User
    from dashboard.models.hospital import HospitalFacility
    from dashboard.services import trip_posting

    committed = {}
    with create_app().app_context():
        alt = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
        nurse = db.session.scalar(sa.select(User.id).where(User.hospital_id == alt.id))
        origin = db.session.scalar(sa.select(HospitalFacility.id).where(HospitalFacility.hospital_id == alt.id))
        destination = db.session.scalar(
            sa.select(HospitalFacility.id).where(HospitalFacility.hospital_id != alt.id))
        db.session.commit()
        for _ in range(count):
            now = utcnow()
            trip = trip_posting.post(alt.id, alt.short_code, dict(
                origin_facility_id=origin, pickup_location="Bench ward", destination_facility_id=destination,
                level_of_care="BLS", mobility="stretcher", urgency="routine",
                window_start=now + timedelta(hours=3), window_end=now + timedelta(hours=4),
                age_group="adult", weight_kg=70, bid_deadline=now + timedelta(minutes=30),
                invite_mode="all"),
                                     actor=Actor(nurse, None, "Bench"))
            public_id = trip.public_id
            db.session.commit()
            committed[public_id] = time.time()
            time.sleep(interval)  # requests arrive one by one, not in one burst
    return committed


def _signal_times(committed):
    """When the relay wrote each request's first live signal (epoch seconds)."""
    import sqlalchemy as sa

    from dashboard import create_app
    from dashboard.extensions import db
    from dashboard.models.center import LiveSignal

    with create_app().app_context():
        rows = db.session.execute(
            sa.select(LiveSignal.entity_id, sa.func.min(LiveSignal.created_at))
            .where(LiveSignal.entity_id.in_(list(committed))).group_by(LiveSignal.entity_id)).all()
    return {pid: at.replace(tzinfo=UTC).timestamp() for pid, at in rows}


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main(args):
    from dashboard.config import normalise_url

    base = normalise_url(args.postgres_url.rstrip("/"))
    DATABASES.update({silo: f"{args.db_prefix}_{silo}" for silo in DATABASES})
    urls = _prepare_databases(base)
    env = dict(os.environ)
    env.update({
        "MEDPORT_CENTER_DATABASE_URL": urls["center"],
        "MEDPORT_HOSPITAL_DATABASE_URL": urls["hospital"],
        "MEDPORT_EMS_DATABASE_URL": urls["ems"],
        "SECRET_KEY": "bench-" + uuid.uuid4().hex,
        "MEDPORT_SIGNAL_BACKEND": "postgres",
        "MEDPORT_INPROCESS_RELAY": "0",
        "MEDPORT_ACCESS_LOG": "",
        "MEDPORT_LOG_LEVEL": "warning",
        "MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS": "1000",
        "WEB_CONCURRENCY": str(args.workers),
    })
    os.environ.update(env)
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run(flask + ["db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run(flask + ["medport", "seed-demo"], cwd=ROOT, env=env, check=True, capture_output=True)

    port = free_port()
    env["PORT"] = str(port)
    log = open(ROOT / "instance" / "bench-server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                               "-b", f"127.0.0.1:{port}", "wsgi:app"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    relay = subprocess.Popen(flask + ["medport", "relay"], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    clients = None
    scratch = tempfile.TemporaryDirectory()
    try:
        wait_until_up(f"http://127.0.0.1:{port}", server, timeout=60)
        cookies = [_login(port, email) for email in USERS]
        cookie_file = Path(scratch.name) / "cookies.json"
        cookie_file.write_text(json.dumps(cookies))

        # Warm up: every worker has served streams (hub primed, listener connected).
        warm = subprocess.Popen([sys.executable, __file__, "--client-mode", "--port", str(port),
                                 "--cookies", str(cookie_file), "--clients", "20", "--timeout", "1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        warm.stdout.readline()
        warm.communicate("IDS none\n", timeout=60)
        idle_kb = _server_rss_kb(server.pid)

        clients = subprocess.Popen([sys.executable, __file__, "--client-mode", "--port", str(port),
                                    "--cookies", str(cookie_file), "--clients", str(args.clients),
                                    "--timeout", "30"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started = time.monotonic()
        if clients.stdout.readline().strip() != "CONNECTED":
            raise RuntimeError("the client process failed")
        connect_seconds = time.monotonic() - started
        connected_kb = _server_rss_kb(server.pid)

        cpu_before = _server_cpu_seconds(server.pid)
        committed = _post_requests(args.trips, args.interval)
        cpu_used = _server_cpu_seconds(server.pid) - cpu_before
        output, _ = clients.communicate("IDS " + ",".join(committed) + "\n", timeout=120)
        received_all = json.loads(output.strip().splitlines()[-1])
        arrivals, messages = received_all["arrivals"], received_all["messages"]
    finally:
        for process in (clients, relay, server):
            if process is not None and process.poll() is None:
                process.terminate()
        for process in (relay, server):
            process.wait(timeout=30)
        log.close()
        scratch.cleanup()

    latencies = [(seen[pid] - at) * 1000 for seen in arrivals for pid, at in committed.items() if pid in seen]
    written = _signal_times(committed)
    relay_ms = [(written[pid] - at) * 1000 for pid, at in committed.items() if pid in written]
    fanout_ms = [(seen[pid] - written[pid]) * 1000 for seen in arrivals for pid in written if pid in seen]
    received = len(latencies)
    wanted = len(committed) * args.clients
    print(f"clients connected          {args.clients} (in {connect_seconds:.1f} s), "
          f"{args.workers} gevent workers, 1 relay process")
    print(f"requests posted            {len(committed)}, one every {args.interval:.2f} s")
    print(f"signals received           {received} of {wanted}")
    if latencies:
        print(f"latency post → signal      p50 {statistics.median(latencies):.0f} ms, "
              f"p99 {_percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms")
    if relay_ms and fanout_ms:
        print(f"  of which relay           p50 {statistics.median(relay_ms):.0f} ms, "
              f"p99 {_percentile(relay_ms, 0.99):.0f} ms (commit → live signal written)")
        print(f"  of which fan-out         p50 {statistics.median(fanout_ms):.0f} ms, "
              f"p99 {_percentile(fanout_ms, 0.99):.0f} ms (live signal written → client)")
    if received:
        print(f"server CPU per signal sent {cpu_used / received * 1e6:.0f} µs "
              f"({cpu_used:.2f} s while posting)")
        print(f"  per message sent         {cpu_used / messages * 1e6:.0f} µs ({messages} messages: "
              f"the requests' signals and the alerts they raised)")
    print(f"server memory              idle {idle_kb / 1024:.1f} MiB, connected {connected_kb / 1024:.1f} MiB, "
          f"{(connected_kb - idle_kb) / args.clients:.1f} KiB per client")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--trips", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db-prefix", default="medport_bench",
                        help="database names <prefix>_center, ... (dropped and re-created)")
    parser.add_argument("--postgres-url", default=os.environ.get("MEDPORT_BENCH_POSTGRES_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--client-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cookies", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=30, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    client_main(arguments) if arguments.client_mode else main(arguments)
