"""Late trips: one rule for the crew (EMS my trips), the hospital (its requests) and the center
(risk marks on the regional board).

A trip is late when, at ``now``:

* ``not_en_route``: it is awarded (the crew's stop is planned) and its pickup window has
  started: the crew should be on its way;
* ``en_route_due``: it is awarded and its pickup window starts within the crew's lead
  (``MEDPORT_CREW_EN_ROUTE_LEAD_MINUTES``, default 15): the crew should have left already;
* ``not_at_pickup``: it is awarded or en route and its pickup window has ended: the crew
  should be at the pickup by the window's end;
* ``stuck_at_pickup``: the crew has been at the pickup longer than
  ``MEDPORT_CREW_AT_PICKUP_MAX_MINUTES`` (default 30) without loading the patient;
* ``not_at_destination``: the crew has been transporting longer than expected,
  ``MEDPORT_CREW_TRANSPORT_MAX_MINUTES`` (default 90), without reaching the destination;
* ``window_passed``: it is still open (no unit assigned) and its pickup window has ended.

A trip at destination, completed, cancelled, or open before its window ends, is not late.
Times are naive UTC, as the silos store them; a boundary counts as reached at its instant
(``now >= window_start``).  The rule reads the status, the window and the times of the
pickup and loading steps, which the hospital's trip and the EMS silo's copy of it (a crew's
stop) both keep, so it answers the same from either.  :func:`late` applies the three crew
bounds only when given them; :func:`of_trip` and :func:`of_route` (what the pages use) give
the configured ones.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, has_app_context

from ..localtime import to_local

#: The crew's stop statuses, in the trip's words (a planned stop is an awarded trip).
#: A stop handed back or cancelled is no longer the crew's: never late for them.
ROUTE_TO_TRIP_STATUS = {"planned": "awarded", "en_route": "en_route", "at_pickup": "at_pickup",
                        "transporting": "transporting", "at_destination": "at_destination",
                        "completed": "completed"}
#: The crew bounds' settings and their defaults (minutes).
BOUND_SETTINGS = {"en_route_lead": ("MEDPORT_CREW_EN_ROUTE_LEAD_MINUTES", 15),
                  "at_pickup_max": ("MEDPORT_CREW_AT_PICKUP_MAX_MINUTES", 30),
                  "transport_max": ("MEDPORT_CREW_TRANSPORT_MAX_MINUTES", 90)}


@dataclass(frozen=True)
class Late:
    """Why a trip is late: ``code`` (see the module: ``not_en_route``, ``en_route_due``,
    ``not_at_pickup``, ``stuck_at_pickup``, ``not_at_destination``, ``window_passed``),
    ``since`` (naive UTC: the boundary it missed) and ``label``, a short sentence for a badge,
    e.g. "Late: not en route, window started 14:30"."""

    code: str
    since: datetime
    label: str


def late(status, window_start, window_end, now, *, at_pickup_at=None, transporting_at=None,
         en_route_lead=None, at_pickup_max=None, transport_max=None):
    """The :class:`Late` of a trip in ``status`` (the trip's vocabulary: ``open``, ``awarded``,
    ``en_route``...) with pickup window ``window_start``..``window_end`` at ``now`` (all naive
    UTC), or None when it is on time.  See the module's description for the rule.

    The crew bounds (``timedelta``; None leaves that rule out): ``en_route_lead`` before the
    window, ``at_pickup_max`` after ``at_pickup_at``, ``transport_max`` after
    ``transporting_at`` (the times the crew took those steps, naive UTC).
    """
    if window_start is None or window_end is None or now is None:
        return None
    if status in ("awarded", "en_route") and now >= window_end:
        return Late("not_at_pickup", window_end,
                    f"Late: not at pickup, window ended {_clock(window_end)}")
    if status == "awarded" and now >= window_start:
        return Late("not_en_route", window_start,
                    f"Late: not en route, window started {_clock(window_start)}")
    if status == "awarded" and en_route_lead and now >= window_start - en_route_lead:
        return Late("en_route_due", window_start - en_route_lead,
                    f"Late: not en route, pickup window starts {_clock(window_start)}")
    if status == "at_pickup" and at_pickup_max and at_pickup_at and now >= at_pickup_at + at_pickup_max:
        return Late("stuck_at_pickup", at_pickup_at + at_pickup_max,
                    f"Stuck: at pickup since {_clock(at_pickup_at)}")
    if status == "transporting" and transport_max and transporting_at and now >= transporting_at + transport_max:
        return Late("not_at_destination", transporting_at + transport_max,
                    f"Late: not at destination, transporting since {_clock(transporting_at)}")
    if status == "open" and now >= window_end:
        return Late("window_passed", window_end,
                    f"Pickup window passed {_clock(window_end)}, no unit assigned")
    return None


def upcoming(status, window_start, window_end, now, **bounds):
    """The :class:`Late` a trip still in ``status`` will be at the next boundary after ``now``
    (its ``since`` is that instant), or None: what a page shows once that time comes, without
    waiting for an event (the trip's status changing would re-render it).  ``bounds`` are
    :func:`late`'s keyword arguments."""
    if window_start is None or window_end is None or now is None:
        return None
    instants = [window_start, window_end]
    if bounds.get("en_route_lead"):
        instants.append(window_start - bounds["en_route_lead"])
    if bounds.get("at_pickup_max") and bounds.get("at_pickup_at"):
        instants.append(bounds["at_pickup_at"] + bounds["at_pickup_max"])
    if bounds.get("transport_max") and bounds.get("transporting_at"):
        instants.append(bounds["transporting_at"] + bounds["transport_max"])
    for boundary in sorted(t for t in instants if t > now):
        found = late(status, window_start, window_end, boundary, **bounds)
        if found is not None:
            return found
    return None


def crew_bounds(config=None):
    """The crew bounds of :func:`late` (``timedelta`` each) from the ``MEDPORT_CREW_*`` settings
    of ``config`` (default: the current app's, else the defaults); a setting of 0 turns its
    rule off."""
    if config is None:
        config = current_app.config if has_app_context() else {}
    raw = tuple(config.get(key, default) for key, default in BOUND_SETTINGS.values())
    bounds = _BOUNDS.get(raw)
    if bounds is None:  # read once per set of settings: boards ask for every row
        bounds = _BOUNDS[raw] = {
            name: (timedelta(minutes=minutes) if (minutes := int(value)) > 0 else None)
            for name, value in zip(BOUND_SETTINGS, raw, strict=True)}
    return dict(bounds)


#: ``{settings as read: bounds}`` of :func:`crew_bounds` (one or two sets per process).
_BOUNDS = {}


def bounds_of(thing):
    """:func:`late`'s keyword arguments for a hospital trip or a crew's stop: the configured
    bounds and its pickup and loading times (either keeps them as ``at_pickup_at`` and
    ``transporting_at``)."""
    return dict(crew_bounds(), at_pickup_at=getattr(thing, "at_pickup_at", None),
                transporting_at=getattr(thing, "transporting_at", None))


def of_trip(trip, now):
    """:func:`late` of a hospital trip (status, window, step times), with the configured bounds."""
    return late(trip.status, trip.window_start, trip.window_end, now, **bounds_of(trip))


def of_route(route, now):
    """:func:`late` of a crew's stop in the EMS silo (its status read in the trip's words),
    with the configured bounds."""
    return late(ROUTE_TO_TRIP_STATUS.get(route.status), route.window_start, route.window_end, now,
                **bounds_of(route))


def _clock(value):
    """A naive-UTC instant as the region's local ``HH:MM``."""
    return to_local(value).strftime("%H:%M")
