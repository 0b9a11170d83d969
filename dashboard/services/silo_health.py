"""The center's silo health page: each silo's state and latency, its outbox backlog and the
events parked there (reads only; a silo that cannot be read shows as down)."""
import sqlalchemy as sa

from ..config import SILOS
from ..extensions import db
from ..models.outbox import OUTBOX_BY_SILO
from ..models.vocabulary import SILO_LABELS
from . import silos

PARKED_LIST_LIMIT = 50


def silo_health():
    """Each silo's state and latency, its pending/parked outbox counts, and the parked events.

    Returns ``{"silos": [entry per silo], "parked": [(silo, event row)], "silo_labels": ...}``.  A silo
    that cannot be read shows as down with what could not be read; the others
    are still reported.
    """
    report = silos.check_all(full=False)
    silos.record_report(report)
    result, parked = [], []
    for silo in SILOS:
        entry = {"silo": silo, "label": SILO_LABELS[silo], "up": report[silo]["up"], "latency_ms": report[silo]["latency_ms"],
                 "error": next((c.get("error") for c in report[silo]["checks"].values()
                                if not c["ok"]), None),
                 "pending": None, "parked": None}
        if entry["up"]:
            model = OUTBOX_BY_SILO[silo]
            try:
                entry.update(silos.outbox_backlog(silo))
                parked.extend((silo, row) for row in db.session.execute(
                    sa.select(model.event_id, model.type, model.entity_type, model.entity_id,
                              model.attempts, model.last_error, model.created_at)
                    .where(model.status == "parked").order_by(model.id.desc()).limit(PARKED_LIST_LIMIT)
                ))
            except Exception as exc:  # the silo went away between the check and the read
                db.session.rollback()
                entry["up"] = False
                entry["error"] = f"Its outbox could not be read: {silos.error_kind(exc)}."
        result.append(entry)
    return {"silos": result, "parked": parked, "silo_labels": SILO_LABELS}
