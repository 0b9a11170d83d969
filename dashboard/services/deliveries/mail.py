"""Alert emails: the SMTP server (``MEDPORT_SMTP_URL``) and its connection, and the messages made
from the alerts waiting to be mailed, one per recipient per minute (an hour for the digest)."""
import smtplib
import ssl
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa
from flask import current_app

from ...extensions import db
from ...localtime import to_local
from ...models.base import utcnow
from ...models.center import Alert, AlertDelivery, AlertSetting, User
from ...models.vocabulary import URGENCIES
from ..alerts.settings import org_scope, user_scope
from .records import DeliveryFailed

#: At most one alert email per recipient within this many seconds; what comes meanwhile waits
#: for the next one.
COALESCE_SECONDS = 60
#: A user who chose the digest gets at most one alert email an hour.
DIGEST_MINUTES = 60
DIGEST_KIND = "mail.digest"
MAKE_BATCH = 5000
#: Alerts listed in one message at most; more wait for the next.
MAX_ITEMS = 100


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


def _digest_users(user_ids):
    """The users among ``user_ids`` who chose the digest (their own choice, else their
    organisation's)."""
    users = db.session.scalars(sa.select(User).where(User.id.in_(user_ids))).all()
    scopes = {}
    for user in users:
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
