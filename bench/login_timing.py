"""Sign-in time for a known and an unknown email: an unknown one must not answer faster.

    python bench/login_timing.py [--runs 15]

Builds three SQLite silos in a temporary folder with the migrations, creates one
account and times ``POST /login`` (in-process test client) with a wrong password for
that account and for an email no account has, each from its own address so the
throttle stays out of the way.  Prints the median and spread of each and their
ratio: both check one password hash (a dummy one of the same scheme and cost for the
unknown email), so the ratio is near 1.  Figures are printed, never asserted; the
suite counts the hash checks instead (tests/test_login_throttling.py).
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade  # noqa: E402

from dashboard import create_app  # noqa: E402
from dashboard.extensions import db  # noqa: E402
from dashboard.services import accounts  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="sign-ins timed per case")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="medport-login-bench-")
    urls = {silo: f"sqlite:///{folder}/medport_{silo}.sqlite3" for silo in ("center", "hospital", "ems")}
    app = create_app({
        "TESTING": True, "SECRET_KEY": "bench", "WTF_CSRF_ENABLED": False,
        "MEDPORT_INPROCESS_RELAY": False, "MEDPORT_SIGNAL_BACKEND": "local",
        "SQLALCHEMY_DATABASE_URI": urls["center"],
        "SQLALCHEMY_BINDS": {"hospital": {"url": urls["hospital"]}, "ems": {"url": urls["ems"]}},
    })
    with app.app_context():
        upgrade()
        accounts.create_user("known@bench.test", "Known User", "coordinator", "a-long-password-1")
        db.session.commit()
    client = app.test_client()
    timings = {"known": [], "unknown": []}
    for run in range(args.runs):
        for case, email in (("known", "known@bench.test"), ("unknown", "nobody@bench.test")):
            client.environ_base["REMOTE_ADDR"] = f"10.{run // 250}.{run % 250}.{1 if case == 'known' else 2}"
            started = time.perf_counter()
            response = client.post("/login", data={"email": email, "password": "wrong-password-1"})
            timings[case].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 401, response.status_code
    for case, values in timings.items():
        print(f"{case:8s} median {statistics.median(values):7.1f} ms   "
              f"min {min(values):7.1f}   max {max(values):7.1f}   ({len(values)} sign-ins)")
    ratio = statistics.median(timings["unknown"]) / statistics.median(timings["known"])
    print(f"unknown / known median: {ratio:.2f}")


if __name__ == "__main__":
    main()
