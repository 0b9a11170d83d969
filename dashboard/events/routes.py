"""``GET /events``: one Server-Sent Events stream per page, signals only, scoped to the viewer.

A signal says *what* changed (``event: trip-updated``, ``data: <public id>``);
each panel re-fetches its own partial, so every viewer sees only what its role
may see.  The database session is released before streaming starts; the
stream itself only reads the in-memory hub (and the database briefly when a
reconnect asks to replay more than the hub holds).
"""
import time

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, request
from flask_login import current_user, login_required

from ..extensions import db
from ..models.center import User
from .hub import hub

bp = Blueprint("events", __name__)


def may_receive(viewer, signal):
    """Whether a viewer (role, hospital_id, agency_id, user_id) may receive ``signal``."""
    _id, name, _entity, hospital_id, agency_ids, user_id = signal
    role, viewer_hospital, viewer_agency, viewer_user = viewer
    if user_id is not None:
        return user_id == viewer_user
    if role in ("coordinator", "admin"):
        return True
    if role == "hospital":
        return hospital_id is not None and hospital_id == viewer_hospital or agency_ids == "*"
    if role == "ems":
        return agency_ids == "*" or f",{viewer_agency}," in (agency_ids or "")
    return False


def _format(signal):
    return f"id: {signal[0]}\nevent: {signal[1]}\ndata: {signal[2]}\n\n"


def _session_still_valid(app, user_id, epoch):
    with app.app_context():
        try:
            row = db.session.execute(
                sa.select(User.active, User.session_epoch).where(User.id == user_id)).first()
        except Exception:
            return True  # center down: keep streaming what the hub has
        finally:
            db.session.remove()
    return row is not None and row.active and row.session_epoch == epoch


@bp.route("/events")
@login_required
def stream():
    app = current_app._get_current_object()
    viewer = (current_user.role, current_user.hospital_id, current_user.agency_id, current_user.id)
    epoch = current_user.session_epoch
    keepalive = app.config.get("MEDPORT_STREAM_KEEPALIVE_SECONDS", 15)
    max_seconds = app.config.get("MEDPORT_STREAM_MAX_SECONDS", 3600)
    raw_last = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or ""
    hub.ensure_listener()
    last_id = int(raw_last) if raw_last.isdigit() else hub.last_id
    # Nothing of this request's database session is held while streaming.
    db.session.remove()

    def generate():
        nonlocal last_id
        yield "retry: 2000\n: connected\n\n"
        started = time.monotonic()
        generation = hub.generation
        while time.monotonic() - started < max_seconds:
            items, covered = hub.since(last_id)
            if not covered:
                items = hub.replay_from_db(last_id)
            for signal in items:
                last_id = max(last_id, signal[0])
                if signal[5] == viewer[3] and signal[1] == "account-updated":
                    if not _session_still_valid(app, viewer[3], epoch):
                        yield "event: session-ended\ndata: signed out\n\n"
                        return
                if may_receive(viewer, signal):
                    yield _format(signal)
            new_generation = hub.wait(generation, keepalive)
            if new_generation == generation:
                if not _session_still_valid(app, viewer[3], epoch):
                    yield "event: session-ended\ndata: signed out\n\n"
                    return
                yield ": keep-alive\n\n"
            generation = new_generation

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(generate(), mimetype="text/event-stream", headers=headers)
