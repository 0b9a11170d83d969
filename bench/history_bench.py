"""History benchmark: every dashboard page of a region, fresh and with N more trips of history.

    python bench/history_bench.py --database sqlite --trips 200000
    python bench/history_bench.py --database postgres --trips 1000000

Two copies of the same region are served side by side: the demo region as ``flask medport
seed-demo`` leaves it ("fresh"), and a copy of it to which ``flask medport seed-scale
--existing-region --trips N --years Y`` added N closed trips of history (with their bids,
routes and history lines) over the same hospitals, agencies and units, none live, none in
the last 30 hours nor on the days of the region's requests still running.  The copies differ in history alone: same organisations, units, users,
public ids and live requests.  Both then get their closed days' analytics cells
(``flask medport rollup``), as a deployment's timer would have stored them.

- ``--database sqlite`` (the embedded default): three SQLite files per copy, under
  ``--dir`` (default: a new temporary directory); the history copy is a file copy of the
  fresh one.  On SQLite the database's work is the worker's own CPU.
- ``--database postgres``: databases ``medport_hist_fresh_{center,hospital,ems}`` and
  ``medport_hist_<size>_{...}`` (``medport_hist_1m_*``) on ``--server``, the second made with
  ``createdb -T`` from the first.  With ``--reuse`` databases already holding the N generated
  trips are kept (and vacuumed) instead of made again.

Each copy is served by its own gunicorn (``gunicorn.conf.py``, one gevent worker, no relay),
timed inside the worker by ``dashboards_bench``'s WSGI middleware (wall and the worker's CPU
from the call into the app to its complete body).  Every page and partial of the three roles
(the list of ``dashboards_bench.py``, signed in as the demo's Altoona nurse, Altoona EMS
dispatcher and coordinator) is asked of one copy and then of the other, the order swapped
every round, ``--samples`` rounds after ``--warmup`` untimed ones: the same moment of the
machine for both.  It prints, as a Markdown table, CPU and wall p50 per page for each copy and
their ratios (history / fresh), with the load average before and after; on PostgreSQL also
the database time of each response's ``Server-Timing`` header.  Figures are printed, never
asserted.
"""
import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboards_bench import (  # noqa: E402
    TIMINGS_ENV,
    Session,
    _read_timings,
    page_list,
    read_server_timing,
    size_label,
)
from serving import free_port, wait_until_up  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SILOS = ("center", "hospital", "ems")
DEMO_PASSWORD = "medport-demo"
NURSE, DISPATCHER, COORDINATOR = ("nurse@altoona.medport.test", "dispatch@altoonaems.medport.test",
                                  "coordinator@medport.test")
#: Generated trips carry this patient reference (``dashboard.seed.scale.PATIENT_REF``).
GENERATED = "P-SCALE1"


def _engine(url):
    import sqlalchemy as sa

    return sa.create_engine(url)


def _rows(url, query, **params):
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            statement = sa.text(query)
            for name, value in params.items():
                if isinstance(value, list | tuple | set):
                    statement = statement.bindparams(sa.bindparam(name, expanding=True))
                    params[name] = list(value)
            return conn.execute(statement, params).all()
    finally:
        engine.dispose()


def _env(urls):
    env = dict(os.environ)
    env.update({f"MEDPORT_{silo.upper()}_DATABASE_URL": url for silo, url in urls.items()})
    env.update({"SECRET_KEY": "bench-" + secrets.token_hex(16), "MEDPORT_SIGNAL_BACKEND": "local",
                "MEDPORT_INPROCESS_RELAY": "0", "MEDPORT_ACCESS_LOG": "", "MEDPORT_LOG_LEVEL": "warning",
                # Maintenance commands run without a statement timeout (README); the servers keep it.
                "MEDPORT_DB_STATEMENT_TIMEOUT_MS": "0"})
    return env


def _flask(urls, *args):
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=_env(urls), check=True)
    return time.perf_counter() - started


def _generated(urls):
    """Generated trips in a copy, or None when its databases cannot be read."""
    try:
        return _rows(urls["hospital"], "SELECT count(*) FROM transport_requests WHERE patient_ref = :p",
                     p=GENERATED)[0][0]
    except Exception:  # a missing database or file: the copy is made
        return None


# --- the two copies ---------------------------------------------------------------------------

def sqlite_copies(folder, trips, years):
    """``(fresh urls, history urls, load seconds or None)`` of two SQLite copies under ``folder``."""
    fresh, history = folder / "fresh", folder / f"hist-{size_label(trips)}"
    urls = {name: {silo: f"sqlite:///{where}/medport_{silo}.sqlite3" for silo in SILOS}
            for name, where in (("fresh", fresh), ("history", history))}
    if _generated(urls["history"]) == trips and _generated(urls["fresh"]) == 0:
        print(f"reusing {fresh} and {history}")
        return urls["fresh"], urls["history"], None
    for where in (fresh, history):
        shutil.rmtree(where, ignore_errors=True)
    fresh.mkdir(parents=True)
    _make_fresh(urls["fresh"])
    shutil.copytree(fresh, history)
    return urls["fresh"], urls["history"], _add_history(urls, trips, years)


def postgres_copies(server, trips, years, reuse):
    """``(fresh urls, history urls, load seconds or None)`` of ``medport_hist_*`` on ``server``."""
    import sqlalchemy as sa

    names = {"fresh": {silo: f"medport_hist_fresh_{silo}" for silo in SILOS},
             "history": {silo: f"medport_hist_{size_label(trips)}_{silo}" for silo in SILOS}}
    urls = {copy: {silo: f"{server}/{name}" for silo, name in silos.items()} for copy, silos in names.items()}
    if reuse and _generated(urls["history"]) == trips and _generated(urls["fresh"]) == 0:
        print(f"reusing {', '.join(names['fresh'].values())} and {', '.join(names['history'].values())}")
        for copy in urls.values():
            _vacuum(copy)
        return urls["fresh"], urls["history"], None
    admin = _engine(f"{server}/postgres").execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in [*names["fresh"].values(), *names["history"].values()]:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for name in names["fresh"].values():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    _make_fresh(urls["fresh"])
    with admin.connect() as conn:
        for silo in SILOS:
            conn.execute(sa.text(f'CREATE DATABASE "{names["history"][silo]}" TEMPLATE "{names["fresh"][silo]}"'))
    admin.dispose()
    seconds = _add_history(urls, trips, years)
    for copy in urls.values():
        _vacuum(copy)
    return urls["fresh"], urls["history"], seconds


def _vacuum(urls):
    import sqlalchemy as sa

    for url in urls.values():
        engine = _engine(url).execution_options(isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("VACUUM (ANALYZE)"))
        engine.dispose()


def _make_fresh(urls):
    """The demo region, its outbox delivered."""
    _flask(urls, "db", "upgrade")
    _flask(urls, "medport", "seed-demo")
    _flask(urls, "medport", "relay", "--once")


def _add_history(urls, trips, years):
    """N trips of closed history into the history copy, then both copies' closed days stored;
    returns the seconds the history took (generation, load and its rollup)."""
    print(f"adding {trips:,} trips of history over {years} years ...", flush=True)
    seconds = _flask(urls["history"], "medport", "seed-scale", "--existing-region", "--trips", str(trips),
                     "--years", str(years))
    _flask(urls["fresh"], "medport", "rollup", "--days", str(int(years * 366) + 1))
    return seconds


# --- what is measured -------------------------------------------------------------------------

def pages(urls):
    """``[(label, role, path)]``: the pages and partials of ``dashboards_bench.pages``, for the
    demo's Altoona nurse, Altoona EMS dispatcher and the coordinator."""
    hospital_id = _rows(urls["center"], "SELECT id FROM hospitals WHERE short_code = 'ALT'")[0][0]
    agency_id = _rows(urls["center"], "SELECT id FROM agencies WHERE short_code = 'AEMS'")[0][0]
    # The nurse's open request with the most bids (else her latest request).
    trip = _rows(urls["hospital"], "SELECT public_id FROM transport_requests WHERE hospital_id = :h "
                 "ORDER BY CASE WHEN status = 'open' THEN 0 ELSE 1 END, bid_count DESC, id DESC LIMIT 1",
                 h=hospital_id)[0][0]
    bid_on = [row[0] for row in _rows(urls["ems"], "SELECT trip_id FROM transport_bids WHERE agency_id = :a "
                                      "AND status = 'live' ORDER BY trip_id", a=agency_id)]
    ems_trip = trip
    if bid_on:
        ems_trip = _rows(urls["hospital"], "SELECT public_id FROM transport_requests WHERE id IN :ids "
                         "ORDER BY id LIMIT 1", ids=bid_on)[0][0]
    return page_list(trip, ems_trip)


def serve(urls, timings, log):
    """One gunicorn (one gevent worker) serving ``urls``, timing labelled requests into ``timings``."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "1", "-b", f"127.0.0.1:{port}",
         "bench.dashboards_bench:timed_app()"], cwd=ROOT, env=dict(_env(urls), **{TIMINGS_ENV: str(timings)}),
        stdout=log, stderr=subprocess.STDOUT)
    return port, process


def measure(copies, samples, warmup, workdir):
    """Serve both copies, ask every page of each in turn; ``{copy: (samples, cpu, db ms)}``."""
    measured = pages(copies["fresh"])
    log = open(workdir / "history-bench-server.log", "a")
    servers, sessions = {}, {}
    try:
        for name, urls in copies.items():
            timings = workdir / f"history-bench-{name}.tsv"
            timings.unlink(missing_ok=True)
            servers[name] = (*serve(urls, timings, log), timings)
        for name, (port, process, _timings) in servers.items():
            wait_until_up(f"http://127.0.0.1:{port}", process, timeout=90)
            sessions[name] = {"hospital": Session(port, NURSE, DEMO_PASSWORD),
                              "ems": Session(port, DISPATCHER, DEMO_PASSWORD),
                              "center": Session(port, COORDINATOR, DEMO_PASSWORD), None: Session(port)}
        database_ms = {name: defaultdict(list) for name in copies}

        def ask(name, label, role, path, tag):
            response = sessions[name][role].get(path, label=tag)
            if response.status != 200:
                raise RuntimeError(f"{label} ({path}) answered {response.status} on the {name} copy")
            if tag == label:
                database_ms[name][label].append(sum(read_server_timing(response).get("db", {}).values()))

        order = list(copies)
        for label, role, path in measured:
            for name in order:
                ask(name, label, role, path, "first|" + label)
            for _ in range(warmup):
                for name in order:
                    ask(name, label, role, path, "warm|" + label)
        load_before = os.getloadavg()
        print(f"measuring {len(measured)} pages x {samples} rounds on both copies ...", flush=True)
        for round_number in range(samples):
            for label, role, path in measured:
                for name in order if round_number % 2 == 0 else reversed(order):
                    ask(name, label, role, path, label)
        load_after = os.getloadavg()
    finally:
        for _port, process, _timings in servers.values():
            process.terminate()
        for _port, process, _timings in servers.values():
            process.wait(timeout=30)
        log.close()
    results = {}
    for name, (_port, _process, timings) in servers.items():
        wall, cpu, _first = _read_timings(timings)
        results[name] = (wall, cpu, database_ms[name])
    return measured, results, (load_before, load_after)


def report(measured, results, load, trips, database, history_seconds, counts):
    fresh_wall, fresh_cpu, fresh_db = results["fresh"]
    hist_wall, hist_cpu, hist_db = results["history"]
    size = size_label(trips)
    print()
    print(f"{database}: the demo region fresh and with +{trips:,} trips of history ({counts}); "
          f"{len(next(iter(fresh_cpu.values())))} interleaved samples per page; load average (1, 5, 15 min) "
          f"before {' '.join(f'{x:.2f}' for x in load[0])}, after {' '.join(f'{x:.2f}' for x in load[1])}.")
    if history_seconds is not None:
        print(f"Adding the history (seed-scale --existing-region, its rollup included) took {history_seconds:.0f} s.")
    print("Worker CPU and wall time per request, p50, ms (gunicorn, one gevent worker each); "
          "ratio = +history / fresh" + ("; DB = Server-Timing database time, p50." if database == "postgres" else "."))
    print()
    head = ["page", "fresh CPU", f"+{size} CPU", "CPU ratio", "fresh wall", f"+{size} wall", "wall ratio"]
    if database == "postgres":
        head += ["fresh DB", f"+{size} DB"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for label, _role, _path in measured:
        cpu = statistics.median(fresh_cpu[label]), statistics.median(hist_cpu[label])
        wall = statistics.median(fresh_wall[label]), statistics.median(hist_wall[label])
        row = [label, f"{cpu[0]:.2f}", f"{cpu[1]:.2f}", f"{cpu[1] / cpu[0]:.2f}",
               f"{wall[0]:.2f}", f"{wall[1]:.2f}", f"{wall[1] / wall[0]:.2f}"]
        if database == "postgres":
            row += [f"{statistics.median(fresh_db[label]):.2f}" if fresh_db.get(label) else "—",
                    f"{statistics.median(hist_db[label]):.2f}" if hist_db.get(label) else "—"]
        print("| " + " | ".join(row) + " |")


def _counts(urls):
    trips = _rows(urls["hospital"], "SELECT count(*) FROM transport_requests")[0][0]
    bids = _rows(urls["ems"], "SELECT count(*) FROM transport_bids")[0][0]
    return f"{trips:,} trips and {bids:,} bids in the history copy"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--trips", type=int, default=200_000, help="trips of history added (default 200,000)")
    parser.add_argument("--years", type=float, default=2.0, help="how far back the history reaches (default 2)")
    parser.add_argument("--samples", type=int, default=40, help="timed rounds per page (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per page and copy first")
    parser.add_argument("--dir", help="SQLite: where the copies are kept (reused when they hold N trips); "
                                      "default a new temporary directory, removed afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="PostgreSQL: keep medport_hist_* databases that already hold N generated trips")
    parser.add_argument("--server", default=os.environ.get("MEDPORT_BENCH_POSTGRES_URL",
                                                           "postgresql://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from dashboard.config import normalise_url

    temporary = None
    if args.database == "sqlite":
        if args.dir:
            workdir = Path(args.dir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            temporary = workdir = Path(tempfile.mkdtemp(prefix="medport-history-"))
        fresh, history, seconds = sqlite_copies(workdir, args.trips, args.years)
    else:
        workdir = ROOT / "instance"
        workdir.mkdir(exist_ok=True)
        fresh, history, seconds = postgres_copies(normalise_url(args.server.rstrip("/")), args.trips, args.years,
                                                   args.reuse)
    try:
        copies = {"fresh": fresh, "history": history}
        measured, results, load = measure(copies, args.samples, args.warmup, workdir)
        report(measured, results, load, args.trips, args.database, seconds, _counts(history))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
