"""The region's local time: what staff type and read, against the naive UTC the silos store."""
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from flask import current_app

from .models.base import utcnow

#: The local times a form accepts: far enough for any schedule or history, and safe to convert.
EARLIEST = datetime(2000, 1, 1)
LATEST = datetime(2100, 12, 31, 23, 59, 59)
RANGE_MESSAGE = "Enter a date from 2000-01-01 to 2100-12-31."


def local_zone():
    return ZoneInfo(current_app.config["MEDPORT_TIMEZONE"])


def to_local(value):
    """A stored naive-UTC datetime in the region's time zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC).astimezone(local_zone())


def from_local(value):
    """A naive local datetime (from a form) as naive UTC for storage."""
    if value is None:
        return None
    return value.replace(tzinfo=local_zone()).astimezone(UTC).replace(tzinfo=None)


def in_range(value):
    """Whether a naive local datetime lies within :data:`EARLIEST`..:data:`LATEST`."""
    return EARLIEST <= value.replace(fold=0) <= LATEST


def local_today(now=None):
    """The region's current local date (at ``now``, naive UTC, if given)."""
    return to_local(now or utcnow()).date()


def local_midnight(day):
    """Naive UTC of the local midnight that starts ``day``."""
    return from_local(datetime.combine(day, time()))
