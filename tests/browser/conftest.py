"""Browser tests: the app served as in production (gunicorn, gevent) and driven in Chromium.

Debian's Chromium at /usr/bin/chromium, driven by Playwright.  Without it these tests
skip with the reason; ``MEDPORT_REQUIRE_BROWSER=1`` (set by CI) makes that a failure.
The server runs on a free loopback port, once on the embedded default (three SQLite
files, in-process relay) and once on three PostgreSQL databases with two workers,
LISTEN/NOTIFY signals and a separate relay process.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.serving import free_port, wait_until_up
from dashboard.config import normalise_url

from ..conftest import PG_BASE, PG_PREFIX, REQUIRE_PG, postgres_available

pytest.register_assert_rewrite("tests.browser.helpers")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
REQUIRE_BROWSER = os.environ.get("MEDPORT_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("MEDPORT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
AXE = Path(__file__).with_name("vendor") / "axe-core-4.11.1.min.js"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "medport-demo"


def _browser_missing():
    if not os.path.exists(CHROMIUM):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    return None


def _skip_or_fail(reason, required):
    if required:
        pytest.fail(reason)
    pytest.skip(reason)


def _flask(env, *args):
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=300)


def _prepare_postgres():
    ok, reason = postgres_available()
    if not ok:
        _skip_or_fail(reason, REQUIRE_PG)
    engine = sa.create_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")
    urls = {}
    with engine.connect() as conn:
        for silo in ("center", "hospital", "ems"):
            name = f"{PG_PREFIX}_browser_{silo}"
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            urls[silo] = f"{PG_BASE}/{name}"
    engine.dispose()
    return urls


def wait_for(what, check, timeout=30.0):
    """Poll ``check()`` until it is true (bounded): the relay applies a change to another silo
    in its own time, and no page says when it has."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


class LiveServer:
    def __init__(self, backend, url, log_path, database_urls):
        self.backend = backend
        self.url = url
        self.log_path = log_path
        self.database_urls = database_urls

    def query(self, silo, sql, **params):
        """Read the served silo directly (to set a scene or check an outcome)."""
        engine = sa.create_engine(normalise_url(self.database_urls[silo]))
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql), params).all()
        finally:
            engine.dispose()

    def log_text(self):
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def live_server(request, tmp_path_factory):
    """gunicorn (gevent workers) serving a freshly seeded demo region."""
    missing = _browser_missing()
    if missing:
        _skip_or_fail(missing, REQUIRE_BROWSER)
    backend = request.param
    folder = tmp_path_factory.mktemp(f"live-{backend}")
    if backend == "sqlite":
        urls = {silo: f"sqlite:///{folder}/medport_{silo}.sqlite3" for silo in ("center", "hospital", "ems")}
    else:
        urls = _prepare_postgres()
    env = dict(os.environ)
    env.update({
        "MEDPORT_CENTER_DATABASE_URL": urls["center"],
        "MEDPORT_HOSPITAL_DATABASE_URL": urls["hospital"],
        "MEDPORT_EMS_DATABASE_URL": urls["ems"],
        "SECRET_KEY": "browser-test-secret-key-" + backend,
        "MEDPORT_SIGNAL_BACKEND": "local" if backend == "sqlite" else "postgres",
        "MEDPORT_INPROCESS_RELAY": "1" if backend == "sqlite" else "0",
        "MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS": "1000",
    })
    _flask(env, "db", "upgrade")
    _flask(env, "medport", "seed-demo")
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"server-{backend}.log"
    log = open(log_path, "w")
    workers = "1" if backend == "sqlite" else "2"
    command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", workers,
               "-b", f"127.0.0.1:{port}", "--access-logfile", "-", "wsgi:app"]
    if (ROOT / "gunicorn.conf.py").exists():
        command[3:3] = ["-c", "gunicorn.conf.py"]
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)]
    if backend == "postgres":
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "medport", "relay", "--poll", "0.2"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, processes[0])
        yield LiveServer(backend, url, log_path, urls)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


@pytest.fixture(scope="session")
def browser():
    missing = _browser_missing()
    if missing:
        _skip_or_fail(missing, REQUIRE_BROWSER)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


#: Signed-in cookies per (server, email): a later session of the same person starts signed in,
#: as a second browser window would, instead of signing in again.
_signed_in = {}


class Session:
    """One signed-in person in their own browser context.

    ``fresh=True`` signs in anew (a session of its own, e.g. to sign it out).
    """

    def __init__(self, browser, server, email, width=1280, height=800, fresh=False):
        self.server = server
        key = (server.url, email)
        state = None if (fresh or not email) else _signed_in.get(key)
        self.context = browser.new_context(viewport={"width": width, "height": height}, storage_state=state)
        self.context.set_default_timeout(10_000)
        # A page load on two loaded cores (three browsers, gunicorn, PostgreSQL and the relay
        # sharing them) can pass 10 s without anything being wrong; waits on content stay at 10 s.
        self.context.set_default_navigation_timeout(30_000)
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.email = email
        if state is not None:
            self.page.goto(server.url + "/")
            if "/login" not in self.page.url:
                return
        if email:
            self.login(email)
            if not fresh:
                _signed_in[key] = self.context.storage_state()

    def login(self, email, password=PASSWORD):
        page = self.page
        page.goto(self.server.url + "/login")
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)

    def goto(self, path):
        return self.page.goto(self.server.url + path)

    def close(self):
        self.context.close()


@pytest.fixture
def open_session(browser, live_server):
    sessions = []

    def opener(email, **options):
        session = Session(browser, live_server, email, **options)
        sessions.append(session)
        return session

    yield opener
    for session in sessions:
        session.close()


def _axe_source():
    if not hasattr(_axe_source, "text"):
        _axe_source.text = AXE.read_text()
    return _axe_source.text


def run_axe(page):
    """axe-core on the current page: the serious and critical violations."""
    # Evaluated through the DevTools protocol, so the page's strict CSP stays on.
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(_axe_source() + "\n;undefined")
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"],
         "targets": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]


LAYOUT_PROBLEMS_JS = """
() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) {
    problems.push(`horizontal overflow: page is ${doc.scrollWidth}px wide in a ${window.innerWidth}px window`);
  }
  const leaves = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.table-wrap') && el.closest('table')) continue;  // tables scroll in their wrapper
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none' || style.position === 'absolute' && el.classList.contains('skip-link')) continue;
    if (el.checkVisibility && !el.checkVisibility()) continue;  // e.g. inside a folded <details>
    const interactive = el.matches('a, button, input, select, textarea, label, h1, h2, h3, p, li > a, th, td, dt, dd, .badge');
    const textLeaf = el.children.length === 0 && el.textContent.trim().length > 0;
    if (!interactive && !textLeaf) continue;
    // An inline element that wraps has one box per line: its bounding box would cover
    // the start of its first line, so each line's box is compared on its own.
    const boxes = Array.from(el.getClientRects()).filter(r => r.width >= 2 && r.height >= 2);
    if (!boxes.length) continue;
    leaves.push([el, boxes]);
  }
  const overlapping = (as, bs) => as.some(ra => bs.some(rb =>
    Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left) > 3 &&
    Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top) > 3));
  for (let i = 0; i < leaves.length && problems.length < 10; i++) {
    for (let j = i + 1; j < leaves.length; j++) {
      const [a, ra] = leaves[i], [b, rb] = leaves[j];
      if (a.contains(b) || b.contains(a)) continue;
      if (overlapping(ra, rb)) {
        const name = (e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '') + ' "' + e.textContent.trim().slice(0, 30) + '"';
        problems.push(`overlap: ${name(a)} and ${name(b)}`);
      }
    }
  }
  return problems;
}
"""


def layout_problems(page):
    return page.evaluate(LAYOUT_PROBLEMS_JS)


def screenshot(page, name):
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
