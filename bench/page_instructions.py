"""Page cost in instructions: every page of the dashboards bench, counted by callgrind.

    python bench/page_instructions.py --trips 10000
    python bench/page_instructions.py --trips 10000 --before /tmp/medport-before --pages "regional board"

Wall-clock and even CPU-time figures move by 10-30% on a machine that other work keeps busy; an
instruction count does not (valgrind's callgrind counts the instructions the process executes,
whatever else the machine runs: two runs of the same page agree within about 2%).  So this
bench answers "did this change make the page cheaper, and by how much" on a loaded machine,
where ``dashboards_bench.py`` answers "how long does it take under gunicorn" on a quiet one.

For each page it starts a child Python under ``valgrind --tool=callgrind --instr-atstart=no``
(the interpreter and its imports run uninstrumented), which builds the app in-process on the
dashboards bench's PostgreSQL databases (``medport_bench10k_*`` for ``--trips 10000``, made
and filled by ``dashboards_bench.prepare`` when missing), signs in with Flask's test client,
asks the page ``--warmup`` times, tunes the garbage collector as ``gunicorn.conf.py`` does,
then tells this process it is ready; this process switches instrumentation on
(``callgrind_control -i on``), lets the child ask the page ``--requests`` times, and switches
it off.  The figure is the program's instructions over those requests, per request.  The bare
endpoint (a route added in the child that answers text without a database) is the ceiling
each page is given as a multiple of.  The request goes through the whole app (sign-in check,
reads, template, ``Server-Timing``) but not through gunicorn or gevent.

With ``--before DIR`` every page is counted for that checkout too, on the same databases, and
the table shows both and their ratio.  Figures are printed as a Markdown table, never asserted.
Needs valgrind (Debian's package) and the PostgreSQL server of ``--server``.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CEILING_PATH = "/bench/instructions-ping"


def child(code, role, path, warmup, requests, ready, go, done):
    """Runs under valgrind: the app of checkout ``code``, one signed-in client, the page."""
    sys.path.insert(0, code)
    os.chdir(code)
    from dashboard import create_app
    from dashboard.gc_tuning import DEFAULT_THRESHOLD, tune

    app = create_app({"MEDPORT_INPROCESS_RELAY": False, "WTF_CSRF_ENABLED": False})
    app.add_url_rule(CEILING_PATH, "bench_instructions_ping", lambda: ("ok", 200, {"Content-Type": "text/plain"}))
    client = app.test_client()
    if role:
        email, password = role.split(":", 1)
        answer = client.post("/login", data={"email": email, "password": password})
        if answer.status_code != 302:
            raise SystemExit(f"signing in as {email} answered {answer.status_code}")
    for _ in range(warmup):
        answer = client.get(path)
        if answer.status_code != 200:
            raise SystemExit(f"{path} answered {answer.status_code}")
    tune(DEFAULT_THRESHOLD)
    client.get(path)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.02)  # waiting for the parent to switch instrumentation on
    for _ in range(requests):
        client.get(path)
    Path(done).touch()
    while Path(go).exists():
        time.sleep(0.02)  # instrumentation is switched off before the child ends


def _wait_for_file(name, process, deadline, failure):
    """Wait until the child makes the file ``name``; stop it and exit with ``failure`` and its
    error output if it ends first or ``deadline`` (``time.monotonic()``) passes."""
    while not os.path.exists(name):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{failure}:\n{process.stderr.read()[-2000:]}")
        time.sleep(0.05)


def count(code, role, path, env, args):
    """Instructions per request of ``path`` served by checkout ``code``."""
    with tempfile.TemporaryDirectory(prefix="medport-cg-") as folder:
        ready, go, done = (os.path.join(folder, name) for name in ("ready", "go", "done"))
        out = os.path.join(folder, "callgrind.out")
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--child", code, role or "", path, str(args.warmup), str(args.requests),
             ready, go, done],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + args.timeout
        _wait_for_file(ready, process, deadline, f"{path}: the child did not get ready")
        subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True)
        Path(go).touch()
        _wait_for_file(done, process, deadline, f"{path}: the child stopped")
        subprocess.run(["callgrind_control", "-i", "off", str(process.pid)], check=True, capture_output=True)
        os.unlink(go)
        process.wait(timeout=args.timeout)
        totals = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True, check=True).stdout
        line = next(row for row in totals.splitlines() if "PROGRAM TOTALS" in row)
        return int(line.split()[0].replace(",", "")) / args.requests


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=10_000, help="history size (the dashboards bench's databases)")
    parser.add_argument("--per-day", type=int, default=1370, help="as dashboards_bench.py")
    parser.add_argument("--live", type=int, default=200, help="as dashboards_bench.py")
    parser.add_argument("--requests", type=int, default=3, help="requests counted per page")
    parser.add_argument("--warmup", type=int, default=5, help="requests per page before counting")
    parser.add_argument("--pages", nargs="*", help="only the pages whose label contains one of these words")
    parser.add_argument("--before", help="a checkout of earlier code, counted on the same databases")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a page's child may take")
    parser.add_argument("--server", default=os.environ.get("MEDPORT_BENCH_POSTGRES_URL",
                                                           "postgresql://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(BENCH))
    import dashboards_bench as dash

    from dashboard.config import normalise_url

    server = normalise_url(args.server.rstrip("/"))
    urls = {silo: f"{server}/{name}" for silo, name in dash.database_names(args.trips).items()}
    env = dict(os.environ)
    env.update({f"MEDPORT_{silo.upper()}_DATABASE_URL": url for silo, url in urls.items()})
    env.update({"SECRET_KEY": "bench-instructions-secret-key-0123456789", "MEDPORT_LOG_LEVEL": "warning"})
    dash.prepare(server, args.trips, args, env)
    hospital_code, agency_code = dash.choose_organisations(urls)
    dash.ensure_users(urls, env, hospital_code, agency_code)
    trip, ems_trip = _trips(dash, urls, hospital_code, agency_code)
    roles = {"hospital": f"{dash.NURSE}:{dash.PASSWORD}", "ems": f"{dash.DISPATCHER}:{dash.PASSWORD}",
             "center": f"{dash.COORDINATOR}:{dash.DEMO_PASSWORD}", None: ""}
    pages = [(label, role, CEILING_PATH if label == dash.CEILING else path)
             for label, role, path in dash.page_list(trip, ems_trip)]
    if args.pages:
        pages = [page for page in pages if page[0] == dash.CEILING
                 or any(word in page[0] for word in args.pages)]
    codes = [("after", str(ROOT))] + ([("before", str(Path(args.before).resolve()))] if args.before else [])
    figures = {}
    for label, role, path in pages:
        for name, code in reversed(codes):
            # Each checkout signs in to a hash scheme it knows (earlier code may predate Argon2id;
            # this code upgrades the hash at sign-in).
            if args.before:
                dash._reset_to_werkzeug_hashes(urls)
            figures[label, name] = count(code, roles[role], path, env, args)
            print(f"  {label} ({name}): {figures[label, name] / 1e6:.2f} M", file=sys.stderr)
    report(pages, codes, figures, dash.CEILING, args)


def _trips(dash, urls, hospital_code, agency_code):
    """The request pages' trips, as the dashboards bench chooses them."""
    chosen = {}
    for label, _role, path in dash.pages(urls, hospital_code, agency_code):
        if label == "hospital request page":
            chosen["trip"] = path.rsplit("/", 1)[1]
        if label == "EMS request page":
            chosen["ems"] = path.rsplit("/", 1)[1]
    return chosen["trip"], chosen["ems"]


def report(pages, codes, figures, ceiling, args):
    print(f"\nInstructions per request (callgrind, in-process, {args.trips:,} trips, "
          f"{args.requests} requests counted after {args.warmup}):\n")
    names = [name for name, _code in codes]
    head = ["page"] + [f"{name}: M instructions, × bare" for name in names]
    if len(names) == 2:
        head.append("after / before")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, _role, _path in pages:
        cells = [label]
        for name in names:
            value, base = figures[label, name], figures[ceiling, name]
            cells.append(f"{value / 1e6:.2f} ({value / base:.1f}×)")
        if len(names) == 2:
            cells.append(f"{figures[label, 'after'] / figures[label, 'before']:.2f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        code_dir, role_arg, page_path, warm, counted, ready_file, go_file, done_file = sys.argv[2:10]
        child(code_dir, role_arg, page_path, int(warm), int(counted), ready_file, go_file, done_file)
    else:
        main()
