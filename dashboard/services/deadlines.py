"""The deadline timer (run by the relay, never by page views) and the auto-award policies."""
import logging

import sqlalchemy as sa

from ..events.outbox import SYSTEM
from ..extensions import db
from ..models.base import utcnow
from ..models.ems import EmsAgency, TransportBid, Unit
from ..models.hospital import TransportRequest, TransportRequestEvent
from ..models.vocabulary import LEVEL_RANK, dispatch_condition
from . import configuration, series_generation, trip_posting, trip_timers, trips

#: The actor of an automatic award (the timer's): no account, shown as "MedPort auto-award".
AUTO_AWARD = SYSTEM._replace(label="MedPort auto-award")

log = logging.getLogger("medport.relay")
SWEEP_BATCH = 200


def _not_yet_swept(now):
    """Open trips past their deadline whose state there the timer has not written yet: no
    ``unfilled`` entry since the deadline while no bid is live, no ``awaiting_award`` entry
    since the deadline while one is (an awaiting trip whose bids are withdrawn comes back)."""
    T, E = TransportRequest, TransportRequestEvent

    def recorded(action):
        return sa.exists().where(E.trip_id == T.id, E.action == action, E.at >= T.bid_deadline)

    return sa.and_(
        dispatch_condition(T, ("awaiting_award", "unfilled"), now),
        ~sa.or_(sa.and_(T.bid_count == 0, recorded("unfilled")),
                sa.and_(T.bid_count > 0, recorded("awaiting_award"))),
    )


def sweep(now=None):
    """Act on open trips whose bidding deadline has passed, once per deadline and state, by
    :func:`dashboard.models.vocabulary.dispatch_state`: auto-award per the policy; else tell the
    hospital and the center that one holding live bids awaits an award, or flag one with none
    unfilled.  Create recurring series' occurrences now within reach (``series_generation.generate``).
    Announce the requests booked ahead whose bidding has opened, and those whose
    invitation has widened to every agency.  Returns how many were handled.  An upcoming
    request is never due here: its deadline counts from its opening."""
    now = now or utcnow()
    created = series_generation.generate(now)  # recurring series: the occurrences now within reach
    policy = configuration.get("auto_award_policy")
    db.session.commit()  # end the center read before writing the hospital silo
    due = list(db.session.scalars(
        sa.select(TransportRequest).where(_not_yet_swept(now))
        .order_by(TransportRequest.bid_deadline).limit(SWEEP_BATCH)
    ))
    handled = 0
    for trip in due:
        try:
            if policy == "preferred_best_eta" and _award_best_preferred(trip):
                pass
            elif trip.bid_count:
                trip_timers.mark_awaiting_award(trip, now)
            else:
                trip_timers.mark_unfilled(trip, now)
            db.session.commit()
            handled += 1
        except trips.TransitionRefused:
            db.session.rollback()  # someone acted on it at the same moment: theirs stands
    handled += created + trip_timers.announce_openings(now)
    handled += trip_timers.announce_widened_invites(now)
    db.session.commit()
    return handled


def _live_bids(trip_id):
    return list(db.session.scalars(
        sa.select(TransportBid).where(TransportBid.trip_id == trip_id, TransportBid.status == "live")
        .order_by(TransportBid.eta_minutes, TransportBid.created_at)
    ))


def bid_for_award(bid):
    """The mapping :func:`trips.award` takes, read from the EMS silo alone (the agency's name
    from its operating profile, which the registry keeps in step), so an award needs no center."""
    unit = db.session.get(Unit, bid.unit_id)
    name = db.session.scalar(sa.select(EmsAgency.name).where(EmsAgency.agency_id == bid.agency_id))
    return {"id": bid.id, "trip_id": bid.trip_id, "agency_id": bid.agency_id, "agency_name": name,
            "unit_id": bid.unit_id, "unit_label": unit.label if unit else "?",
            "eta_minutes": bid.eta_minutes, "unit_level": unit.level if unit else None}


def _award_best_preferred(trip):
    """Award the fastest live bid of a preferred agency whose unit is still free; False if none."""
    preferred = trip_posting.preferred_agency_ids(trip.hospital_id)
    for bid in _live_bids(trip.id):
        if bid.agency_id in preferred:
            try:
                trips.award(trip, bid_for_award(bid), source="auto", actor=AUTO_AWARD)
            except trips.UnitBooked:
                continue  # assigned elsewhere since it bid (nothing was written): the next one
            return True
    return False


def maybe_auto_award_first(trip, bid_payload):
    """Policy "first qualifying bid": the first live bid of a sufficient level wins at once."""
    if configuration.get("auto_award_policy") != "first_qualifying" or trip.status != "open":
        return False
    bid = db.session.get(TransportBid, bid_payload["bid_id"])
    if bid is None or bid.status != "live":
        return False
    offer = bid_for_award(bid)
    if offer["unit_level"] is None or LEVEL_RANK[offer["unit_level"]] < LEVEL_RANK[trip.level_of_care]:
        return False
    try:
        trips.award(trip, offer, source="auto", actor=AUTO_AWARD)
    except trips.TransitionRefused:
        return False
    return True
