"""Alerts from outbox events: a step of every event's delivery, after the center's record, so an
alert comes from the same transaction as the change it reports (a retried delivery skips it
once written: the center's inbox)."""
import sqlalchemy as sa

from ...extensions import db
from ...models.ems import TransportBid
from ...models.hospital import TransportRequest
from .. import bidding, escalation
from .kinds import NEW_REQUEST
from .recipients import agency_users, center_users, eligible_agencies, hospital_users
from .write import describe, trip_alert, trip_facts


def produce(event):
    """The alerts an outbox event raises, added to the center session (the relay commits them
    with the event's inbox record).  Reads the hospital and EMS silos where the payload does not
    say enough (a bid's request, a request's other bidders); a silo that cannot be read fails
    the step, which the relay retries."""
    p = event.payload or {}
    key = f"{event.event_id}"
    if event.silo == "hospital" and event.entity_type == "trip":
        _from_trip_event(event, p, key)
    elif event.silo == "ems" and event.type == "bid.placed":
        _first_bid(event, p, key)


#: Events after which agencies may bid on a request they could not bid on before: its posting
#: (unless booked ahead or a will-call return waiting for its patient), the opening of one
#: booked ahead, the release of a will-call return, and its reopening.
_NEW_TO_AGENCIES = ("trip.posted", "trip.bidding_opened", "trip.released", "trip.reopened",
                    "trip.handed_back", "trip.invite_widened")
#: Of those, the ones where bidding opens for the first time ("New", not "Open again").
_FIRST_OPENING = ("trip.posted", "trip.bidding_opened", "trip.released")


def _not_biddable_at(p, at):
    """Whether the trip of payload ``p`` took no bids at ``at``: booked ahead and not open yet,
    or a will-call return still waiting for its patient (a read of the hospital silo); it is
    announced to the agencies when bidding opens (``trip.bidding_opened``, ``trip.released``)."""
    trip = db.session.get(TransportRequest, p["trip_id"])
    if trip is None:
        return False
    if trip.will_call and (trip.released_at is None or trip.released_at > at):
        return True
    return trip.bidding_opens_at is not None and trip.bidding_opens_at > at


def _from_trip_event(event, p, key):
    ref, level = p.get("reference") or "", p.get("level_of_care")
    what = describe(p)
    if event.type in _NEW_TO_AGENCIES and level:
        if event.type == "trip.posted" and _not_biddable_at(p, event.created_at):
            return
        only = None
        if event.type != "trip.invite_widened" and bidding.invites_preferred_only(p, event.created_at):
            only = set(p.get("invited_agency_ids") or [])
        excluding = set()
        if event.type == "trip.invite_widened":
            excluding = set(p.get("invited_agency_ids") or [])
        released = (p.get("released") or {}).get("agency_id")
        if released:
            excluding.add(released)
        word = "New" if event.type in _FIRST_OPENING else "Open again:"
        trip_alert(agency_users(eligible_agencies(level, only, excluding)), NEW_REQUEST,
                    f"{key}:{NEW_REQUEST}", f"{word} {what} request {ref}", p)
    elif event.type == "trip.awarded":
        awarded = p.get("awarded_agency_id")
        trip_alert(agency_users([awarded]), "ems.bid_awarded", f"{key}:ems.bid_awarded",
                    f"Awarded to us: {ref} ({what})", p)
        trip_alert(agency_users(_other_bidders(p["trip_id"], awarded)), "ems.bid_not_awarded",
                    f"{key}:ems.bid_not_awarded", f"Not awarded to us: {ref}", p)
        if p.get("source") == "center":
            trip_alert(hospital_users(p.get("hospital_id")), "hospital.center_award",
                        f"{key}:hospital.center_award", f"The transport center awarded {ref}", p)
    elif event.type in ("trip.changed", "trip.cancelled"):
        if p.get("awarded_agency_id") and (event.type == "trip.cancelled" or p.get("status") != "open"):
            verb = "Cancelled" if event.type == "trip.cancelled" else "Changed"
            trip_alert(agency_users([p["awarded_agency_id"]]), "ems.trip_changed",
                        f"{key}:ems.trip_changed", f"{verb}: {ref}, which we serve", p)
    elif event.type == "trip.status_changed" and not p.get("undone_step"):
        kind = {"en_route": "hospital.crew_en_route", "at_pickup": "hospital.crew_at_pickup"}.get(
            p.get("status"))
        if kind:
            words = "Crew en route" if p["status"] == "en_route" else "Crew at pickup"
            trip_alert(hospital_users(p.get("hospital_id")), kind, f"{key}:{kind}", f"{words}: {ref}", p)
    elif event.type == "trip.unfilled":
        trip_alert(hospital_users(p.get("hospital_id")), "hospital.unfilled", f"{key}:hospital.unfilled",
                    f"Unfilled: {ref} ({what}), no agency bid", p)
        trip_alert(center_users(), "center.unfilled", f"{key}:center.unfilled",
                    f"Unfilled: {ref} ({what})", p)

        escalation.start("unfilled", p, event.created_at)


def _other_bidders(trip_id, awarded_agency_id):
    return set(db.session.scalars(sa.select(TransportBid.agency_id).distinct().where(
        TransportBid.trip_id == trip_id, TransportBid.agency_id != (awarded_agency_id or 0))))


def _first_bid(event, p, key):
    earlier = db.session.scalar(sa.select(TransportBid.id).where(
        TransportBid.trip_id == p["trip_id"], TransportBid.id < p["bid_id"]).limit(1))
    if earlier is not None:
        return
    trip = db.session.get(TransportRequest, p["trip_id"])
    if trip is None:
        return
    facts = trip_facts(trip)
    eta = f", ETA {p['eta_minutes']} min" if p.get("eta_minutes") is not None else ""
    trip_alert(hospital_users(trip.hospital_id), "hospital.first_bid", f"{key}:hospital.first_bid",
                f"First bid on {trip.reference}{eta}", facts)
