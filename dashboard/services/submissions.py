"""One submission, one result: every creating form carries a one-time token.

The form gets a random ``submission_id`` when it is rendered.  The view claims
the token before it creates anything, in the silo (and transaction) of what it
creates, and notes what was created on the claim; a form sent twice (double
click, two tabs, Back and send again) finds its token claimed and answers with
what the first one created.  Two sends at the same moment: the second one's
claim meets the unique token (on PostgreSQL it waits for the first to commit)
and is rolled back whole, so no second row is ever written.

A form sent without a token (an old page, a script) is not deduplicated.
Nothing here commits.
"""
import re
import secrets

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models.center import CenterSubmission
from ..models.ems import EmsSubmission
from ..models.hospital import HospitalSubmission
from .refusals import Refused

#: Which table holds a silo's claimed tokens.
MODELS = {"center": CenterSubmission, "hospital": HospitalSubmission, "ems": EmsSubmission}
#: A token as :func:`new_token` makes it (URL-safe base64), with room to spare.
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
TOKEN_MESSAGE = "This form was altered or is incomplete; reload the page and try again. Nothing was saved."


class SubmissionRefused(Refused):
    """A token that does not belong to this form and user (409); ``message`` is for the user.
    No one field is at fault: the form as a whole."""


def new_token():
    """A fresh one-time token for a form being rendered: 22 URL-safe characters (128 bits)."""
    return secrets.token_urlsafe(16)


def valid_token(token):
    """Whether ``token`` has the shape of one :func:`new_token` makes."""
    return isinstance(token, str) and re.fullmatch(TOKEN_PATTERN, token) is not None


class Claim:
    """The outcome of :func:`claim`: ``repeat`` is True when the token was used already, and
    ``created_id`` then names what its first submission created; else call :meth:`created`
    with what this submission creates."""

    def __init__(self, row=None, repeat=False, created_id=None):
        self._row = row
        self.repeat = repeat
        self.created_id = created_id

    def created(self, created_id):
        """Note what this submission created (its public id, or its row id)."""
        self.created_id = str(created_id)
        if self._row is not None:
            self._row.created_id = self.created_id
            db.session.flush()


def _existing(model, token, kind, user_id):
    row = db.session.scalar(sa.select(model).where(model.token == token))
    if row is None:
        return None
    if row.kind != kind or row.user_id != user_id:
        raise SubmissionRefused("This form was already used for something else; reload the page.")
    return Claim(repeat=True, created_id=row.created_id)


def previous(silo, token, kind, user_id):
    """What an earlier send of this form created (its ``created_id``), or None (a read only).

    For a view to answer a repeat before it validates the form again.
    """
    if not valid_token(token):
        return None
    model = MODELS[silo]
    row = db.session.scalar(sa.select(model).where(model.token == token))
    if row is None or row.kind != kind or row.user_id != user_id:
        return None
    return row.created_id


def claim(silo, token, kind, user_id):
    """Claim the form's token in ``silo`` before creating a ``kind`` of thing; returns a :class:`Claim`.

    Call it first in the use case: a repeat rolls the session back (nothing of it is
    kept) when it meets a claim committed meanwhile.  An empty token claims nothing
    (``repeat`` False).  Raises :class:`SubmissionRefused` (409) for a token used by
    another user or form, ``ValueError`` for a token of the wrong shape (the form's
    validator refuses those first).
    """
    if not token:
        return Claim()
    if not valid_token(token):
        raise ValueError("malformed submission token")
    model = MODELS[silo]
    existing = _existing(model, token, kind, user_id)
    if existing is not None:
        return existing
    row = model(token=token, kind=kind, user_id=user_id)
    db.session.add(row)
    try:
        db.session.flush()
    except IntegrityError:
        # The same form sent at the same moment, and that one committed first.
        db.session.rollback()
        existing = _existing(model, token, kind, user_id)
        if existing is None:
            raise
        return existing
    return Claim(row)
