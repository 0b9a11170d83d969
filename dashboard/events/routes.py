"""``GET /events``: one Server-Sent Events stream per page, signals only, scoped to the viewer.

A signal says *what* changed (``event: trip-updated``, ``data: <public id>``);
each panel re-fetches its own partial, so every viewer sees only what its role
may see.  The database session is released before streaming starts; the
stream itself reads the in-memory hub, and the database only briefly: a
reconnect that asks to replay more than the hub holds, and the session check.
A stream ends after ``MEDPORT_STREAM_MAX_SECONDS`` (the browser reconnects
with ``Last-Event-ID``) or with ``event: session-ended`` when the viewer's
session ends: at once when the account changes (deactivated, password reset:
its ``account-updated`` signal), else at the next check, every
``MEDPORT_STREAM_SESSION_CHECK_SECONDS`` (signed out in another tab, signed in again
over it, or ended by the user's password change in another browser: each revokes the
session's server-side row, which the check reads).
"""
import random
import re
import time

from flask import Blueprint, Response, current_app, request
from flask_login import current_user, login_required

from ..extensions import db
from ..models.vocabulary import CENTER_ROLES
from ..services import accounts, crew, degraded
from .hub import hub

bp = Blueprint("events", __name__)

#: Sent when a reconnect cannot be replayed exactly: every panel refreshes once.
RESYNC_SIGNALS = ("trip-updated", "bid-updated", "unit-updated")
SESSION_ENDED = "event: session-ended\ndata: signed out\n\n"
#: While the center cannot be read, a live page is told so and refreshes its panels this often
#: (seconds): changes in the hospital and EMS silos still show, without their signals.
STALE_REFRESH_SECONDS = 20


def _live_status(reachable):
    """``event: live-status`` saying whether signals flow (``ok``) or the center is unreachable."""
    return f"event: live-status\ndata: {'ok' if reachable else 'center-unreachable'}\n\n"


def _resync():
    return "".join(f"event: {name}\ndata: *\n\n" for name in RESYNC_SIGNALS)


def may_receive(viewer, signal):
    """Whether a viewer ``(role, hospital_id, agency_id, user_id[, unit_id])`` may receive
    ``signal`` (the hub's tuple; ``unit_ids``, its seventh item, may be left off).

    An ``alert`` goes to its recipient alone.  Center roles receive everything else; a
    hospital user what concerns their hospital; an EMS user what names their agency; a crew
    member only what names their agency and the unit they staff this shift (``unit_id``, EMS
    silo id); a signal about one account goes to that account (and the center); ``"*"``
    signals (configuration, registry) go to every organisation but crews.
    """
    _id, name, _entity, hospital_id, agency_ids, user_id = signal[:6]
    unit_ids = signal[6] if len(signal) > 6 else ""
    role, viewer_hospital, viewer_agency, viewer_user = viewer[:4]
    viewer_unit = viewer[4] if len(viewer) > 4 else None
    if name == "alert":  # one user's own alert: nobody else, the center included
        return user_id is not None and user_id == viewer_user
    if role in CENTER_ROLES:
        return True
    if user_id is not None:
        return user_id == viewer_user
    if role == "crew":
        return (viewer_agency is not None and viewer_unit is not None
                and f",{viewer_agency}," in (agency_ids or "") and f",{viewer_unit}," in (unit_ids or ""))
    if agency_ids == "*":
        return True
    if role == "hospital":
        return hospital_id is not None and hospital_id == viewer_hospital
    if role == "ems":
        return viewer_agency is not None and f",{viewer_agency}," in (agency_ids or "")
    return False


def _format(signal):
    return f"id: {signal[0]}\nevent: {signal[1]}\ndata: {signal[2]}\n\n"


def _wire(signal):
    """:func:`_format` as the bytes the socket is sent."""
    return _format(signal).encode()


def audience_of(viewer):
    """The scope a viewer's stream shares with others: the viewer without their user id.

    :func:`may_receive` looks at the user only for a signal that names one, so for every
    other signal one decision serves every stream of the scope.
    """
    role, hospital_id, agency_id = viewer[:3]
    return (role, hospital_id, agency_id, None, viewer[4] if len(viewer) > 4 else None)


def _rule_of(scope):
    """:func:`may_receive` for the streams of ``scope``: ``accepts(signal, user_id)``."""
    role, hospital_id, agency_id, _user, unit_id = scope

    def accepts(signal, user_id):
        return may_receive((role, hospital_id, agency_id, user_id, unit_id), signal)

    return accepts


def _session_still_valid(app, viewer, epoch, token):
    """The viewer's session is live: account active, same epoch, not signed out.

    A center outage says yes: the stream goes on with what the hub has.
    """
    with app.app_context():
        try:
            return accounts.session_is_live(viewer[3], epoch, token)
        except Exception:
            return True
        finally:
            db.session.remove()


def _last_event_id():
    """The id the browser saw last: the ``Last-Event-ID`` header, or ``?last_event_id=``."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or ""
    raw = raw.strip()
    return int(raw) if re.fullmatch(r"[0-9]{1,18}", raw) else None


def _crew_unit_id():
    """The EMS silo id of the unit a crew member staffs this shift (None for other roles, or
    with no shift or the EMS silo unreachable: the crew's stream then passes nothing on)."""
    if current_user.role != "crew":
        return None

    shift = degraded.optional("ems", lambda: crew.open_shift(current_user.id))
    return shift.unit_id if shift is not None else None


@bp.route("/events")
@login_required
def stream():
    """The viewer's live signals; ``Last-Event-ID`` replays what a reconnecting page missed."""
    app = current_app._get_current_object()
    viewer = (current_user.role, current_user.hospital_id, current_user.agency_id, current_user.id,
              _crew_unit_id())
    epoch, token = current_user.session_epoch, current_user.session_token
    keepalive = float(app.config.get("MEDPORT_STREAM_KEEPALIVE_SECONDS", 15))
    max_seconds = float(app.config.get("MEDPORT_STREAM_MAX_SECONDS", 3600))
    session_check = float(app.config.get("MEDPORT_STREAM_SESSION_CHECK_SECONDS", 60))
    last_id = _last_event_id()
    # Nothing of this request's database session is held from here on: the hub's
    # reads below and the stream take a connection only for a moment.
    db.session.remove()
    hub.ensure_listener()
    hub.refresh()  # also tells whether the center can be read now
    position = hub.position()
    replay, resync = [], False
    if last_id is not None:
        replay = hub.since_id(last_id)
        if replay is None:
            replay, complete = hub.replay_from_db(last_id)
            resync = not complete

    def generate():
        yield b"retry: 2000\n: connected\n\n"
        scope = audience_of(viewer)
        audience = hub.join(scope, viewer[3], _rule_of(scope), _wire)
        try:
            yield from _follow(app, viewer, epoch, token, audience, position, replay, resync, last_id,
                               keepalive, max_seconds, session_check)
        finally:
            hub.leave(audience, viewer[3])

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(generate(), mimetype="text/event-stream", headers=headers)


def _follow(app, viewer, epoch, token, audience, position, replay, resync, last_id, keepalive,
            max_seconds, session_check):
    """The stream after its first line: signals as they come (bytes), keep-alives, session checks.

    Signals come from the hub in batches built once per audience; a stream sends its user's
    text of the batch as it is, unless the batch changes its account (the session is checked
    first) or repeats what a replay already sent: those it goes through one by one.
    """
    started = last_write = time.monotonic()
    # Streams opened together check at different moments, not in one burst.
    last_check = started - random.uniform(0, session_check / 2)
    replayed = set()  # ids sent from a replay: the live signals may repeat them
    newest = last_id or 0  # the highest signal id gone through
    pending, from_replay, ready = replay, True, b""
    cursor = position
    reachable = hub.reachable
    last_resync = started
    if not reachable:
        yield _live_status(False).encode()
    if resync:
        yield _resync().encode()
    while True:
        chunks = []
        now = time.monotonic()
        if hub.reachable != reachable:
            reachable = hub.reachable
            # Back: what was missed meanwhile comes as signals; a refresh of every
            # panel covers what changed before they were written.
            chunks.append((_live_status(reachable) + ("" if not reachable else _resync())).encode())
            last_resync = now
        elif not reachable and now - last_resync >= STALE_REFRESH_SECONDS:
            chunks.append(_resync().encode())
            last_resync = now
        for signal in pending:
            if signal[0] in replayed:
                continue
            if from_replay:
                replayed.add(signal[0])
            newest = max(newest, signal[0])
            if signal[5] == viewer[3] and signal[1] == "account-updated" \
                    and not _session_still_valid(app, viewer, epoch, token):
                yield b"".join(chunks) + SESSION_ENDED.encode()
                return
            if may_receive(viewer, signal):
                chunks.append(_wire(signal))
        if ready:
            chunks.append(ready)
        if len(replayed) > 2000:
            replayed = {i for i in replayed if i > max(replayed) - 1000}
        now = time.monotonic()
        if now - last_check >= session_check:
            last_check = now
            if not _session_still_valid(app, viewer, epoch, token):
                yield b"".join(chunks) + SESSION_ENDED.encode()
                return
        if chunks:
            yield b"".join(chunks)
            last_write = now
        elif now - last_write >= keepalive:
            yield b": keep-alive\n\n"
            last_write = now
        remaining = max_seconds - (now - started)
        if remaining <= 0:
            return
        wait = min(keepalive - (time.monotonic() - last_write), remaining)
        if not reachable:
            wait = min(wait, STALE_REFRESH_SECONDS - (time.monotonic() - last_resync))
        hub.wait_for(audience, cursor, max(wait, 0))
        if hub.closing:
            return
        cursor, batch = hub.batch_for(audience, cursor)
        pending, from_replay, ready = (), False, b""
        if not batch.complete:
            pending, _ = hub.replay_from_db(newest)
            from_replay = True
        elif viewer[3] in batch.accounts or (replayed and not replayed.isdisjoint(s[0] for s in batch.signals)):
            pending = batch.signals  # gone through one by one, as this viewer
        else:
            ready = batch.data_for(viewer[3])
            if batch.newest is not None:
                newest = max(newest, batch.newest)
