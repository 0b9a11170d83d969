"""Webhook endpoints: an organisation's own system told of its alerts (see ``services.deliveries``
for the signed posts, their retries and the dead-letter list).

A center administrator registers an endpoint for any organisation and hands its signing secret,
shown once, to it; a hospital's or agency's own administrator (``User.org_admin``) registers,
lists and removes its own organisation's endpoints only (``scope`` below).  Either picks the alert
kinds it is told of, those of the organisation's role.
"""
import sqlalchemy as sa

from ..extensions import db
from ..models.center import WebhookEndpoint
from . import audit
from .alerts.kinds import KINDS
from .deliveries.webhook_posts import check_webhook_url, new_secret
from .refusals import Refused


class WebhookRefused(Refused):
    """An endpoint that cannot be registered: ``field`` and ``message`` for the form (400)."""

    def __init__(self, field, message):
        super().__init__(message, 400, field)


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
    allowed = [kind for kind, _label in KINDS[group]]
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


def remove(public_id, user, ip=None, scope=None):
    """Stop an endpoint (kept, inactive, for its deliveries' record); None if unknown (or, with
    ``scope``, of another organisation).  Audited."""
    query = sa.select(WebhookEndpoint).where(WebhookEndpoint.public_id == public_id,
                                             WebhookEndpoint.active.is_(True))
    if scope is not None:
        query = query.where(WebhookEndpoint.scope == scope)
    endpoint = db.session.scalar(query)
    if endpoint is None:
        return None
    endpoint.active = False
    audit.record("webhook.removed", user=user, ip=ip, entity_type="webhook", entity_id=public_id,
                 before={"scope": endpoint.scope, "url": endpoint.url})
    return endpoint


def remove_or_refuse(public_id, user, ip=None, scope=None):
    """:func:`remove`, refusing an unknown endpoint: returns the endpoint stopped.

    Raises :class:`Refused` (404) when there is no such active endpoint (or, with ``scope``, it
    is another organisation's).  Audited; the caller commits."""
    endpoint = remove(public_id, user, ip, scope=scope)
    if endpoint is None:
        raise Refused("No such webhook endpoint.", 404)
    return endpoint


def endpoints(scope=None):
    """The active endpoints, oldest first; with ``scope`` (``hospital:<id>``, ``agency:<id>``)
    only that organisation's."""
    query = sa.select(WebhookEndpoint).where(WebhookEndpoint.active.is_(True))
    if scope is not None:
        query = query.where(WebhookEndpoint.scope == scope)
    return db.session.scalars(query.order_by(WebhookEndpoint.id)).all()
