"""Alerts by email and by webhook: deliveries made from alerts, sent by a sender of their own.

Making: an alert whose user wants its kind by email waits (``Alert.mail_pending``) until the
sender puts it in a message: one message per recipient per minute (:data:`COALESCE_SECONDS`)
listing every alert that waited, or one an hour for a user who chose the digest
(:data:`DIGEST_MINUTES`).  An organisation's webhook gets one delivery per alert occasion of a
kind it asked for, made with the alerts themselves (:func:`queue_webhooks`), carrying only what
the organisation's users were alerted of.

Sending (:class:`Sender`, its own thread beside the relay, never a page or the relay itself):
each delivery is claimed for a lease, tried once, and recorded: ``sent``; ``retrying`` with a
growing back-off (:func:`backoff_seconds`); ``parked`` after ``MEDPORT_DELIVERY_MAX_ATTEMPTS``
tries, listed for the center with a replay button (:func:`replay`).  An SMTP server that cannot
be reached at all (refused, timed out, dropped) is an outage: its emails are retried every
:data:`UNREACHABLE_RETRY_SECONDS` at most and never parked, so they arrive once it is back.

What a message carries: each alert's title (the request's public reference, level of care,
urgency), its pickup window and a link; never a patient reference or clinical notes (alerts
hold neither).  Webhook bodies are signed per Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
secret ``whsec_...``) with the ``standardwebhooks`` package.
"""
import base64
import json
import logging
import secrets
import smtplib
import ssl
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa
from flask import current_app

from ..extensions import db
from ..localtime import to_local
from ..models.base import URGENCIES, new_public_id, utcnow
from ..models.center import Alert, AlertDelivery, AlertSetting, User, WebhookEndpoint
from .refusals import Refused

log = logging.getLogger("medport.deliveries")

#: At most one alert email per recipient within this many seconds; what comes meanwhile waits
#: for the next one.
COALESCE_SECONDS = 60
#: A user who chose the digest gets at most one alert email an hour.
DIGEST_MINUTES = 60
DIGEST_KIND = "mail.digest"
UNREACHABLE_RETRY_SECONDS = 30
MAX_BACKOFF_SECONDS = 900
BATCH = 50
MAKE_BATCH = 5000
#: Alerts listed in one message at most; more wait for the next.
MAX_ITEMS = 100
STATUSES = ("pending", "retrying", "sent", "parked")
DUE = ("pending", "retrying")


def backoff_seconds(attempts):
    """10, 20, 40 ... seconds after the 1st, 2nd, 3rd failure; at most 15 minutes."""
    return min(10 * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


class DeliveryFailed(Exception):
    """A try that did not deliver; ``unreachable`` when the server could not be reached at all."""

    def __init__(self, message, unreachable=False):
        super().__init__(message)
        self.unreachable = unreachable


# --- SMTP ---------------------------------------------------------------------------------

def smtp_settings(url):
    """What ``MEDPORT_SMTP_URL`` says: ``smtp://[user:password@]host[:port][?starttls=1]`` or
    ``smtps://...`` (TLS from the start).  Returns a dict (``host``, ``port``, ``tls``,
    ``starttls``, ``user``, ``password``); raises ValueError for another scheme or no host."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("MEDPORT_SMTP_URL must look like smtp://host:port or smtps://host:port")
    query = parse_qs(parts.query)
    starttls = (query.get("starttls") or ["0"])[0].lower() in ("1", "true", "yes", "on")
    return {"host": parts.hostname, "port": parts.port or (465 if parts.scheme == "smtps" else 25),
            "tls": parts.scheme == "smtps", "starttls": starttls and parts.scheme == "smtp",
            "user": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}


def mail_enabled():
    return bool(current_app.config.get("MEDPORT_SMTP_URL"))


class SmtpConnection:
    """One connection to the configured SMTP server, opened at the first message and kept for the
    sender's pass (a burst of emails is one connection, not one per message)."""

    def __init__(self, config):
        self.config = config
        self.settings = smtp_settings(config["MEDPORT_SMTP_URL"])
        self.server = None

    def _open(self):
        settings, timeout = self.settings, self.config["MEDPORT_SMTP_TIMEOUT_SECONDS"]
        try:
            if settings["tls"]:
                server = smtplib.SMTP_SSL(settings["host"], settings["port"], timeout=timeout,
                                          context=ssl.create_default_context())
            else:
                server = smtplib.SMTP(settings["host"], settings["port"], timeout=timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"cannot reach the SMTP server: {type(exc).__name__}", unreachable=True) from exc
        try:
            if settings["starttls"]:
                server.starttls(context=ssl.create_default_context())
            if settings["user"]:
                server.login(settings["user"], settings["password"] or "")
        except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            server.close()
            if settings["user"] and isinstance(exc, smtplib.SMTPServerDisconnected):
                # A server may hang up on a refused login.
                raise DeliveryFailed(f"SMTP login refused: {type(exc).__name__}") from exc
            raise DeliveryFailed(f"SMTP server lost: {type(exc).__name__}", unreachable=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            server.close()
            raise DeliveryFailed(f"SMTP login refused: {type(exc).__name__}") from exc
        self.server = server

    def send(self, to, subject, text):
        """Send one plain-text email; raises :class:`DeliveryFailed` (the connection is dropped)."""
        message = EmailMessage()
        message["From"] = self.config["MEDPORT_MAIL_FROM"]
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(
            domain=parseaddr(self.config["MEDPORT_MAIL_FROM"])[1].partition("@")[2] or "medport")
        message.set_content(text)
        if self.server is None:
            self._open()
        try:
            self.server.send_message(message)
        except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            self.close()
            raise DeliveryFailed(f"SMTP server lost: {type(exc).__name__}", unreachable=True) from exc
        except smtplib.SMTPResponseException as exc:
            self._reset()
            raise DeliveryFailed(f"SMTP {exc.smtp_code}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise DeliveryFailed(f"SMTP: {type(exc).__name__}") from exc

    def _reset(self):
        try:
            self.server.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self):
        if self.server is not None:
            try:
                self.server.quit()
            except (smtplib.SMTPException, OSError):
                self.server.close()
            self.server = None


def send_email(config, to, subject, text):
    """Send one plain-text email on a connection of its own; raises :class:`DeliveryFailed`."""
    connection = SmtpConnection(config)
    try:
        connection.send(to, subject, text)
    finally:
        connection.close()


# --- webhooks -----------------------------------------------------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_webhook_url(url, allow_loopback_http=False):
    """The endpoint's URL if it may be used: ``https://`` with a host, or (when allowed, for
    development and tests) ``http://`` to this machine.  Raises ValueError with a message."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if len(url) > 500 or not parts.hostname or parts.username or parts.password:
        raise ValueError("Enter the endpoint's full address, like https://dispatch.example.org/medport.")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and allow_loopback_http and parts.hostname in LOOPBACK_HOSTS:
        return url
    raise ValueError("The endpoint must use https://.")


def new_secret():
    """A signing secret in the Standard Webhooks form: ``whsec_`` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret, msg_id, timestamp, body):
    """The three Standard Webhooks headers of ``body`` (text) sent as ``msg_id`` at ``timestamp``."""
    from standardwebhooks.webhooks import Webhook

    signature = Webhook(secret).sign(msg_id, timestamp, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an answer, not a delivery
        return None


def post_webhook(config, delivery, endpoint):
    """POST the delivery's body to the endpoint, signed; raises :class:`DeliveryFailed` unless 2xx."""
    try:
        url = check_webhook_url(endpoint.url, config["MEDPORT_WEBHOOK_ALLOW_LOOPBACK_HTTP"])
    except ValueError as exc:
        raise DeliveryFailed(str(exc)) from exc
    body = delivery.message["body"]
    headers = signed_headers(endpoint.secret, delivery.message["id"], datetime.now(UTC), body)
    headers.update({"Content-Type": "application/json", "User-Agent": "MedPort-Webhooks"})
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        # The scheme is https:// (or http:// to this machine when allowed): checked above.
        with opener.open(request, timeout=config["MEDPORT_WEBHOOK_TIMEOUT_SECONDS"]) as answer:  # nosec B310
            answer.read(1024)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"cannot reach the endpoint: {type(reason).__name__}") from exc


def webhook_body(delivery_id, kind, created_at, alert_facts):
    """The JSON body of a webhook delivery (text)."""
    return json.dumps({"type": kind, "id": delivery_id, "timestamp": created_at.isoformat() + "Z",
                       "data": alert_facts}, sort_keys=True)


def queue_webhooks(kind, key, org_scopes, facts):
    """One delivery per active endpoint of ``org_scopes`` that asked for ``kind``, for this
    alert occasion ``key`` (once per endpoint).  ``facts`` is what the organisation's users
    were alerted of (title, reference, level, urgency, window, link).  The caller commits."""
    if not org_scopes:
        return []
    endpoints = db.session.scalars(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.scope.in_(sorted(org_scopes)), WebhookEndpoint.active.is_(True))).all()
    made = []
    for endpoint in endpoints:
        if kind not in endpoint.kind_list:
            continue
        occasion = f"{endpoint.id}:{key}"[:200]
        if db.session.scalar(sa.select(AlertDelivery.id).where(AlertDelivery.key == occasion)) is not None:
            continue
        delivery = AlertDelivery(channel="webhook", endpoint_id=endpoint.id, target=endpoint.url, key=occasion,
                                 public_id=new_public_id())
        msg_id = "msg_" + delivery.public_id.replace("-", "")
        delivery.message = {"id": msg_id, "type": kind, "body": webhook_body(msg_id, kind, utcnow(), facts)}
        db.session.add(delivery)
        made.append(delivery)
    return made


# --- making emails ------------------------------------------------------------------------

def _digest_users(user_ids):
    """The users among ``user_ids`` who chose the digest (their own choice, else their
    organisation's)."""
    users = db.session.scalars(sa.select(User).where(User.id.in_(user_ids))).all()
    scopes = {}
    for user in users:
        from .alerts import org_scope, user_scope

        scopes[user.id] = [user_scope(user.id), org_scope(user.role, user.hospital_id, user.agency_id)]
    rows = {row.scope: row.enabled for row in db.session.scalars(sa.select(AlertSetting).where(
        AlertSetting.kind == DIGEST_KIND,
        AlertSetting.scope.in_(sorted({s for pair in scopes.values() for s in pair}))))}
    chosen = set()
    for user_id, pair in scopes.items():
        for scope in pair:
            if scope in rows:
                if rows[scope]:
                    chosen.add(user_id)
                break
    return {user.id: user for user in users}, chosen


def describe_window(details):
    """"Tue 01 Dec 14:30–15:30" of an alert's pickup window (local time), or ""."""
    try:
        start = datetime.fromisoformat(details["window_start"])
        end = datetime.fromisoformat(details["window_end"])
    except (KeyError, TypeError, ValueError):
        return ""
    start, end = to_local(start), to_local(end)
    return f"{start:%a %d %b %H:%M}–{end:%H:%M}" if start.date() == end.date() else \
        f"{start:%a %d %b %H:%M} – {end:%a %d %b %H:%M}"


def message_text(alerts, base_url, digest=False):
    """(subject, text) of an email listing ``alerts``: title, level, urgency, window, link each."""
    if len(alerts) == 1 and not digest:
        subject = f"MedPort: {alerts[0].title}"
    else:
        subject = f"MedPort{' digest' if digest else ''}: {len(alerts)} alert{'s' if len(alerts) != 1 else ''}"
    lines = ["MedPort alerts:" if len(alerts) != 1 else "MedPort alert:", ""]
    for alert in alerts:
        details = alert.details or {}
        facts = []
        if details.get("level_of_care"):
            facts.append(f"Level of care: {details['level_of_care']}")
        if details.get("urgency"):
            facts.append(f"Urgency: {URGENCIES.get(details['urgency'], details['urgency'])}")
        window = describe_window(details)
        if window:
            facts.append(f"Pickup window: {window}")
        lines.append(f"- {alert.title}")
        if facts:
            lines.append("  " + ". ".join(facts) + ".")
        if alert.link:
            lines.append(f"  {base_url}{alert.link}")
        lines.append("")
    lines.append("Choose which alerts you get by email: " + base_url + "/alerts/settings")
    return subject[:200], "\n".join(lines)


def make_emails(now=None):
    """Put the alerts waiting to be mailed into messages, per recipient: at once when the last
    message to them is over a minute old (an hour for the digest), else at the next pass after
    that.  One transaction for the pass.  Returns the deliveries made.  Commits."""
    now = now or utcnow()
    waiting = db.session.execute(sa.select(Alert.user_id, sa.func.min(Alert.created_at))
                                 .where(Alert.mail_pending.is_(True)).group_by(Alert.user_id)
                                 .limit(MAKE_BATCH)).all()
    if not waiting:
        db.session.commit()
        return []
    oldest = dict(waiting)
    users, digest = _digest_users(list(oldest))
    last = dict(db.session.execute(sa.select(AlertDelivery.user_id, sa.func.max(AlertDelivery.created_at))
                                   .where(AlertDelivery.channel == "email",
                                          AlertDelivery.user_id.in_(list(oldest)))
                                   .group_by(AlertDelivery.user_id)).all())
    due = []
    for user_id, first in oldest.items():
        wait = timedelta(minutes=DIGEST_MINUTES) if user_id in digest else timedelta(seconds=COALESCE_SECONDS)
        if user_id in digest and now - first < wait:
            continue  # a digest gathers an hour of alerts
        if last.get(user_id) is not None and now - last[user_id] < wait:
            continue
        due.append(user_id)
    if not due:
        db.session.commit()
        return []
    by_user = {}
    for alert in db.session.scalars(sa.select(Alert).where(Alert.user_id.in_(due), Alert.mail_pending.is_(True))
                                    .order_by(Alert.user_id, Alert.id)):
        listed = by_user.setdefault(alert.user_id, [])
        if len(listed) < MAX_ITEMS:
            listed.append(alert)
    base_url = current_app.config["MEDPORT_BASE_URL"]
    made = []
    for user_id, listed in by_user.items():
        user = users.get(user_id)
        if user is None or not user.active:
            for alert in listed:
                alert.mail_pending = False
            continue
        subject, text = message_text(listed, base_url, digest=user_id in digest)
        made.append((AlertDelivery(channel="email", user_id=user_id, target=user.email, items=len(listed),
                                   message={"subject": subject, "text": text}, created_at=now,
                                   next_attempt_at=now), listed))
    db.session.add_all([delivery for delivery, _listed in made])
    db.session.flush()
    for delivery, listed in made:
        for alert in listed:
            alert.mail_pending, alert.mail_delivery_id = False, delivery.id
    db.session.commit()
    return [delivery for delivery, _listed in made]


# --- sending ------------------------------------------------------------------------------

def _claim(ids, now, lease):
    """Take a lease on those of ``ids`` still due and free; returns the ids taken."""
    until = now + timedelta(seconds=lease, microseconds=secrets.randbelow(10**6))
    db.session.execute(
        sa.update(AlertDelivery)
        .where(AlertDelivery.id.in_(ids), AlertDelivery.status.in_(DUE), AlertDelivery.next_attempt_at <= now,
               sa.or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until < now))
        .values(claimed_until=until)
        .execution_options(synchronize_session=False))
    db.session.commit()
    taken = db.session.scalars(sa.select(AlertDelivery.id).where(
        AlertDelivery.id.in_(ids), AlertDelivery.claimed_until == until).order_by(AlertDelivery.id)).all()
    db.session.commit()
    return taken


def send_due(now=None, channel=None):
    """Try every due delivery once (of one ``channel``, or both); returns ``{status: count}``."""
    config = current_app.config
    now = now or utcnow()
    query = sa.select(AlertDelivery.id).where(AlertDelivery.status.in_(DUE), AlertDelivery.next_attempt_at <= now)
    if channel:
        query = query.where(AlertDelivery.channel == channel)
    ids = db.session.scalars(query.order_by(AlertDelivery.id).limit(BATCH)).all()
    db.session.commit()
    lease = int(max(config["MEDPORT_SMTP_TIMEOUT_SECONDS"], config["MEDPORT_WEBHOOK_TIMEOUT_SECONDS"]) * 3 + 30)
    outcome = {}
    unreachable_smtp = False
    smtp = SmtpConnection(config) if config.get("MEDPORT_SMTP_URL") else None
    try:
        for delivery_id in _claim(ids, now, lease) if ids else []:
            status = _try(delivery_id, now, config, smtp, unreachable_smtp)
            unreachable_smtp = unreachable_smtp or status == "unreachable"
            status = "retrying" if status == "unreachable" else status
            outcome[status] = outcome.get(status, 0) + 1
    finally:
        if smtp is not None:
            smtp.close()
    return outcome


def _try(delivery_id, now, config, smtp, unreachable_smtp):
    """Try one claimed delivery and record the outcome; returns its status, or "unreachable"
    for an email whose server could not be reached (the pass's other emails wait)."""
    delivery = db.session.get(AlertDelivery, delivery_id)
    db.session.commit()  # nothing of the center held while the server answers
    try:
        if delivery.channel == "email":
            if unreachable_smtp or smtp is None:
                raise DeliveryFailed("SMTP server not reachable in this pass", unreachable=True)
            smtp.send(delivery.target, delivery.message["subject"], delivery.message["text"])
        else:
            endpoint = db.session.get(WebhookEndpoint, delivery.endpoint_id)
            db.session.commit()
            if endpoint is None or not endpoint.active:
                raise DeliveryFailed("endpoint removed")
            post_webhook(config, delivery, endpoint)
    except DeliveryFailed as failed:
        status = _record_failure(delivery, failed, now, config)
        return "unreachable" if failed.unreachable and delivery.channel == "email" else status
    delivery.status, delivery.sent_at, delivery.last_error = "sent", utcnow(), None
    delivery.attempts += 1
    delivery.last_attempt_at, delivery.claimed_until = utcnow(), None
    db.session.commit()
    return "sent"


def _record_failure(delivery, failed, now, config):
    delivery.attempts += 1
    delivery.last_attempt_at, delivery.claimed_until = utcnow(), None
    delivery.last_error = str(failed)[:300]
    never_park = failed.unreachable and delivery.channel == "email"
    if delivery.attempts >= config["MEDPORT_DELIVERY_MAX_ATTEMPTS"] and not never_park:
        delivery.status = "parked"
    else:
        delivery.status = "retrying"
        delay = backoff_seconds(delivery.attempts)
        if never_park:
            delay = min(delay, UNREACHABLE_RETRY_SECONDS)
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    log.warning("deliveries: %s delivery %s attempt %d failed%s: %s", delivery.channel, delivery.public_id,
                delivery.attempts, " (parked)" if delivery.status == "parked" else "", failed)
    db.session.commit()
    return delivery.status


def _of_scope(scope):
    """The condition "a webhook delivery to an endpoint (active or removed) of organisation
    ``scope``": what an organisation's administrator sees of the deliveries."""
    return sa.and_(AlertDelivery.channel == "webhook", AlertDelivery.endpoint_id.in_(
        sa.select(WebhookEndpoint.id).where(WebhookEndpoint.scope == scope)))


def replay(public_id=None, scope=None):
    """Put a parked delivery (or every one) back in the queue; returns how many.  With ``scope``
    only a webhook delivery of that organisation's endpoints is replayed.  Commits."""
    count = _requeue(public_id, scope)
    db.session.commit()
    return count


def replay_parked(public_id, scope=None):
    """:func:`replay` of the one parked delivery ``public_id``, for a view's use case: returns 1.

    Raises :class:`Refused` (404) when there is no such parked delivery (or, with ``scope``,
    it is not of that organisation's endpoints).  The caller commits."""
    if not _requeue(public_id, scope):
        raise Refused("That delivery is not parked (or not yours to replay).", 404)
    return 1


def _requeue(public_id, scope):
    query = sa.update(AlertDelivery).where(AlertDelivery.status == "parked")
    if public_id is not None:
        query = query.where(AlertDelivery.public_id == public_id)
    if scope is not None:
        query = query.where(_of_scope(scope))
    count = db.session.execute(query.values(status="retrying", attempts=0, next_attempt_at=utcnow(),
                                            claimed_until=None)
                               .execution_options(synchronize_session=False)).rowcount
    return count


def recent(status=None, channel=None, limit=200, scope=None):
    """The latest deliveries (newest first), of a status and channel when given; with ``scope``
    only the webhook deliveries of that organisation's endpoints."""
    query = sa.select(AlertDelivery).order_by(AlertDelivery.id.desc()).limit(limit)
    if scope is not None:
        query = query.where(_of_scope(scope))
    if status:
        query = query.where(AlertDelivery.status == status)
    if channel:
        query = query.where(AlertDelivery.channel == channel)
    return db.session.scalars(query).all()


def counts(scope=None):
    """``{(channel, status): n}`` of every delivery kept (with ``scope``, of that organisation's
    webhook endpoints)."""
    query = sa.select(AlertDelivery.channel, AlertDelivery.status, sa.func.count(AlertDelivery.id))
    if scope is not None:
        query = query.where(_of_scope(scope))
    return {(c, s): n for c, s, n in db.session.execute(
        query.group_by(AlertDelivery.channel, AlertDelivery.status))}


class Sender:
    """Makes the alert emails and sends every due delivery, in a loop of its own (a thread beside
    the relay, or ``flask medport relay``'s): an SMTP server or an endpoint that is slow or down
    delays only its own deliveries."""

    def __init__(self, app, poll_seconds=2.0):
        self.app = app
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()

    def run_once(self, now=None):
        """One pass: make emails, then try what is due.  Returns ``{status: count}`` of the tries."""
        with self.app.app_context():
            try:
                if mail_enabled():
                    make_emails(now)
                return send_due(now)
            finally:
                db.session.remove()

    def run_forever(self):
        """Pass after pass until stopped: at once while passes find a full batch, else after
        ``poll_seconds``."""
        while not self.stopping.is_set():
            tried = 0
            try:
                tried = sum(self.run_once().values())
            except Exception as exc:  # the center down: the next pass tries again
                log.warning("deliveries: pass failed: %s", type(exc).__name__)
            if tried < BATCH:
                self.stopping.wait(self.poll_seconds)

    def stop(self):
        self.stopping.set()


def start_sender_thread(app):
    """The sender in a daemon thread of this process; returns the :class:`Sender`."""
    sender = Sender(app)
    threading.Thread(target=sender.run_forever, name="medport-sender", daemon=True).start()
    return sender
