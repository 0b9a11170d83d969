"""Booking ahead: how far ahead a pickup may be booked and when bidding on it opens.

A request may be posted for a pickup up to ``booking_horizon_days`` ahead (configuration,
default 90).  Bidding opens a lead time before the earliest pickup, per level of care
(``bidding_lead_hours_bls`` / ``_als`` / ``_cct``, default 48 h, 48 h and 72 h: a
critical-care crew is the scarcest, so its agencies hear first), not at posting.  Until then
the request is *upcoming* (:func:`dashboard.models.vocabulary.dispatch_state`): agencies see it
in their upcoming list and may not bid, the hospital edits it freely, and it is neither at
risk nor unfilled.  Its bidding deadline counts from the opening: a request posted with
"bidding closes after 30 minutes" closes 30 minutes after its bidding opens.  A pickup
within the lead time opens at posting, as every request did before.

The rule is the clock's: bidding is open once ``bidding_opens_at`` has passed.  The relay's
deadline timer (:func:`dashboard.services.trip_timers.announce_openings`) then tells the boards,
once per request, through the outbox.
"""
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models.base import utcnow
from ..models.hospital import TransportRequest
from ..models.vocabulary import servable_levels
from . import configuration
from .statements import NOW, Bound, built_once


def horizon(settings=None):
    """How far ahead a pickup may be booked (a timedelta), from ``booking_horizon_days``."""
    settings = settings or configuration.get_all()
    return timedelta(days=settings["booking_horizon_days"])


def lead_time(level_of_care, settings=None):
    """How long before the earliest pickup bidding opens for ``level_of_care`` (a timedelta).

    Raises KeyError for a level that is not BLS, ALS or CCT."""
    settings = settings or configuration.get_all()
    return timedelta(hours=settings[configuration.LEAD_SETTINGS[level_of_care]])


def opening_for(level_of_care, window_start, now=None, settings=None):
    """When bidding opens on a request of ``level_of_care`` picked up from ``window_start``
    (naive UTC): the lead time before it, or None when that is not after ``now`` (bidding
    opens at posting)."""
    now = now or utcnow()
    opens = window_start - lead_time(level_of_care, settings)
    return opens if opens > now else None


def plan(fields, now=None, settings=None):
    """The booking-ahead values of a new request: ``{"bidding_opens_at": ..., "bid_deadline": ...}``.

    ``fields`` holds ``level_of_care``, ``window_start``, ``window_end`` and ``bid_deadline``
    (computed from posting time, ``now``).  A request booked ahead opens a lead time before
    pickup and keeps its bidding time from then.  Returns ``(values, problem)``: ``problem``
    is a message for the user (nothing to store) when the pickup lies past the horizon or,
    booked ahead, bidding would close after the latest pickup (the form checks the same).
    """
    now = now or utcnow()
    if fields.get("window_start") is None or fields.get("level_of_care") not in configuration.LEAD_SETTINGS:
        return {}, None  # incomplete: the model or another rule refuses it
    settings = settings or configuration.get_all()
    if fields["window_start"] > now + horizon(settings):
        return None, (f"The earliest pickup can be at most {settings['booking_horizon_days']} days "
                      "ahead.")
    if fields.get("will_call"):  # waits for the patient, then opens at once (trip_readiness.release)
        return {"bidding_opens_at": None}, None
    opens = opening_for(fields["level_of_care"], fields["window_start"], now, settings)
    deadline = fields.get("bid_deadline")
    if opens is not None and deadline is not None:
        deadline = opens + (deadline - now)
    if opens is not None and deadline is not None and deadline > fields["window_end"]:
        return None, "Bidding would close after the latest pickup time; shorten it or widen the window."
    return {"bidding_opens_at": opens, "bid_deadline": deadline}, None


def replan(trip, window_start, now=None, settings=None):
    """The booking-ahead values of an upcoming request whose earliest pickup moves to
    ``window_start``: its opening follows the pickup (at once when now within the lead time)
    and its bidding time is kept.  ``{}`` for a request already taking bids: its opening
    stands."""
    now = now or utcnow()
    if trip.bidding_opens_at is None or trip.bidding_opens_at <= now:
        return {}
    duration = trip.bid_deadline - trip.bidding_opens_at
    opens = opening_for(trip.level_of_care, window_start, now, settings) or now
    return {"bidding_opens_at": opens, "bid_deadline": opens + duration}


def _levels_asked(agency_levels, level):
    """The levels the agency serves (``level`` alone when given), a list; empty: nothing to read."""
    levels = servable_levels(agency_levels)
    return [lv for lv in levels if lv == level] if level else levels


def _upcoming_where(levels, pattern, now):
    """The WHERE of an agency's upcoming requests (:func:`upcoming_requests`): ``levels`` it
    serves, its invitation ``pattern`` (``",<agency id>,"``), ``now``; each a value or a bound
    parameter."""
    T = TransportRequest
    return (
        # Not announced yet (an upcoming request never is): the partial opening index serves it.
        T.opening_announced_at.is_(None), T.bidding_opens_at.is_not(None),
        T.status == "open", T.bidding_opens_at > now, T.level_of_care.in_(levels), T.will_call.is_(False),
        sa.or_(T.invite_mode.in_(("all", "preferred_then_all")),
               T.invited_agency_ids.contains(pattern)))


def _upcoming_conditions(agency_id, agency_levels, level, now):
    """The WHERE of the agency's upcoming requests (:func:`upcoming_requests`), or None when
    the agency serves no level asked for (nothing to read)."""
    levels = _levels_asked(agency_levels, level)
    if not levels:
        return None
    return _upcoming_where(levels, f",{agency_id},", now)


def upcoming_requests(agency_id, agency_levels, limit=200, level=None, now=None):
    """Requests booked ahead that this agency will be able to bid on, soonest opening first.

    Open requests whose bidding has not opened, of a level the agency covers, that invite
    every agency (now or after the preferred agencies' head start) or name this one; of
    ``level`` alone when given.  At most ``limit``.
    """
    conditions = _upcoming_conditions(agency_id, agency_levels, level, now or utcnow())
    if conditions is None:
        return []
    T = TransportRequest
    return list(db.session.scalars(
        sa.select(T).where(*conditions)
        .options(selectinload(T.origin), selectinload(T.destination))
        .order_by(T.bidding_opens_at, T.id).limit(limit)))


@built_once
def upcoming_count_column():
    """:func:`upcoming_count` as a scalar subquery, to be read in the statement that counts a
    board's rows; bound: ``levels`` (a list), ``invited_pattern``, ``now`` and
    ``upcoming_cap`` (the rows counted at most)."""
    where = _upcoming_where(sa.bindparam("levels", expanding=True), Bound("invited_pattern", sa.String), NOW)
    found = (sa.select(TransportRequest.id).where(*where)
             .limit(sa.bindparam("upcoming_cap", type_=sa.Integer)).subquery())
    return sa.select(sa.func.count()).select_from(found).scalar_subquery()


@built_once
def _upcoming_count_statement():
    """:func:`upcoming_count`'s statement (:func:`upcoming_count_column` alone)."""
    return sa.select(upcoming_count_column())


def upcoming_count(agency_id, agency_levels, cap, level=None, now=None):
    """How many requests :func:`upcoming_requests` would list for the agency, counted up to
    ``cap + 1`` (an int; more than ``cap`` means "cap+" on the board): one statement over at
    most ``cap + 1`` rows of the opening index, however many series lie ahead.  The statement
    is built once (:mod:`.statements`); the EMS board reads the same count with its own
    (``bidding.board_page``)."""
    levels = _levels_asked(agency_levels, level)
    if not levels:
        return 0
    return db.session.scalar(_upcoming_count_statement(), {
        "levels": levels, "invited_pattern": f",{agency_id},", "now": now or utcnow(), "upcoming_cap": cap + 1})


def booking_hint(settings=None):
    """The request form's hint on booking ahead, from the configuration: "Within 90 days;
    booked further ahead than its lead time (BLS 48 h, ALS 48 h, CCT 72 h), bidding opens
    then"."""
    settings = settings or configuration.get_all()
    leads = ", ".join(f"{level} {settings[key]} h" for level, key in configuration.LEAD_SETTINGS.items())
    return (f"Within {settings['booking_horizon_days']} days; booked further ahead than its lead "
            f"time ({leads}), bidding opens that long before pickup")
