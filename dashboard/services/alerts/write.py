"""Writing alerts: one per user who wants it, with its live signal and its organisations'
webhook deliveries; the request's link and facts an alert carries."""
import sqlalchemy as sa
from flask import current_app, has_request_context, url_for

from ...extensions import db
from ...models.base import new_public_id, utcnow
from ...models.center import Alert, LiveSignal
from ...models.vocabulary import URGENCIES
from ..deliveries import mail, webhook_posts
from .kinds import kinds_for
from .settings import choice_from, org_scope, setting_rows, user_scope


def page_path(endpoint, **values):
    """The path of ``endpoint`` (a page of this app), in a request or out of one (the relay)."""
    if has_request_context():
        return url_for(endpoint, **values)
    with current_app.test_request_context():
        return url_for(endpoint, **values)


def trip_link(role, public_id):
    """The request's page for ``role`` (a path)."""
    endpoint = {"hospital": "hospital.request_detail", "ems": "ems.request_detail"}.get(
        role, "center.request_detail")
    return page_path(endpoint, public_id=public_id)


def describe(facts):
    """"BLS, urgent" of a request's facts (``level_of_care``, ``urgency``)."""
    parts = [facts.get("level_of_care") or "", URGENCIES.get(facts.get("urgency"), "").lower()]
    return ", ".join(p for p in parts if p)


def notify(users, kind, key, title, reference="", link_of=None, level=None, urgency=None, now=None,
           force=False, details=None):
    """Add one alert of ``kind`` for each user in ``users`` who wants it, and its live signal.

    ``link_of(user)`` gives the item's path for that user; ``key`` makes the alert once per
    user (an existing one is left alone).  ``details`` (level of care, urgency, pickup window)
    is what an email about it adds.  An alert the user wants by email waits for the sender
    (``mail_pending``); the organisations of ``users`` with a webhook for ``kind`` get a
    delivery of it (:func:`dashboard.services.deliveries.webhook_posts.queue_webhooks`).
    ``level`` and ``urgency`` are what the EMS new-request settings narrow by; ``force`` sends it, by email too, whatever the settings say
    (a step of the escalation ladder).  The caller commits.  Returns the alerts added.
    """
    if not users:
        return []
    kinds_scopes = []
    for user in users:
        kinds_scopes += [user_scope(user.id), org_scope(user.role, user.hospital_id, user.agency_id)]
    rows = setting_rows(kinds_scopes, [kind])
    already = set(db.session.scalars(sa.select(Alert.user_id).where(
        Alert.key == key, Alert.user_id.in_([u.id for u in users]))))
    added = []
    by_mail = mail.mail_enabled()
    details = dict(details or {}, **{k: v for k, v in (("level_of_care", level), ("urgency", urgency)) if v})
    for user in users:
        if user.id in already or kind not in dict(kinds_for(user.role)):
            continue
        scopes = [(user_scope(user.id), "user"),
                  (org_scope(user.role, user.hospital_id, user.agency_id), "organisation")]
        choice = choice_from(kind, rows, scopes)
        if not force and not choice.wants(level, urgency):
            continue
        alert = Alert(public_id=new_public_id(), user_id=user.id, kind=kind, key=key[:160],
                      reference=reference[:64], title=title[:200],
                      link=(link_of(user) if link_of else "")[:300], details=details,
                      mail_pending=by_mail and (force or choice.email), created_at=now or utcnow())
        added.append(alert)
    db.session.add_all(added)
    db.session.add_all([LiveSignal(name="alert", entity_id=alert.public_id, user_id=alert.user_id,
                                   agency_ids="") for alert in added])
    sample = users[0]
    path = link_of(sample) if link_of else ""
    webhook_posts.queue_webhooks(kind, key, {org_scope(u.role, u.hospital_id, u.agency_id) for u in users}, dict(
        details, title=title, reference=reference,
        link=current_app.config["MEDPORT_BASE_URL"] + path if path else ""))
    return added


def trip_alert(users, kind, key, title, facts, now=None):
    """:func:`notify` of a request's ``facts`` (:func:`trip_facts`): linked to its page for each
    role, narrowed by its level and urgency, its pickup window in the details."""
    public_id = facts.get("public_id") or ""
    window = {k: facts[k] for k in ("window_start", "window_end") if facts.get(k)}
    links = {}

    def link_of(user):  # one path per role
        if user.role not in links:
            links[user.role] = trip_link(user.role, public_id) if public_id else ""
        return links[user.role]

    return notify(users, kind, key, title, reference=facts.get("reference") or "", link_of=link_of,
                  level=facts.get("level_of_care"), urgency=facts.get("urgency"), now=now, details=window)


def trip_facts(trip):
    """What an alert tells of a request: public id, reference, level of care, urgency, window (ISO)."""
    return {"public_id": trip.public_id, "reference": trip.reference,
            "level_of_care": trip.level_of_care, "urgency": trip.urgency,
            "window_start": trip.window_start.isoformat(), "window_end": trip.window_end.isoformat()}
