"""The relay timer's alerts, for what no event marks: bidding about to close with no bid, a crew
late, a request at risk, an event parked, a silo down.  Each is keyed by its occasion, so a later
sweep (or a second relay) does not repeat it."""
import logging
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ...config import SILOS
from ...events.hub import hub
from ...extensions import db
from ...models.base import utcnow
from ...models.center import Agency
from ...models.hospital import TransportRequest as T
from ...models.outbox import OUTBOX_BY_SILO
from ...models.vocabulary import dispatch_condition
from .. import configuration, escalation, lateness, oversight, silos
from .recipients import center_users, hospital_users
from .write import notify, page_path, trip_alert, trip_facts

log = logging.getLogger("medport.relay")

#: Risk marks (:func:`dashboard.services.oversight.risk_marks`) that raise a center alert.
RISK_CODES = ("no_bids", "late", "pickup", "awaiting_award", "reassign")
#: Those that also start the escalation ladder (a window about to close is the board's to watch).
LADDER_RISK_CODES = ("no_bids", "late", "awaiting_award", "reassign")
#: How far back the timer looks for late and at-risk requests.
SWEEP_HORIZON = timedelta(hours=12)
SWEEP_LIMIT = 500


def sweep(now=None):
    """The relay timer's alerts (see the module's description); each part on its own, so a silo
    down skips only what needs it.  Returns how many alerts were added."""
    now = now or utcnow()
    added = 0
    for part in (_closing_no_bid, _late_and_at_risk, _parked, _silos_down):
        try:
            added += len(part(now))
            db.session.commit()
        except IntegrityError:
            db.session.rollback()  # another relay wrote the same alerts first
        except Exception as exc:  # a silo down: this part waits for the next sweep
            db.session.rollback()
            log.warning("alerts: %s skipped: %s", part.__name__, type(exc).__name__)
    if added:
        hub.poke()
    return added


def _closing_no_bid(now):
    closing = configuration.get("alert_closing_minutes")
    db.session.commit()
    trips = list(db.session.scalars(sa.select(T).where(
        dispatch_condition(T, "bidding", now), T.bid_count == 0,
        T.bid_deadline <= now + timedelta(minutes=closing)).limit(SWEEP_LIMIT)))
    db.session.commit()
    added = []
    for trip in trips:
        minutes = max(int((trip.bid_deadline - now).total_seconds() // 60), 0)
        added += trip_alert(hospital_users(trip.hospital_id), "hospital.closing_no_bid",
                             f"closing:{trip.public_id}:{trip.bid_deadline.isoformat()}",
                             f"Bidding closes in {minutes} min with no bid: {trip.reference}",
                             trip_facts(trip), now)
    return added


def _late_and_at_risk(now):
    settings = configuration.get_all()
    db.session.commit()
    trips = list(db.session.scalars(sa.select(T).where(
        T.status.in_(("open", "awarded", "en_route", "at_pickup", "transporting")),
        T.window_end >= now - SWEEP_HORIZON,
        T.window_start <= now + SWEEP_HORIZON).order_by(T.window_start).limit(SWEEP_LIMIT)))
    db.session.commit()
    agencies = {a.id: a for a in db.session.scalars(sa.select(Agency))}
    added = []
    center = None
    for trip in trips:
        late = lateness.of_trip(trip, now)  # the one rule, with the crew's configured bounds
        if late is not None and trip.status != "open":  # an open trip has no crew to be late
            added += trip_alert(hospital_users(trip.hospital_id), "hospital.crew_late",
                                 f"late:{trip.public_id}:{late.code}:{late.since.isoformat()}",
                                 f"{late.label}: {trip.reference}", trip_facts(trip), now)
        marks = [(code, label) for code, label in oversight.risk_marks(trip, now, settings, agencies)
                 if code in RISK_CODES]
        for code, label in marks:
            center = center if center is not None else center_users()
            added += trip_alert(center, "center.at_risk", f"risk:{trip.public_id}:{code}",
                                 f"At risk: {trip.reference}: {label}", trip_facts(trip), now)
        ladder = sorted(code for code, _label in marks if code in LADDER_RISK_CODES)
        if ladder:
            escalation.start("at_risk", dict(trip_facts(trip), trip_id=trip.id), now, occasion=",".join(ladder))
    return added


def _parked(now):
    added, center = [], None
    for silo in SILOS:
        model = OUTBOX_BY_SILO[silo]
        try:
            rows = db.session.execute(sa.select(model.event_id, model.type).where(
                model.status == "parked").order_by(model.id).limit(SWEEP_LIMIT)).all()
            db.session.commit()
        except Exception:
            db.session.rollback()
            continue
        for event_id, type_ in rows:
            center = center if center is not None else center_users()
            added += notify(center, "center.parked", f"parked:{silo}:{event_id}",
                            f"Event parked in the {silo} silo: {type_}", reference=silo,
                            link_of=lambda _user: page_path("center.health"), now=now)
    return added


def _silos_down(now):
    added = []
    for silo in ("hospital", "ems"):
        try:
            with silos.engine(silo).connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            continue
        except Exception as exc:
            if not silos.is_unreachable(exc):
                continue
        # Once an hour per silo while it stays down.
        added += notify(center_users(), "center.silo_down", f"silo_down:{silo}:{now:%Y-%m-%dT%H}",
                        f"The {silo} silo cannot be reached", reference=silo,
                        link_of=lambda _user: page_path("center.health"), now=now)
    return added
