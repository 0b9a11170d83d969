"""What each event sets off in the other silos, and the signal it sends to live pages.

Each handler runs in one target silo inside the relay's transaction for it, so
it must only write that silo.  Handlers are idempotent in effect: the relay
also records them in the target's inbox, and they check state before changing it.
"""
import logging
from datetime import datetime

import sqlalchemy as sa

from ..extensions import db
from ..models.base import utcnow
from ..models.center import Agency, LiveSignal, User
from ..models.ems import EmsAgency, EmsRoute, TransportBid, Unit
from ..models.hospital import HospitalUser, TransportRequest
from ..models.vocabulary import LEVEL_RANK
from ..services import audit, configuration, deadlines, registry, session_trust, trips
from ..services.alerts.produce import produce as produce_alerts
from ..services.bidding import ACTIVE_ROUTE_STATUSES, bid_payload, invites_preferred_only
from ..services.route_steps import refresh_unit_status
from .outbox import SYSTEM, Actor, emit

log = logging.getLogger("medport.relay")

#: (source silo, event type) -> [(handler name, target silo, function)]
_REGISTRY = {}


def on(silo, *types, target, name=None):
    def register(fn):
        for type_ in types:
            _REGISTRY.setdefault((silo, type_), []).append((name or fn.__name__, target, fn))
        return fn

    return register


#: The steps writing the center's record of an event, after its follow-ups: its audit entry and
#: live signal, then the alerts it raises.  Once the follow-ups are applied, only these remain.
CENTER_STEPS = ("record", "alerts")


def handlers_for(silo, type_):
    """Follow-ups first, then the center's record (audit + live signal) and the alerts, last."""
    return _REGISTRY.get((silo, type_), []) + [("record", "center", record), ("alerts", "center", alerts)]


def alerts(event):
    """The alerts the event raises for the people it concerns (``services.alerts.produce``)."""
    produce_alerts(event)


# --- hospital events --------------------------------------------------------------------

def _trip(trip_id):
    return db.session.get(TransportRequest, trip_id)


@on("hospital", "trip.awarded", target="ems")
def ems_apply_award(event):
    """Winning bid accepted, the others declined, the unit assigned and added to its route.

    An award already superseded at the hospital (cancelled or handed back since,
    its follow-up delivered first after a retry) changes nothing.
    """
    p = event.payload
    trip_id, now = p["trip_id"], utcnow()
    trip = _trip(trip_id)  # a read of the hospital silo: still this award, and the route's labels
    if trip is None or trip.status in ("open", "cancelled") \
            or trip.awarded_unit_id != p["awarded_unit_id"] \
            or trip.awarded_bid_id != p.get("awarded_bid_id"):
        log.info("relay: award of trip %s superseded; nothing applied", trip_id)
        return
    # An award that crossed the agency's withdrawal stands (the bid was live on the
    # awarding page); the agency hands the trip back if it cannot go.
    awarded_bid = TransportBid.id == p.get("awarded_bid_id")
    for bid in db.session.scalars(
        sa.select(TransportBid).where(TransportBid.trip_id == trip_id, sa.or_(
            TransportBid.status.in_(("live", "accepted")),
            sa.and_(awarded_bid, TransportBid.status == "withdrawn")))
    ).all():
        wanted = "accepted" if bid.id == p.get("awarded_bid_id") else "declined"
        if bid.status != wanted:
            bid.status, bid.decided_at = wanted, now
    unit = db.session.get(Unit, p["awarded_unit_id"])
    if unit is None:
        log.warning("relay: awarded unit %s not found", p["awarded_unit_id"])
        return
    route = db.session.scalar(
        sa.select(EmsRoute).where(EmsRoute.unit_id == unit.id, EmsRoute.trip_id == trip_id))
    if route is None:
        day = trip.window_start.date()
        position = db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.max(EmsRoute.position), 0)).where(
                EmsRoute.unit_id == unit.id, EmsRoute.service_date == day)) + 1
        origin, destination = trip.origin, trip.destination
        db.session.add(EmsRoute(
            unit_id=unit.id, agency_id=unit.agency_id, trip_id=trip_id,
            trip_reference=trip.reference, service_date=day, position=position,
            pickup_label=f"{origin.name}, {trip.pickup_location}",
            dropoff_label=trip.destination_label or "",
            pickup_lat=origin.lat, pickup_lon=origin.lon,
            dropoff_lat=destination.lat if destination else trip.destination_lat,
            dropoff_lon=destination.lon if destination else trip.destination_lon,
            window_start=trip.window_start, window_end=trip.window_end, status="planned",
            **EmsRoute.crew_facts_of(trip)))
    elif route.status in ("handed_back", "cancelled"):
        route.status = "planned"
        copy_crew_facts(route, trip)
    db.session.flush()
    _refresh_unit(unit)


def copy_crew_facts(route, trip):
    """Bring a route's copy of the trip's facts and window up to date with ``trip``."""
    for name, value in EmsRoute.crew_facts_of(trip).items():
        if getattr(route, name) != value:
            setattr(route, name, value)
    if (route.window_start, route.window_end) != (trip.window_start, trip.window_end):
        route.window_start, route.window_end = trip.window_start, trip.window_end


def _align_bid_windows(trip, bids):
    """Give live bids the trip's current pickup window (they keep a copy for overlap checks)."""
    for bid in bids:
        if bid.status == "live" and (bid.window_start, bid.window_end) != (trip.window_start, trip.window_end):
            bid.window_start, bid.window_end = trip.window_start, trip.window_end


@on("hospital", "trip.changed", target="ems")
def ems_follow_trip_window(event):
    """An edited pickup window reaches the trip's live bids, so a unit's later bids are
    checked for overlap against the window the trip has now, not the one it was bid on."""
    trip = _trip(event.payload["trip_id"])  # a read of the hospital silo: its window now
    if trip is None:
        return
    if trip.status != "open":
        # Awarded: the crew's copy of the trip follows the edit.
        for route in db.session.scalars(sa.select(EmsRoute).where(
                EmsRoute.trip_id == trip.id, EmsRoute.status.not_in(("handed_back", "cancelled")))):
            copy_crew_facts(route, trip)
        return
    _align_bid_windows(trip, db.session.scalars(
        sa.select(TransportBid).where(TransportBid.trip_id == trip.id, TransportBid.status == "live")))


@on("hospital", "trip.cancelled", "trip.reopened", target="ems")
def ems_release_trip(event):
    """Bids on the trip closed, its route ended, its unit freed.

    Every route not completed ends, even one whose crew reported the pickup after
    the hospital side last heard from it: the trip is no longer theirs.
    """
    p = event.payload
    trip_id, now = p["trip_id"], utcnow()
    closing = ("live", "accepted") if event.type == "trip.cancelled" else ("accepted",)
    for bid in db.session.scalars(
        sa.select(TransportBid).where(TransportBid.trip_id == trip_id, TransportBid.status.in_(closing))
    ):
        bid.status, bid.decided_at = "closed", now
    for route in db.session.scalars(sa.select(EmsRoute).where(
            EmsRoute.trip_id == trip_id, EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))).all():
        route.status = "cancelled" if event.type == "trip.cancelled" else "handed_back"
        db.session.flush()
        _refresh_unit(route.unit)


def _refresh_unit(unit):
    """The unit's current trip and status kept true (``route_steps.refresh_unit_status``: the trip
    under way stays current whatever is awarded meanwhile); a change is signalled."""
    if refresh_unit_status(unit):
        emit("ems", "unit.status_changed", "unit", unit.public_id,
             {"unit_id": unit.id, "agency_id": unit.agency_id, "status": unit.status},
             actor=SYSTEM)


# --- EMS events -------------------------------------------------------------------------

@on("ems", "bid.placed", target="ems")
def ems_settle_late_bid(event):
    """A bid written after its request stopped taking bids is declined (or closed if cancelled);
    one written while its request's window was being edited gets the new window.

    The award's or cancellation's follow-up may run between a bid's checks and its
    commit and so miss it; the bid's own event catches it here.
    """
    p = event.payload
    bid, trip = db.session.get(TransportBid, p["bid_id"]), _trip(p["trip_id"])
    if bid is None or bid.status != "live" or trip is None:
        return
    profile = db.session.scalar(sa.select(EmsAgency).where(EmsAgency.agency_id == bid.agency_id))
    if profile is not None and not profile.active:
        # Placed while its agency was being deactivated: withdrawn like its other bids.
        _withdraw_live_bids(bid.agency_id, p.get("agency_name"), [bid])
        return
    if trip.status == "open":
        _align_bid_windows(trip, [bid])  # placed while an edit of the window was committing
        return
    if trip.status != "cancelled" and trip.awarded_bid_id == bid.id:
        return  # the award of this very bid: its own follow-up accepts it
    bid.status = "closed" if trip.status == "cancelled" else "declined"
    bid.decided_at = utcnow()


@on("ems", "bid.placed", "bid.changed", "bid.withdrawn", target="hospital")
def hospital_bid_summary(event):
    """The trip's bid count and best ETA, recomputed from the EMS silo (a read).

    Only while the request takes bids: once awarded or cancelled its bids are no longer
    live, and the summary stays as it was when the request closed (what the hospital saw
    when it chose) rather than dropping to none when a late bid event arrives.
    """
    trip_id = event.payload["trip_id"]
    trip = _trip(trip_id)
    if trip is None or trip.status != "open":
        return
    count, best, first = db.session.execute(
        sa.select(sa.func.count(TransportBid.id), sa.func.min(TransportBid.eta_minutes),
                  sa.func.min(TransportBid.created_at))
        .where(TransportBid.trip_id == trip_id, TransportBid.status == "live")
    ).one()
    trip.bid_count, trip.best_eta_minutes = count, best
    if first is not None and (trip.first_bid_at is None or first < trip.first_bid_at):
        trip.first_bid_at = first
    if event.type == "bid.placed":
        deadlines.maybe_auto_award_first(trip, event.payload)


@on("ems", "trip.status_changed", target="hospital")
def hospital_crew_step(event):
    """A crew's step (see ``trips.CREW_STEPS``) applied to the hospital's trip, with its time."""
    p = event.payload
    trip = _trip(p["trip_id"])
    if trip is None:
        return
    try:
        trips.apply_crew_step(trip, p["step"], datetime.fromisoformat(p["at"]), p["agency_id"],
                              p.get("unit_id"), actor=Actor(None, None, p.get("user_label", "")))
    except trips.TransitionRefused as refused:
        log.info("relay: crew step %s on trip %s not applied: %s", p["step"], trip.id, refused.message)


@on("ems", "trip.step_undone", target="hospital")
def hospital_undo_crew_step(event):
    """A crew's last step undone in the EMS silo: the hospital's trip goes back one status."""
    p = event.payload
    trip = _trip(p["trip_id"])
    if trip is None:
        return
    if not trips.undo_crew_step(trip, p["step"], datetime.fromisoformat(p["at"]), p["agency_id"],
                                p.get("unit_id"), actor=Actor(None, None, p.get("user_label", ""))):
        log.info("relay: undo of %s on trip %s not applied (the trip is not at that step)",
                 p["step"], trip.id)


@on("ems", "trip.handed_back", target="hospital")
def hospital_hand_back(event):
    p = event.payload
    trip = _trip(p["trip_id"])
    if trip is None or trip.status not in trips.HAND_BACK_FROM or trip.awarded_agency_id != p["agency_id"] \
            or trip.awarded_unit_id != p.get("unit_id", trip.awarded_unit_id):
        return  # handed back by a unit the trip has since been taken from: nothing to re-open
    trips.reopen(trip, "Handed back: " + p.get("reason", ""),
                 configuration.get("bid_deadline_default_minutes"), event_type="trip.handed_back",
                 action="handed_back", actor=Actor(None, None, p.get("user_label", "")))


# --- center events ----------------------------------------------------------------------

@on("center", "user.created", "user.updated", target="hospital")
def hospital_staff_profile(event):
    """A hospital user gets (or keeps in step) a staff profile in the hospital silo."""
    p = event.payload
    profile = db.session.scalar(sa.select(HospitalUser).where(HospitalUser.user_id == p["user_id"]))
    if p["role"] != "hospital":
        if profile is not None:
            profile.active = False
        return
    if profile is None:
        profile = HospitalUser(user_id=p["user_id"], hospital_id=p["hospital_id"])
        db.session.add(profile)
    profile.hospital_id = p["hospital_id"]
    profile.display_name = p["display_name"]
    profile.active = bool(p["active"])


# --- the record: audit entry and live signal, in the center silo ------------------------

SIGNAL_NAMES = {"trip": "trip-updated", "series": "trip-updated", "bid": "bid-updated", "unit": "unit-updated",
                "user": "account-updated", "config": "config-updated", "registry": "registry-updated",
                "preference": "preference-updated"}


def record(event):
    """Audit entry for the event and the live signal for the pages that show it."""
    p = event.payload or {}
    email = None
    if event.actor_user_id:
        email = db.session.scalar(sa.select(User.email).where(User.id == event.actor_user_id))
    if event.silo != "center":
        # Center actions are audited where they happen, with their before/after values.
        audit.record(event.type, user_id=event.actor_user_id, user_email=email, ip=event.actor_ip,
                     entity_type=event.entity_type, entity_id=event.entity_id, after=p,
                     silo=event.silo, event_id=event.event_id, created_at=event.created_at)
    if event.entity_type == "trip" and event.silo == "ems":
        # Crew progress: the hospital's own trip event (once applied) refreshes the pages.
        return
    signal = LiveSignal(name=SIGNAL_NAMES.get(event.entity_type, "trip-updated"),
                        entity_id=str(p.get("public_id") or event.entity_id),
                        hospital_id=p.get("hospital_id"), agency_ids=_agency_scope(event, p),
                        unit_ids=_unit_scope(event, p))
    if event.entity_type == "user":
        signal.user_id = p.get("user_id")
        signal.agency_ids = ""
    db.session.add(signal)
    # An organisation deactivated: each of its users' live streams hears that their account
    # changed, re-checks the session (its epoch was bumped) and ends at once.
    for user_id in p.get("signed_out_user_ids") or ():
        db.session.add(LiveSignal(name="account-updated", entity_id=str(user_id), user_id=user_id,
                                  agency_ids=""))


def _agency_scope(event, p):
    """Which agencies may hear of this: ",1,4," or "*" (every agency) or "" (none)."""
    if event.entity_type in ("config", "registry"):
        return "*"
    ids = set()
    if event.entity_type in ("bid", "unit") and p.get("agency_id"):
        ids.add(p["agency_id"])
    if event.entity_type == "series":
        # Only new occurrences concern the agencies (their upcoming lists); the series itself
        # is the hospital's.
        if event.type != "series.generated":
            return ""
        level = p.get("level_of_care")
        if p.get("invite_mode") == "preferred":
            ids.update(p.get("invited_agency_ids") or [])
        elif level:
            for agency in db.session.scalars(sa.select(Agency).where(Agency.active.is_(True))):
                if any(LEVEL_RANK[lv] >= LEVEL_RANK[level] for lv in agency.level_list):
                    ids.add(agency.id)
        return "," + ",".join(str(i) for i in sorted(ids)) + "," if ids else ""
    if event.entity_type == "trip":
        released = (p.get("released") or {}).get("agency_id")
        ids.update(i for i in (p.get("awarded_agency_id"), released) if i)
        level = p.get("level_of_care")
        if event.type != "trip.invite_widened" and invites_preferred_only(p, event.created_at):
            ids.update(p.get("invited_agency_ids") or [])
        elif level:
            for agency in db.session.scalars(sa.select(Agency).where(Agency.active.is_(True))):
                if any(LEVEL_RANK[lv] >= LEVEL_RANK[level] for lv in agency.level_list):
                    ids.add(agency.id)
    return "," + ",".join(str(i) for i in sorted(ids)) + "," if ids else ""


def _unit_scope(event, p):
    """Which units' crews may hear of this: ",12,40," (EMS silo unit ids) or "" (none): a trip's
    awarded unit and the unit it was taken from, or the unit a unit or bid event names."""
    ids = set()
    if event.entity_type == "trip":
        ids.update(i for i in (p.get("awarded_unit_id"), (p.get("released") or {}).get("unit_id"),
                               p.get("unit_id")) if i)
    elif event.entity_type == "unit" and p.get("unit_id"):
        ids.add(p["unit_id"])
    return "," + ",".join(str(i) for i in sorted(ids)) + "," if ids else ""


# --- sessions: a sign-out made while the center was unreachable ---------------------------

@on("hospital", "session.ended", target="center")
@on("ems", "session.ended", target="center")
def center_end_session(event):
    """Revoke, in the center, the session signed out while the center was unreachable."""
    session_trust.end_session_by_digest(event.payload["user_id"], event.payload["session_digest"])


# --- registry: the center's registry kept in step in the hospital and EMS silos ---------

@on("center", "registry.changed", target="hospital")
def hospital_registry_facility(event):
    """A facility created, changed or deactivated at the center, applied to the hospital silo."""
    facility = event.payload.get("facility")
    if facility:
        registry.apply_facility(facility)


@on("center", "registry.changed", target="ems")
def ems_registry_agency(event):
    """An agency created or changed at the center: its EMS operating profile follows."""
    agency = event.payload.get("agency")
    if agency:
        registry.apply_agency(agency)
        if not agency["active"]:
            _withdraw_live_bids(agency["agency_id"], agency.get("name"))


def _withdraw_live_bids(agency_id, agency_name, bids=None):
    """A deactivated agency's live bids are withdrawn (each with its ``bid.withdrawn`` event,
    so the hospital's bid count follows).  Bids already accepted stand: the center board
    flags those trips for reassignment."""
    now = utcnow()
    if bids is None:
        bids = db.session.scalars(sa.select(TransportBid).where(
            TransportBid.agency_id == agency_id, TransportBid.status == "live")).all()
    for bid in bids:
        bid.status, bid.decided_at, bid.updated_at = "withdrawn", now, now
        db.session.flush()
        emit("ems", "bid.withdrawn", "bid", bid.public_id, bid_payload(bid, agency_name),
             actor=SYSTEM)
