"""``GET /healthz``: each silo's state, for load balancers and the on-call engineer."""
from flask import Blueprint, jsonify

from .extensions import csrf
from .services.silos import check_all, record_report

bp = Blueprint("health", __name__)


@bp.route("/healthz")
@csrf.exempt
def healthz():
    """200 when all three silos answer, 503 naming those that do not.  No login, no secrets."""
    report = check_all(full=False)
    record_report(report)
    down = [silo for silo, result in report.items() if not result["up"]]
    body = {
        "status": "ok" if not down else "degraded",
        "down": down,
        "silos": {
            silo: {"status": "up" if result["up"] else "down", "latency_ms": result["latency_ms"]}
            for silo, result in report.items()
        },
    }
    return jsonify(body), (503 if down else 200)
