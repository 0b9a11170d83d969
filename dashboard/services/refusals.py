"""The one base of every domain refusal.

A service that will not do what it is asked raises a :class:`Refused` (or a subclass
naming the rule, e.g. ``trips.TransitionRefused``), never a bare ``ValueError`` or an
``abort``: the service knows nothing of HTTP beyond the status it suggests.  The view
helper :func:`dashboard.views.act` is the one place that catches it: it rolls the
session back, puts the message on the form field named by ``field`` (or on the page),
and answers with ``status``.
"""


class Refused(Exception):
    """A change or read the rules do not allow.

    ``message`` is a whole sentence for the user (it says what was not saved and what to do);
    ``status`` is the HTTP status it suggests (400 bad input, 403 not allowed, 404 not found or
    not visible, 409 conflicts with the current state, 503 a silo is unreachable);
    ``field`` names the form field the message belongs to, or is None for the page.
    """

    status = 409

    def __init__(self, message, status=None, field=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.field = field

    def __repr__(self):
        return f"{type(self).__name__}({self.message!r}, status={self.status}, field={self.field!r})"
