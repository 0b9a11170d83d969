"""Helpers shared by the three silos' models."""
import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import Text, TypeDecorator


def utcnow():
    """Naive UTC now: every timestamp in every silo is stored as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_public_id():
    """A non-guessable id for anything a URL shows."""
    return str(uuid.uuid4())


#: The largest value of an ``Integer`` id column (PostgreSQL's ``integer``).
MAX_ROW_ID = 2**31 - 1


def row_id(value):
    """A row id from a form or URL, or None when it is not one (not a number, or out of range:
    SQLite cannot even bind an integer past 2**63)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= MAX_ROW_ID else None


class SubmissionMixin:
    """Columns of a used one-time form token and what its submission created (one table per
    silo; see ``services.submissions``)."""

    id = sa.Column(sa.Integer, primary_key=True)
    token = sa.Column(sa.String(64), nullable=False, unique=True)
    kind = sa.Column(sa.String(30), nullable=False)
    # What it created: its public id (its row id where it has none), set in the same transaction.
    created_id = sa.Column(sa.String(36))
    user_id = sa.Column(sa.Integer)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)


class JSONText(TypeDecorator):
    """JSON stored as text, so SQLite and PostgreSQL hold it alike."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, default=str)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return json.loads(value)
