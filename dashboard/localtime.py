"""The region's local time: what staff type and read, against the naive UTC the silos store."""
from datetime import UTC
from zoneinfo import ZoneInfo

from flask import current_app


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
