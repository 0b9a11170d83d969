"""Webhook endpoints: an organisation's own system told of its alerts (see ``services.deliveries``
for the signed posts, their retries and the dead-letter list).

There are no hospital or agency administrators in MedPort: a center administrator registers an
endpoint for an organisation, picks the alert kinds it is told of (those of the organisation's
role) and hands its signing secret, shown once, to the organisation.
"""
import sqlalchemy as sa

from ..extensions import db
from ..models.center import WebhookEndpoint
from . import alerts, audit
from .deliveries import check_webhook_url, new_secret


class WebhookRefused(Exception):
    """An endpoint that cannot be registered: ``field`` and ``message`` for the form (400)."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field, self.message = field, message


def group_of_scope(scope):
    """The alert kinds' group of an organisation scope (``hospital:3`` → ``hospital``)."""
    kind = scope.partition(":")[0]
    return {"hospital": "hospital", "agency": "ems", "center": "center"}.get(kind)


def register(scope, url, kinds, user, ip=None, allow_loopback_http=False):
    """Register an endpoint of ``scope`` at ``url`` for ``kinds``; returns it (its ``secret``
    new).  Raises :class:`WebhookRefused` for an address that is not https:// (or loopback http
    when allowed) or a kind the organisation's users never get.  Audited; the caller commits."""
    group = group_of_scope(scope)
    if group is None:
        raise WebhookRefused("organisation", "Choose a listed organisation.")
    try:
        url = check_webhook_url(url, allow_loopback_http)
    except ValueError as problem:
        raise WebhookRefused("url", str(problem)) from None
    allowed = [kind for kind, _label in alerts.KINDS[group]]
    if not kinds:
        raise WebhookRefused("kinds", "Choose at least one kind of alert.")
    if set(kinds) - set(allowed):
        raise WebhookRefused("kinds", "Choose only kinds of alert this organisation's users get.")
    endpoint = WebhookEndpoint(scope=scope, url=url, kinds=",".join(k for k in allowed if k in kinds),
                               secret=new_secret(), created_by_user_id=user.id)
    db.session.add(endpoint)
    db.session.flush()
    audit.record("webhook.registered", user=user, ip=ip, entity_type="webhook", entity_id=endpoint.public_id,
                 after={"scope": scope, "url": url, "kinds": endpoint.kind_list})
    return endpoint


def remove(public_id, user, ip=None):
    """Stop an endpoint (kept, inactive, for its deliveries' record); None if unknown.  Audited."""
    endpoint = db.session.scalar(sa.select(WebhookEndpoint).where(WebhookEndpoint.public_id == public_id,
                                                                  WebhookEndpoint.active.is_(True)))
    if endpoint is None:
        return None
    endpoint.active = False
    audit.record("webhook.removed", user=user, ip=ip, entity_type="webhook", entity_id=public_id,
                 before={"scope": endpoint.scope, "url": endpoint.url})
    return endpoint


def endpoints():
    return db.session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.active.is_(True))
                              .order_by(WebhookEndpoint.id)).all()
