"""EMS dispatchers and crews: open-request board, bids, trips, units, availability, routes, history.

Everything is scoped to the signed-in user's agency: another agency's bids,
units and trips are not found (404).  Views read the hospital silo, write only
the EMS silo through :func:`dashboard.views.act` (one commit per use case); what
the hospital must learn follows through the outbox.

This module holds the blueprint, its vocabulary and the helpers its views share; the views
live in the modules of this package imported at the end (``board``, ``bids``, ``my_trips``,
``units``, ``crew_accounts``), all on the one ``bp`` so endpoint names are ``ems.<view>``.
"""
import re
from datetime import date, timedelta

from flask import Blueprint, abort
from flask_login import current_user

from ..localtime import local_midnight, local_today
from ..services import ems_reads, paging, route_steps, trips
from ..services import units as unit_service
from ..services.geo import distance_km
from ..views import discard, see_other

bp = Blueprint("ems", __name__, url_prefix="/ems")

#: The open-request board's order (a ``services.boards.SORTS`` key): emergent first.
BOARD_DEFAULT_SORT = "urgency"
BOARD_WITHIN = {"": "Any time", "2": "Next 2 hours", "4": "Next 4 hours", "8": "Next 8 hours",
                "today": "Today"}
#: A stop's status -> the crew's next step (``trips.CREW_STEPS`` in order).
NEXT_STEP = dict(zip(route_steps.ROUTE_ORDER[:-1], trips.CREW_STEPS, strict=True))
HISTORY_FILTERS = {"": "All bids", "live": "Live", "accepted": "Won", "declined": "Lost",
                   "withdrawn": "Withdrawn", "ended": "Expired or closed"}
#: Rows per page of the history lists (bid history, completed trips).
PAGE_SIZE = paging.PAGE_SIZE
#: The upcoming requests the board lists (soonest opening first): the rest follow as they open.
UPCOMING_SHOWN = 50
#: How far from today the availability and route pages may look.
MAX_DAYS_AWAY = 3 * 366
CSV_COLUMNS = ["trip_reference", "service_date", "unit", "unit_level", "level_of_care", "urgency",
               "pickup_facility", "destination_facility", "window_start", "window_end",
               "en_route_at", "at_pickup_at", "transporting_at", "completed_at"]
BIDDABLE_UNIT_STATUSES = ("available", "assigned")


# --- helpers ------------------------------------------------------------------------------

def _agency():
    """The signed-in dispatcher's agency (the center registry row); 403 without one."""
    agency = current_user.agency
    if agency is None:
        abort(403)
    return agency


def _page_size():
    """Rows per page of a history list (read when asked, so a test may make pages short)."""
    return PAGE_SIZE


def _page_or_400(read):
    """``read()`` (a keyset page read); a cursor the list did not make aborts 400 with its message."""
    try:
        return read()
    except paging.CursorRefused as refused:
        abort(refused.status, refused.message)




def _already_done(message, endpoint, **values):
    """A form sent again (double click, second tab, Back): nothing new, what the first send
    created is shown (303), and the page says so."""
    discard()
    return see_other(endpoint, message, "info", **values)


def _local_day(raw):
    """The local day asked for (``YYYY-MM-DD``, default today) and its naive-UTC bounds.

    Aborts 400 with a message for a day that is malformed or more than ``MAX_DAYS_AWAY`` days
    from today."""
    today = local_today()
    raw = (raw or "").strip()
    try:
        day = date.fromisoformat(raw) if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw) else None
    except ValueError:
        day = None
    if raw and day is None:
        abort(400, "Enter the day as YYYY-MM-DD, e.g. 2026-11-25.")
    day = day or today
    if abs((day - today).days) > MAX_DAYS_AWAY:
        abort(400, f"Choose a day within {MAX_DAYS_AWAY // 366} years of today.")
    return day, local_midnight(day), local_midnight(day + timedelta(days=1))


def trip_distance(trip):
    """Kilometres from the trip's pickup facility to its destination, or None."""
    return distance_km(*unit_service.trip_coordinates(trip))


# --- loaders ----------------------------------------------------------------------------------

def _trip_or_404(public_id):
    """A request this agency may see: invited at its level, awarded to it, or bid on by it; else 404."""
    agency = _agency()
    trip = ems_reads.visible_trip(public_id, agency.id, agency.level_list)
    if trip is None:
        abort(404)
    return trip


def _bid_or_404(bid_public_id):
    """This agency's bid and its trip; another agency's bid is not found (404)."""
    found = ems_reads.agency_bid(bid_public_id, _agency().id)
    if found is None:
        abort(404)
    return found


def _unit_or_404(public_id):
    """One of this agency's units; another agency's (or none) is not found (404)."""
    unit = unit_service.unit_of_agency(public_id, _agency().id)
    if unit is None:
        abort(404)
    return unit


def _window_or_404(window_id):
    """One of this agency's availability windows; else 404."""
    window = unit_service.window_of_agency(window_id, _agency().id)
    if window is None:
        abort(404)
    return window


# The views, registered on ``bp`` (imported last: they use the helpers above).
from . import bids, board, crew_accounts, my_trips, units  # noqa: E402,F401
