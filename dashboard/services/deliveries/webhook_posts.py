"""Webhook deliveries: an organisation's endpoint (``https://``) gets one per alert occasion of a
kind it asked for, its body signed per Standard Webhooks (the ``standardwebhooks`` package)."""
import base64
import json
import secrets
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import urlsplit

import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from ...extensions import db
from ...models.base import new_public_id, utcnow
from ...models.center import AlertDelivery, WebhookEndpoint
from .records import DeliveryFailed

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
