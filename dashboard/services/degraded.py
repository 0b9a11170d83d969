"""Pages that show what they can while one silo cannot be reached.

A page reads the silo it is about; what it shows *beside* that (names, the hospital's view
of a trip, bids) it may read through :func:`optional`, which answers a default when that
silo cannot be reached and notes the silo, so the page carries a banner saying which data is
missing (``templates/base.html``).  Pages that cannot do without a silo let the error reach
the 503 handler (``dashboard/errors.py``), which names it.
"""
import logging

from flask import g, has_request_context
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..config import SILOS
from ..extensions import db
from . import silos

log = logging.getLogger("medport.silos")

#: What each silo's banner says is missing while it cannot be reached.
BANNERS = {
    "center": "The center's database cannot be reached: signing in, accounts, the registry, "
              "configuration and the audit log are paused. Your work on requests, bids and trips "
              "goes on and is recorded when it is back.",
    "hospital": "The hospitals' database cannot be reached: requests are shown as the EMS side last "
                "knew them and the patient reference is hidden. Crews' steps are kept and reach the "
                "hospitals when it is back.",
    "ems": "The EMS database cannot be reached: bids, units and routes are not shown until it is back. "
           "Requests can still be posted, edited and cancelled.",
}


def note_unavailable(silo):
    """Record, for this request, that ``silo`` could not be reached."""
    if has_request_context():
        missing = g.setdefault("medport_unavailable", set())
        missing.add(silo)


def unavailable():
    """The silos this request found unreachable, in the order of :data:`~dashboard.config.SILOS`."""
    missing = g.get("medport_unavailable", set()) if has_request_context() else set()
    return [silo for silo in SILOS if silo in missing]


def optional(silo, read, default=None):
    """``read()``, or ``default`` when ``silo`` cannot be reached (refused, lost, timed out).

    The request's session is rolled back on failure, so call this before the request
    writes anything.  Never raises for an outage; other errors propagate.
    """
    try:
        return read()
    except (DBAPIError, PoolTimeout) as exc:
        if not silos.is_unreachable(exc):
            raise
        db.session.rollback()
        note_unavailable(silo)
        log.warning("%s silo unreachable: %s; showing the page without its data", silo, type(exc).__name__)
        return default

