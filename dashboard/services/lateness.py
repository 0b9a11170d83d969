"""Late trips: one rule for the crew (EMS my trips), the hospital (its requests) and the center
(risk marks on the regional board).

A trip is late when, at ``now``:

* ``not_en_route``: it is awarded (the crew's stop is planned) and its pickup window has
  started: the crew should be on its way;
* ``not_at_pickup``: it is awarded or en route and its pickup window has ended: the crew
  should be at the pickup by the window's end;
* ``window_passed``: it is still open (no unit assigned) and its pickup window has ended.

A trip at pickup, transporting, completed, cancelled, or open before its window ends, is not
late.  Times are naive UTC, as the silos store them; a window boundary counts as reached at
its instant (``now >= window_start``).  The rule reads only the status and the window, so it
answers the same from the hospital's trip and from the EMS silo's copy of it (a crew's stop).
"""
from dataclasses import dataclass
from datetime import datetime

from ..localtime import to_local

#: The crew's stop statuses, in the trip's words (a planned stop is an awarded trip).
#: A stop handed back or cancelled is no longer the crew's: never late for them.
ROUTE_TO_TRIP_STATUS = {"planned": "awarded", "en_route": "en_route", "at_pickup": "at_pickup",
                        "transporting": "transporting", "completed": "completed"}


@dataclass(frozen=True)
class Late:
    """Why a trip is late: ``code`` (``not_en_route``, ``not_at_pickup``, ``window_passed``),
    ``since`` (naive UTC: the window boundary it missed) and ``label``, a short sentence for a
    badge, e.g. "Late: not en route, window started 14:30"."""

    code: str
    since: datetime
    label: str


def late(status, window_start, window_end, now):
    """The :class:`Late` of a trip in ``status`` (the trip's vocabulary: ``open``, ``awarded``,
    ``en_route``...) with pickup window ``window_start``..``window_end`` at ``now`` (all naive
    UTC), or None when it is on time.  See the module's description for the rule."""
    if window_start is None or window_end is None or now is None:
        return None
    if status in ("awarded", "en_route") and now >= window_end:
        return Late("not_at_pickup", window_end,
                    f"Late: not at pickup, window ended {_clock(window_end)}")
    if status == "awarded" and now >= window_start:
        return Late("not_en_route", window_start,
                    f"Late: not en route, window started {_clock(window_start)}")
    if status == "open" and now >= window_end:
        return Late("window_passed", window_end,
                    f"Pickup window passed {_clock(window_end)}, no unit assigned")
    return None


def upcoming(status, window_start, window_end, now):
    """The :class:`Late` a trip still in ``status`` will be at the next window boundary after
    ``now`` (its ``since`` is that instant), or None: what a page shows once that time comes,
    without waiting for an event (the trip's status changing would re-render it)."""
    if window_start is None or window_end is None or now is None:
        return None
    for boundary in sorted(t for t in (window_start, window_end) if t > now):
        found = late(status, window_start, window_end, boundary)
        if found is not None:
            return found
    return None


def of_trip(trip, now):
    """:func:`late` of a hospital trip (``status``, ``window_start``, ``window_end``)."""
    return late(trip.status, trip.window_start, trip.window_end, now)


def of_route(route, now):
    """:func:`late` of a crew's stop in the EMS silo (its status read in the trip's words)."""
    return late(ROUTE_TO_TRIP_STATUS.get(route.status), route.window_start, route.window_end, now)


def _clock(value):
    """A naive-UTC instant as the region's local ``HH:MM``."""
    return to_local(value).strftime("%H:%M")
