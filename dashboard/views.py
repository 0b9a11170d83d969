"""The one way a view runs a use case: act, commit once, or answer the refusal.

Every role blueprint writes through :func:`act`; no blueprint commits, rolls back or imports
``sqlalchemy``.  The shape (Indico's "one commit per request", without the classes)::

    @bp.route("/requests/<public_id>/cancel", methods=["POST"])
    @roles_required("hospital")
    def cancel_request(public_id):
        trip = _trip_or_404(public_id)
        form = CancelForm()
        if not form.validate_on_submit():
            return _render_cancel(trip, form, 400)
        return act(
            lambda: trips.cancel(trip, form.reason.data, ..., actor=actor()),
            done=lambda _: see_other(".request_detail", f"{trip.reference} is cancelled.",
                                     public_id=trip.public_id),
            refused=lambda message, status: _render_cancel(trip, form, status, message),
            form=form)

A refusal (:class:`dashboard.services.refusals.Refused`) rolls the session back; 404 is
answered as not found, as if the item did not exist; a refusal naming a ``field`` the form has
puts its message on that field (and the page message says to look there); any other becomes the
page message.  ``refused(message, status)`` renders the same template for a full page and for
an htmx request (the template extends the layout or not by ``htmx``), so both are answered alike.
"""
from flask import abort, flash, redirect, request, url_for
from flask_login import current_user

from . import server_timing
from .events.outbox import Actor
from .extensions import db
from .services.refusals import Refused

#: The page message when a refusal's message went onto a form field.
SEE_FIELDS = "Check the highlighted fields; nothing was saved."


def act(action, *, done, refused, form=None):
    """Run ``action()`` (service calls that may raise :class:`Refused`), then commit once.

    - ``done(result)`` builds the answer after the commit (usually :func:`see_other`).
    - ``refused(message, status)`` builds the answer to a refusal after the rollback.
    - ``form``: a WTForms form whose field named by ``Refused.field`` takes the message.

    Returns the response of ``done`` or ``refused``; aborts 404 for a refusal with status 404.
    Any other exception propagates after the rollback (the error pages answer it).
    """
    try:
        result = action()
    except Refused as refusal:
        db.session.rollback()
        if refusal.status == 404:
            abort(404)
        return refused(_place(refusal, form), refusal.status)
    except BaseException:
        db.session.rollback()
        raise
    _commit()
    return done(result)


def _commit():
    """Commit this request's session.  When the request has sent no statement but ``SELECT``
    and holds no change to flush (a read through :func:`act`, such as a page of the audit log),
    the commit ends the transaction without expiring what it loaded: ``done`` renders the rows
    as they were read instead of reading each one again (one statement per row, the signed-in
    user too).  Any other commit expires as usual, so a page after a write reads what was
    written."""
    session = db.session()
    collector = server_timing.current()
    if collector is None or collector.wrote or session.new or session.dirty or session.deleted:
        session.commit()
        return
    expire = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire


def keep():
    """Commit what a read computed and stored for the next reader (e.g. analytics cells).

    The one commit a view makes outside :func:`act`; a failure rolls back and propagates."""
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


def discard():
    """Roll back whatever a view read or flushed before it answered without acting (a repeat
    form, a refused read): nothing of it is kept."""
    db.session.rollback()


def _place(refusal, form):
    """The page message for ``refusal``: on its form field when the form has one."""
    field = getattr(form, refusal.field, None) if form is not None and refusal.field else None
    if field is None or not hasattr(field, "errors"):
        return refusal.message
    field.errors = [*field.errors, refusal.message]
    return SEE_FIELDS


def see_other(endpoint, message=None, category="success", **values):
    """303 to ``endpoint`` with an optional flashed ``message``: the answer to a done action
    (htmx follows it and swaps the page it lands on)."""
    if message:
        flash(message, category)
    return redirect(url_for(endpoint, **values), 303)


def actor():
    """Who is acting in this request, for the outbox and the audit log (:class:`Actor`)."""
    if current_user and current_user.is_authenticated:
        return Actor(current_user.id, request.remote_addr, current_user.display_name)
    return Actor(None, request.remote_addr, None)


def found(endpoint, message=None, category="success", **values):
    """302 to ``endpoint`` with an optional flashed ``message``: :func:`see_other` for the views
    whose done answer has always been a 302 (their clients and tests expect that status)."""
    if message:
        flash(message, category)
    return redirect(url_for(endpoint, **values))
