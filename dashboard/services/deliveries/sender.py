"""The sender: a loop of its own (a thread beside the relay) that makes the alert emails and tries
every due delivery once, recording ``sent``, ``retrying`` with a growing back-off, or ``parked``."""
import logging
import secrets
import threading
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from ...extensions import db
from ...models.base import utcnow
from ...models.center import AlertDelivery, WebhookEndpoint
from .mail import SmtpConnection, mail_enabled, make_emails
from .records import DUE, DeliveryFailed
from .webhook_posts import post_webhook

log = logging.getLogger("medport.deliveries")

UNREACHABLE_RETRY_SECONDS = 30
MAX_BACKOFF_SECONDS = 900
BATCH = 50


def backoff_seconds(attempts):
    """10, 20, 40 ... seconds after the 1st, 2nd, 3rd failure; at most 15 minutes."""
    return min(10 * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


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
