"""``GET /healthz``: each silo's state and outbox backlog, for load balancers and the on-call engineer."""
from flask import Blueprint, current_app, jsonify

from .extensions import csrf
from .services.silos import check_all, error_kind, outbox_backlog, record_report

bp = Blueprint("health", __name__)


@bp.route("/healthz")
@csrf.exempt
def healthz():
    """200 when all three silos answer, 503 naming those that do not.  No login, no secrets.

    Body: ``{"status": "ok" | "degraded", "down": [silo, ...], "silos": {silo: {"status":
    "up" | "down", "latency_ms": float | null, "outbox": {"pending": int, "parked": int} |
    null}}}``.  A silo that is down, or whose outbox cannot be read within its timeouts, is
    down with its backlog unknown (``null``).  Answers without the center too: nothing here
    needs a silo to be up.
    """
    report = check_all(full=False)
    backlog = {}
    for silo, result in report.items():
        backlog[silo] = None
        if not result["up"]:
            continue
        try:
            backlog[silo] = outbox_backlog(silo)
        except Exception as exc:  # the silo stalled or went away after its check
            current_app.logger.warning("healthz: the %s outbox could not be read: %s", silo, error_kind(exc))
            result["up"] = False
    record_report(report)
    down = [silo for silo, result in report.items() if not result["up"]]
    body = {
        "status": "ok" if not down else "degraded",
        "down": down,
        "silos": {
            silo: {"status": "up" if result["up"] else "down", "latency_ms": result["latency_ms"],
                   "outbox": backlog[silo]}
            for silo, result in report.items()
        },
    }
    return jsonify(body), (503 if down else 200)
