"""The center's creating forms: one-time tokens claimed before the save, a form sent again
answered with what its first send created, and refusals shown on the form (shared by the
registry and the accounts views)."""
from flask import flash, redirect, url_for
from flask_login import current_user

from ..services import submissions
from ..views import SEE_FIELDS, discard


def on_form(form, message):
    """``form`` with a refusal's page ``message`` among its form errors (unless the message went
    onto a field, see :func:`dashboard.views.act`)."""
    if message != SEE_FIELDS:
        form.form_errors.append(message)
    return form


def _claim(form, kind):
    """Claim the form's one-time token in the center silo before creating a ``kind``."""
    return submissions.claim("center", form.submission_id.data, kind, current_user.id)


def claimed(form, kind, save, created_id):
    """Claim the form's token, then ``save()`` unless the form was sent before; returns
    ``(claim, what save returned or None on a repeat)``.  ``created_id(result)`` names what
    was created for the claim."""
    claim = _claim(form, kind)
    if claim.repeat:
        return claim, None
    result = save()
    claim.created(created_id(result))
    return claim, result


def repeat_of(form, kind, message, claim=None):
    """The answer to a creating form sent again (303 to the registry or the account, with
    ``message``), or None when this is its first send."""
    created_id = claim.created_id if claim is not None else submissions.previous(
        "center", form.submission_id.data, kind, current_user.id)
    if claim is None and created_id is None:
        return None
    discard()
    return _repeat_answer(kind, message, created_id)


def _repeat_answer(kind, message, created_id):
    flash(message, "info")
    if kind == "user" and created_id:
        return redirect(url_for(".user_edit", public_id=created_id), 303)
    return redirect(url_for(".registry"), 303)
