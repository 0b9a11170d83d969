"""The region's local time: what staff type and read, against the naive UTC the silos store.

Local times are naive datetimes in the region's zone (``MEDPORT_TIMEZONE``).  Around a clock
change some do not exist (spring forward: 02:30 on 2026-03-08 in New York) and some happen
twice (fall back: 01:30 on 2026-11-01); a naive datetime's ``fold`` says which of the two is
meant (0 the first, 1 the second), as :mod:`zoneinfo` reads it.  Durations are measured
between UTC instants, so a window across a change is as long as it really is.
"""
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import current_app

from .models.base import utcnow

#: The local times a form accepts: far enough for any schedule or history, and safe to convert.
EARLIEST = datetime(2000, 1, 1)
LATEST = datetime(2100, 12, 31, 23, 59, 59)
RANGE_MESSAGE = "Enter a date from 2000-01-01 to 2100-12-31."


#: ``{zone name: ZoneInfo}``: the zones read so far (one or two per process).
_ZONES = {}


def zone_named(name):
    """The ``ZoneInfo`` of ``name``, read once per name: every time on a page goes through
    here.  Raises ``ZoneInfoNotFoundError`` for a name the zone database lacks."""
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


def local_zone():
    """The region's time zone (``MEDPORT_TIMEZONE`` of the current app)."""
    return zone_named(current_app.config["MEDPORT_TIMEZONE"])


def to_local(value):
    """A stored naive-UTC datetime in the region's time zone (aware; ``fold`` set on a repeated hour)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC).astimezone(local_zone())


def from_local(value):
    """A naive local datetime (from a form) as naive UTC for storage.

    A repeated local time is taken as its ``fold`` says (0: the first, 1: the second).  A time
    the clocks skip is not refused here (check it with :func:`clock_change` first); it is
    read with the offset in force before the change, as :mod:`zoneinfo` does.
    """
    if value is None:
        return None
    return value.replace(tzinfo=local_zone()).astimezone(UTC).replace(tzinfo=None)


def in_range(value):
    """Whether a naive local datetime lies within :data:`EARLIEST`..:data:`LATEST`."""
    return EARLIEST <= value.replace(fold=0) <= LATEST


def clock_change(value):
    """``None`` for an ordinary local time; ``"gap"`` for one the clocks skip (it does not exist);
    ``"fold"`` for one that happens twice.  ``value`` is a naive local datetime."""
    zone = local_zone()
    first, second = value.replace(tzinfo=zone, fold=0), value.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return None
    back = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None, fold=0)
    return "gap" if back != value.replace(fold=0) else "fold"


def _change_around(value):
    """(local time just before the change, local time just after, the instant as naive UTC)."""
    zone = local_zone()
    first, second = value.replace(tzinfo=zone, fold=0), value.replace(tzinfo=zone, fold=1)
    low, high = sorted(t.astimezone(UTC).replace(tzinfo=None) for t in (first, second))
    before = low.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    while high - low > timedelta(minutes=1):  # the offset changes somewhere in (low, high]
        middle = low + (high - low) / 2
        if middle.replace(tzinfo=UTC).astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    instant = high.replace(second=0, microsecond=0)
    after = instant.replace(tzinfo=UTC).astimezone(zone)
    return (instant + before).replace(tzinfo=None), after.replace(tzinfo=None), instant


def _day(value):
    return f"{value:%A} {value.day} {value:%B %Y}"


def gap_message(value):
    """Why a local time the clocks skip is refused, naming the change."""
    skipped_from, skipped_to, _instant = _change_around(value)
    return (f"On {_day(value)} the clocks go forward from {skipped_from:%H:%M} to {skipped_to:%H:%M}, "
            f"so {value:%H:%M} does not exist that day: enter a time before {skipped_from:%H:%M} "
            f"or from {skipped_to:%H:%M}.")


def fold_options(value):
    """The two instants a repeated local time may mean: ``[(fold, label)]``, first then second,
    e.g. ``(0, "the first 01:30 (EDT, UTC-04:00)")``."""
    zone = local_zone()
    options = []
    for fold, which in ((0, "first"), (1, "second")):
        aware = value.replace(tzinfo=zone, fold=fold)
        offset = aware.strftime("%z")
        options.append((fold, f"the {which} {value:%H:%M} ({aware.tzname()}, UTC{offset[:3]}:{offset[3:]})"))
    return options


def fold_message(value):
    """Why a repeated local time needs a choice, naming the change."""
    repeated_from, repeated_to, _instant = _change_around(value)
    first, second = (label for _fold, label in fold_options(value))
    return (f"On {_day(value)} the clocks go back from {repeated_from:%H:%M} to {repeated_to:%H:%M}, "
            f"so {value:%H:%M} happens twice: choose {first} or {second}.")


def local_today(now=None):
    """The region's current local date (at ``now``, naive UTC, if given)."""
    return to_local(now or utcnow()).date()


def local_midnight(day):
    """Naive UTC of the local midnight that starts ``day``."""
    return from_local(datetime.combine(day, time()))
