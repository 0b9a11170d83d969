"""The region's local time: what staff type and read, against the naive UTC the silos store."""
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from flask import current_app

from .models.base import utcnow


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


def local_today(now=None):
    """The region's current local date (at ``now``, naive UTC, if given)."""
    return to_local(now or utcnow()).date()


def local_midnight(day):
    """Naive UTC of the local midnight that starts ``day``."""
    return from_local(datetime.combine(day, time()))
