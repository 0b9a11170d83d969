"""The deliveries kept (``AlertDelivery``): their statuses, the failed try that moves one along
them, and what the center (or an organisation's administrator) lists and replays."""
import sqlalchemy as sa

from ...extensions import db
from ...models.base import utcnow
from ...models.center import AlertDelivery, WebhookEndpoint
from .. import paging
from ..refusals import Refused

STATUSES = ("pending", "retrying", "sent", "parked")
DUE = ("pending", "retrying")
#: Deliveries per page of the center's list.
PAGE_SIZE = 50


class DeliveryFailed(Exception):
    """A try that did not deliver; ``unreachable`` when the server could not be reached at all."""

    def __init__(self, message, unreachable=False):
        super().__init__(message)
        self.unreachable = unreachable


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
    return db.session.execute(query.values(status="retrying", attempts=0, next_attempt_at=utcnow(),
                                           claimed_until=None)
                              .execution_options(synchronize_session=False)).rowcount


def page(status=None, channel=None, scope=None, after=None, size=PAGE_SIZE):
    """One page of the deliveries, newest first, of a status and channel when given; with
    ``scope`` only the webhook deliveries of that organisation's endpoints.  Keyset-paged by id
    through :func:`..paging.keyset`: a :class:`..paging.Page` (``rows``, ``after`` the next
    page's cursor or None).  Raises :class:`..paging.CursorRefused` (400) for a cursor it did
    not make."""
    query = sa.select(AlertDelivery)
    if scope is not None:
        query = query.where(_of_scope(scope))
    if status:
        query = query.where(AlertDelivery.status == status)
    if channel:
        query = query.where(AlertDelivery.channel == channel)
    return paging.keyset(query, [AlertDelivery.id], after=after, size=size)


def counts(scope=None):
    """``{(channel, status): n}`` of every delivery kept (with ``scope``, of that organisation's
    webhook endpoints)."""
    query = sa.select(AlertDelivery.channel, AlertDelivery.status, sa.func.count(AlertDelivery.id))
    if scope is not None:
        query = query.where(_of_scope(scope))
    return {(c, s): n for c, s, n in db.session.execute(
        query.group_by(AlertDelivery.channel, AlertDelivery.status))}
