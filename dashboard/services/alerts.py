"""Alerts: what is worth telling each user, written by the relay into the center silo.

Two producers, both in the relay (never a page view):

* :func:`produce`, a step of every outbox event's delivery (after the center's record), so an
  alert comes from the same transaction as the change it reports and is never lost: a retried
  delivery skips it once written (the center's inbox);
* :func:`sweep`, the relay's timer, for what no event marks: bidding about to close with no
  bid, a crew late, a request at risk, an event parked, a silo down.  Each of those is keyed
  by its occasion, so a later sweep (or a second relay) does not repeat it.

Who hears what (kinds by role, :data:`KINDS`): an EMS user only of requests its agency may bid
on (level of care and invitation) or serves or bid on; a hospital user only of its hospital's
requests; coordinators and admins of the whole region.  Each user turns each kind on or off
(:func:`save_settings`); until they do, their organisation's default applies (set by a center
admin), else the kind is on.  An alert carries the request's public reference, level, urgency
and a link, never a patient reference or notes.
"""
import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app, has_request_context, url_for
from sqlalchemy.exc import IntegrityError

from ..config import SILOS
from ..events.hub import hub
from ..extensions import db
from ..models.base import CENTER_ROLES, LEVEL_RANK, LEVELS, URGENCIES, new_public_id, utcnow
from ..models.center import Agency, Alert, AlertDelivery, AlertSetting, Hospital, LiveSignal, User
from ..models.ems import TransportBid
from ..models.hospital import TransportRequest
from ..models.hospital import TransportRequest as T
from ..models.outbox import OUTBOX_BY_SILO
from . import bidding, configuration, deliveries, escalation, lateness, oversight, silos
from .refusals import Refused

log = logging.getLogger("medport.relay")

#: role group -> [(kind, label)]; coordinators and admins share the ``center`` group.
KINDS = {
    "ems": [
        ("ems.new_request", "A new request my agency may bid on"),
        ("ems.bid_awarded", "Our bid awarded (or a unit of ours assigned by the center)"),
        ("ems.bid_not_awarded", "Our bid not awarded"),
        ("ems.trip_changed", "A request we serve changed or cancelled"),
    ],
    "hospital": [
        ("hospital.first_bid", "First bid on a request"),
        ("hospital.closing_no_bid", "Bidding closing with no bid"),
        ("hospital.center_award", "Award made by the transport center"),
        ("hospital.crew_en_route", "Crew en route"),
        ("hospital.crew_at_pickup", "Crew at pickup"),
        ("hospital.crew_late", "Crew late"),
        ("hospital.unfilled", "Request unfilled"),
    ],
    "center": [
        ("center.unfilled", "Request unfilled"),
        ("center.at_risk", "Request at risk"),
        ("center.parked", "Event parked (the relay gave up retrying it)"),
        ("center.silo_down", "Silo down"),
    ],
}
KIND_LABELS = {kind: label for kinds in KINDS.values() for kind, label in kinds}
ALL_KINDS = tuple(KIND_LABELS)
#: The kind whose alerts an EMS user may narrow by level of care and urgency.
NEW_REQUEST = "ems.new_request"
#: Not a kind of alert: the setting "alert emails as an hourly digest".
DIGEST = "mail.digest"
#: Risk marks (:func:`dashboard.services.oversight.risk_marks`) that raise a center alert.
RISK_CODES = ("no_bids", "late", "pickup", "awaiting_award", "reassign")
#: Those that also start the escalation ladder (a window about to close is the board's to watch).
LADDER_RISK_CODES = ("no_bids", "late", "awaiting_award", "reassign")
#: How far back the timer looks for late and at-risk requests.
SWEEP_HORIZON = timedelta(hours=12)
SWEEP_LIMIT = 500


def group_of(role):
    """The kinds' group of a role: ``ems``, ``hospital`` or ``center``."""
    return "center" if role in CENTER_ROLES else role


def kinds_for(role):
    """``[(kind, label)]`` a user of ``role`` may receive."""
    return KINDS[group_of(role)]


# --- settings ---------------------------------------------------------------------------

def user_scope(user_id):
    return f"user:{user_id}"


def org_scope(role, hospital_id=None, agency_id=None):
    """The default scope of a role's organisation: ``hospital:<id>``, ``agency:<id>`` or ``center``."""
    if role == "hospital":
        return f"hospital:{hospital_id}"
    if role == "ems":
        return f"agency:{agency_id}"
    return "center"


def _csv(values, allowed):
    return ",".join(v for v in allowed if v in set(values or ()))


def _split(text):
    return [v for v in (text or "").split(",") if v]


class Choice:
    """What a scope says of one kind: ``enabled``, ``email`` (also by email), ``levels`` and
    ``urgencies`` (lists, empty for all), and ``source``: ``user``, ``organisation`` or
    ``default`` (on, not by email)."""

    __slots__ = ("kind", "enabled", "email", "levels", "urgencies", "source")

    def __init__(self, kind, enabled=True, levels=(), urgencies=(), source="default", email=False):
        self.kind, self.enabled, self.source, self.email = kind, enabled, source, email
        self.levels, self.urgencies = list(levels), list(urgencies)

    def wants(self, level=None, urgency=None):
        """Whether an alert of this kind about a request of ``level`` and ``urgency`` is wanted."""
        if not self.enabled:
            return False
        if level and self.levels and level not in self.levels:
            return False
        return not (urgency and self.urgencies and urgency not in self.urgencies)


def _rows(scopes, kinds):
    if not scopes:
        return {}
    rows = db.session.scalars(sa.select(AlertSetting).where(
        AlertSetting.scope.in_(sorted(set(scopes))), AlertSetting.kind.in_(sorted(set(kinds)))))
    return {(row.scope, row.kind): row for row in rows}


def _choice(kind, rows, scopes):
    for scope, source in scopes:
        row = rows.get((scope, kind))
        if row is not None:
            return Choice(kind, row.enabled, _split(row.levels), _split(row.urgencies), source, row.email)
    return Choice(kind)


def choices_for(user):
    """``{kind: Choice}`` of every kind ``user`` may receive (its own, else its organisation's),
    and of :data:`DIGEST` (enabled: alert emails come as an hourly digest)."""
    kinds = [kind for kind, _label in kinds_for(user.role)] + [DIGEST]
    scopes = [(user_scope(user.id), "user"),
              (org_scope(user.role, user.hospital_id, user.agency_id), "organisation")]
    rows = _rows([s for s, _ in scopes], kinds)
    return {kind: _choice(kind, rows, scopes) for kind in kinds}


def scope_choices(scope, role_group):
    """``{kind: Choice}`` stored for one scope (an organisation's defaults), "on" where none is."""
    kinds = [kind for kind, _label in KINDS[role_group]] + [DIGEST]
    rows = _rows([scope], kinds)
    return {kind: _choice(kind, rows, [(scope, "organisation")]) for kind in kinds}


class SettingsRefused(Refused):
    """Settings that cannot be saved; ``message`` says why (400)."""

    status = 400


def save_settings(scope, role_group, enabled_kinds, levels=(), urgencies=(), user_id=None,
                  email_kinds=(), digest=False):
    """Store, for ``scope``, which of ``role_group``'s kinds are on (and which of those also by
    email), for the EMS new-request kind the ``levels`` and ``urgencies`` wanted (none chosen:
    all), and whether alert emails come as an hourly ``digest``.  Every kind of the group gets a
    row, so what is saved holds whatever the organisation's default becomes.  Raises
    :class:`SettingsRefused` for an unknown kind, level or urgency.  The caller commits."""
    allowed = [kind for kind, _label in KINDS[role_group]]
    unknown = (set(enabled_kinds) | set(email_kinds)) - set(allowed)
    if unknown:
        raise SettingsRefused("Unknown alert kind.")
    if set(levels) - set(LEVELS) or set(urgencies) - set(URGENCIES):
        raise SettingsRefused("Choose levels of care and urgencies from the lists.")
    rows = _rows([scope], allowed)
    for kind in allowed:
        row = rows.get((scope, kind))
        if row is None:
            row = AlertSetting(scope=scope, kind=kind)
            db.session.add(row)
        row.enabled = kind in enabled_kinds
        row.email = kind in enabled_kinds and kind in email_kinds
        row.levels = _csv(levels, LEVELS) if kind == NEW_REQUEST else ""
        row.urgencies = _csv(urgencies, URGENCIES) if kind == NEW_REQUEST else ""
        row.updated_by_user_id = user_id
    row = _rows([scope], [DIGEST]).get((scope, DIGEST))
    if row is None:
        row = AlertSetting(scope=scope, kind=DIGEST)
        db.session.add(row)
    row.enabled, row.updated_by_user_id = bool(digest), user_id
    return allowed


def clear_user_settings(user_id):
    """Drop a user's own settings: their organisation's defaults apply again.  The caller commits."""
    db.session.execute(sa.delete(AlertSetting).where(AlertSetting.scope == user_scope(user_id))
                       .execution_options(synchronize_session=False))


# --- recipients -----------------------------------------------------------------------

def _users(condition):
    return list(db.session.scalars(sa.select(User).where(User.active.is_(True), condition)
                                   .order_by(User.id)))


def hospital_users(hospital_id):
    if hospital_id is None:
        return []
    active = sa.select(Hospital.id).where(Hospital.id == hospital_id, Hospital.active.is_(True))
    return _users(sa.and_(User.role == "hospital", User.hospital_id.in_(active)))


def agency_users(agency_ids):
    ids = sorted({i for i in agency_ids if i})
    if not ids:
        return []
    active = sa.select(Agency.id).where(Agency.id.in_(ids), Agency.active.is_(True))
    return _users(sa.and_(User.role == "ems", User.agency_id.in_(active)))


def center_users(roles=CENTER_ROLES):
    return _users(User.role.in_(roles))


def eligible_agencies(level, only=None, excluding=()):
    """Active agencies with ``level`` of care or higher (among ``only`` when given), less ``excluding``."""
    ids = set()
    for agency in db.session.scalars(sa.select(Agency).where(Agency.active.is_(True))):
        if only is not None and agency.id not in only:
            continue
        if agency.id in excluding:
            continue
        if any(LEVEL_RANK[lv] >= LEVEL_RANK[level] for lv in agency.level_list if lv in LEVEL_RANK):
            ids.add(agency.id)
    return ids


# --- writing alerts -------------------------------------------------------------------

def _path(endpoint, **values):
    if has_request_context():
        return url_for(endpoint, **values)
    with current_app.test_request_context():
        return url_for(endpoint, **values)


def trip_link(role, public_id):
    """The request's page for ``role`` (a path)."""
    endpoint = {"hospital": "hospital.request_detail", "ems": "ems.request_detail"}.get(
        role, "center.request_detail")
    return _path(endpoint, public_id=public_id)


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
    delivery of it (:func:`dashboard.services.deliveries.queue_webhooks`).  ``level`` and ``urgency`` are what the EMS
    new-request settings narrow by; ``force`` sends it, by email too, whatever the settings say
    (a step of the escalation ladder).  The caller commits.  Returns the alerts added.
    """
    if not users:
        return []
    kinds_scopes = []
    for user in users:
        kinds_scopes += [user_scope(user.id), org_scope(user.role, user.hospital_id, user.agency_id)]
    rows = _rows(kinds_scopes, [kind])
    already = set(db.session.scalars(sa.select(Alert.user_id).where(
        Alert.key == key, Alert.user_id.in_([u.id for u in users]))))
    added = []
    mail = deliveries.mail_enabled()
    details = dict(details or {}, **{k: v for k, v in (("level_of_care", level), ("urgency", urgency)) if v})
    for user in users:
        if user.id in already or kind not in dict(kinds_for(user.role)):
            continue
        scopes = [(user_scope(user.id), "user"),
                  (org_scope(user.role, user.hospital_id, user.agency_id), "organisation")]
        choice = _choice(kind, rows, scopes)
        if not force and not choice.wants(level, urgency):
            continue
        alert = Alert(public_id=new_public_id(), user_id=user.id, kind=kind, key=key[:160],
                      reference=reference[:64], title=title[:200],
                      link=(link_of(user) if link_of else "")[:300], details=details,
                      mail_pending=mail and (force or choice.email), created_at=now or utcnow())
        added.append(alert)
    db.session.add_all(added)
    db.session.add_all([LiveSignal(name="alert", entity_id=alert.public_id, user_id=alert.user_id,
                                   agency_ids="") for alert in added])
    sample = users[0]
    path = link_of(sample) if link_of else ""
    deliveries.queue_webhooks(kind, key, {org_scope(u.role, u.hospital_id, u.agency_id) for u in users}, dict(
        details, title=title, reference=reference,
        link=current_app.config["MEDPORT_BASE_URL"] + path if path else ""))
    return added


def _trip_alert(users, kind, key, title, facts, now=None):
    public_id = facts.get("public_id") or ""
    window = {k: facts[k] for k in ("window_start", "window_end") if facts.get(k)}
    links = {}

    def link_of(user):  # one path per role
        if user.role not in links:
            links[user.role] = trip_link(user.role, public_id) if public_id else ""
        return links[user.role]

    return notify(users, kind, key, title, reference=facts.get("reference") or "", link_of=link_of,
                  level=facts.get("level_of_care"), urgency=facts.get("urgency"), now=now, details=window)


# --- from events (a relay step) --------------------------------------------------------

def produce(event):
    """The alerts an outbox event raises, added to the center session (the relay commits them
    with the event's inbox record).  Reads the hospital and EMS silos where the payload does not
    say enough (a bid's request, a request's other bidders); a silo that cannot be read fails
    the step, which the relay retries."""
    p = event.payload or {}
    key = f"{event.event_id}"
    if event.silo == "hospital" and event.entity_type == "trip":
        _from_trip_event(event, p, key)
    elif event.silo == "ems" and event.type == "bid.placed":
        _first_bid(event, p, key)


#: Events after which agencies may bid on a request they could not bid on before: its posting
#: (unless booked ahead or a will-call return waiting for its patient), the opening of one
#: booked ahead, the release of a will-call return, and its reopening.
_NEW_TO_AGENCIES = ("trip.posted", "trip.bidding_opened", "trip.released", "trip.reopened",
                    "trip.handed_back", "trip.invite_widened")
#: Of those, the ones where bidding opens for the first time ("New", not "Open again").
_FIRST_OPENING = ("trip.posted", "trip.bidding_opened", "trip.released")


def _not_biddable_at(p, at):
    """Whether the trip of payload ``p`` took no bids at ``at``: booked ahead and not open yet,
    or a will-call return still waiting for its patient (a read of the hospital silo); it is
    announced to the agencies when bidding opens (``trip.bidding_opened``, ``trip.released``)."""
    trip = db.session.get(TransportRequest, p["trip_id"])
    if trip is None:
        return False
    if trip.will_call and (trip.released_at is None or trip.released_at > at):
        return True
    return trip.bidding_opens_at is not None and trip.bidding_opens_at > at


def _from_trip_event(event, p, key):
    ref, level = p.get("reference") or "", p.get("level_of_care")
    what = describe(p)
    if event.type in _NEW_TO_AGENCIES and level:
        if event.type == "trip.posted" and _not_biddable_at(p, event.created_at):
            return
        only = None
        if event.type != "trip.invite_widened" and bidding.invites_preferred_only(p, event.created_at):
            only = set(p.get("invited_agency_ids") or [])
        excluding = set()
        if event.type == "trip.invite_widened":
            excluding = set(p.get("invited_agency_ids") or [])
        released = (p.get("released") or {}).get("agency_id")
        if released:
            excluding.add(released)
        word = "New" if event.type in _FIRST_OPENING else "Open again:"
        _trip_alert(agency_users(eligible_agencies(level, only, excluding)), NEW_REQUEST,
                    f"{key}:{NEW_REQUEST}", f"{word} {what} request {ref}", p)
    elif event.type == "trip.awarded":
        awarded = p.get("awarded_agency_id")
        _trip_alert(agency_users([awarded]), "ems.bid_awarded", f"{key}:ems.bid_awarded",
                    f"Awarded to us: {ref} ({what})", p)
        _trip_alert(agency_users(_other_bidders(p["trip_id"], awarded)), "ems.bid_not_awarded",
                    f"{key}:ems.bid_not_awarded", f"Not awarded to us: {ref}", p)
        if p.get("source") == "center":
            _trip_alert(hospital_users(p.get("hospital_id")), "hospital.center_award",
                        f"{key}:hospital.center_award", f"The transport center awarded {ref}", p)
    elif event.type in ("trip.changed", "trip.cancelled"):
        if p.get("awarded_agency_id") and (event.type == "trip.cancelled" or p.get("status") != "open"):
            verb = "Cancelled" if event.type == "trip.cancelled" else "Changed"
            _trip_alert(agency_users([p["awarded_agency_id"]]), "ems.trip_changed",
                        f"{key}:ems.trip_changed", f"{verb}: {ref}, which we serve", p)
    elif event.type == "trip.status_changed" and not p.get("undone_step"):
        kind = {"en_route": "hospital.crew_en_route", "at_pickup": "hospital.crew_at_pickup"}.get(
            p.get("status"))
        if kind:
            words = "Crew en route" if p["status"] == "en_route" else "Crew at pickup"
            _trip_alert(hospital_users(p.get("hospital_id")), kind, f"{key}:{kind}", f"{words}: {ref}", p)
    elif event.type == "trip.unfilled":
        _trip_alert(hospital_users(p.get("hospital_id")), "hospital.unfilled", f"{key}:hospital.unfilled",
                    f"Unfilled: {ref} ({what}), no agency bid", p)
        _trip_alert(center_users(), "center.unfilled", f"{key}:center.unfilled",
                    f"Unfilled: {ref} ({what})", p)

        escalation.start("unfilled", p, event.created_at)


def _other_bidders(trip_id, awarded_agency_id):
    return set(db.session.scalars(sa.select(TransportBid.agency_id).distinct().where(
        TransportBid.trip_id == trip_id, TransportBid.agency_id != (awarded_agency_id or 0))))


def _first_bid(event, p, key):
    earlier = db.session.scalar(sa.select(TransportBid.id).where(
        TransportBid.trip_id == p["trip_id"], TransportBid.id < p["bid_id"]).limit(1))
    if earlier is not None:
        return
    trip = db.session.get(TransportRequest, p["trip_id"])
    if trip is None:
        return
    facts = _facts(trip)
    eta = f", ETA {p['eta_minutes']} min" if p.get("eta_minutes") is not None else ""
    _trip_alert(hospital_users(trip.hospital_id), "hospital.first_bid", f"{key}:hospital.first_bid",
                f"First bid on {trip.reference}{eta}", facts)


# --- from the timer ----------------------------------------------------------------------

def sweep(now=None):
    """The relay timer's alerts (see the module's description); each part on its own, so a silo
    down skips only what needs it.  Returns how many alerts were added."""
    now = now or utcnow()
    added = 0
    for part in (_closing_no_bid, _late_and_at_risk, _parked, _silos_down):
        try:
            added += len(part(now))
            db.session.commit()
        except IntegrityError:
            db.session.rollback()  # another relay wrote the same alerts first
        except Exception as exc:  # a silo down: this part waits for the next sweep
            db.session.rollback()
            log.warning("alerts: %s skipped: %s", part.__name__, type(exc).__name__)
    if added:
        hub.poke()
    return added


def _facts(trip):
    return {"public_id": trip.public_id, "reference": trip.reference,
            "level_of_care": trip.level_of_care, "urgency": trip.urgency,
            "window_start": trip.window_start.isoformat(), "window_end": trip.window_end.isoformat()}


def _closing_no_bid(now):
    closing = configuration.get("alert_closing_minutes")
    db.session.commit()
    trips = list(db.session.scalars(sa.select(T).where(
        T.status == "open", T.bid_count == 0, T.bid_deadline > now,
        T.bid_deadline <= now + timedelta(minutes=closing),
        # taking bids: not booked ahead before its opening, nor a will-call waiting for its patient
        sa.or_(T.bidding_opens_at.is_(None), T.bidding_opens_at <= now),
        sa.or_(T.will_call.is_(False), T.released_at.is_not(None))).limit(SWEEP_LIMIT)))
    db.session.commit()
    added = []
    for trip in trips:
        minutes = max(int((trip.bid_deadline - now).total_seconds() // 60), 0)
        added += _trip_alert(hospital_users(trip.hospital_id), "hospital.closing_no_bid",
                             f"closing:{trip.public_id}:{trip.bid_deadline.isoformat()}",
                             f"Bidding closes in {minutes} min with no bid: {trip.reference}",
                             _facts(trip), now)
    return added


def _late_and_at_risk(now):
    settings = configuration.get_all()
    db.session.commit()
    trips = list(db.session.scalars(sa.select(T).where(
        T.status.in_(("open", "awarded", "en_route", "at_pickup", "transporting")),
        T.window_end >= now - SWEEP_HORIZON,
        T.window_start <= now + SWEEP_HORIZON).order_by(T.window_start).limit(SWEEP_LIMIT)))
    db.session.commit()
    agencies = {a.id: a for a in db.session.scalars(sa.select(Agency))}
    added = []
    center = None
    for trip in trips:
        late = lateness.of_trip(trip, now)  # the one rule, with the crew's configured bounds
        if late is not None and trip.status != "open":  # an open trip has no crew to be late
            added += _trip_alert(hospital_users(trip.hospital_id), "hospital.crew_late",
                                 f"late:{trip.public_id}:{late.code}:{late.since.isoformat()}",
                                 f"{late.label}: {trip.reference}", _facts(trip), now)
        marks = [(code, label) for code, label in oversight.risk_marks(trip, now, settings, agencies)
                 if code in RISK_CODES]
        for code, label in marks:
            center = center if center is not None else center_users()
            added += _trip_alert(center, "center.at_risk", f"risk:{trip.public_id}:{code}",
                                 f"At risk: {trip.reference}: {label}", _facts(trip), now)
        ladder = sorted(code for code, _label in marks if code in LADDER_RISK_CODES)
        if ladder:
            escalation.start("at_risk", dict(_facts(trip), trip_id=trip.id), now, occasion=",".join(ladder))
    return added


def _parked(now):
    added, center = [], None
    for silo in SILOS:
        model = OUTBOX_BY_SILO[silo]
        try:
            rows = db.session.execute(sa.select(model.event_id, model.type).where(
                model.status == "parked").order_by(model.id).limit(SWEEP_LIMIT)).all()
            db.session.commit()
        except Exception:
            db.session.rollback()
            continue
        for event_id, type_ in rows:
            center = center if center is not None else center_users()
            added += notify(center, "center.parked", f"parked:{silo}:{event_id}",
                            f"Event parked in the {silo} silo: {type_}", reference=silo,
                            link_of=lambda _user: _path("center.health"), now=now)
    return added


def _silos_down(now):
    added = []
    for silo in ("hospital", "ems"):
        try:
            with silos.engine(silo).connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            continue
        except Exception as exc:
            if not silos.is_unreachable(exc):
                continue
        # Once an hour per silo while it stays down.
        added += notify(center_users(), "center.silo_down", f"silo_down:{silo}:{now:%Y-%m-%dT%H}",
                        f"The {silo} silo cannot be reached", reference=silo,
                        link_of=lambda _user: _path("center.health"), now=now)
    return added


# --- reading and marking ----------------------------------------------------------------

def unread_count(user_id):
    return db.session.scalar(sa.select(sa.func.count(Alert.id)).where(
        Alert.user_id == user_id, Alert.read_at.is_(None))) or 0


def recent(user_id, limit=50, after_id=None):
    """The user's newest alerts (or those after ``after_id``, oldest first), at most ``limit``."""
    query = sa.select(Alert).where(Alert.user_id == user_id)
    if after_id is not None:
        return list(db.session.scalars(query.where(Alert.id > after_id).order_by(Alert.id).limit(limit)))
    return list(db.session.scalars(query.order_by(Alert.id.desc()).limit(limit)))


def own_alert(user_id, public_id):
    """The user's alert with ``public_id``, or None (another user's is not found)."""
    return db.session.scalar(sa.select(Alert).where(Alert.public_id == public_id, Alert.user_id == user_id))


def mark_read(user_id, public_id=None, now=None):
    """Mark one alert (or all) of the user read; returns how many changed.  The caller commits."""
    query = sa.update(Alert).where(Alert.user_id == user_id, Alert.read_at.is_(None))
    if public_id is not None:
        query = query.where(Alert.public_id == public_id)
    return db.session.execute(query.values(read_at=now or utcnow())
                              .execution_options(synchronize_session=False)).rowcount


#: Alerts older than this are deleted, read or not; so are sent deliveries older than
#: :data:`DELIVERY_RETENTION` (parked and waiting ones stay until replayed or sent).
ALERT_RETENTION = timedelta(days=90)
DELIVERY_RETENTION = timedelta(days=30)
PRUNE_BATCH = 5000


def prune(now=None):
    """Delete old alerts and old sent deliveries, at most ``PRUNE_BATCH`` each; returns how many.
    Commits."""
    now = now or utcnow()
    count = 0
    for model, old in ((Alert, [Alert.created_at < now - ALERT_RETENTION]),
                       (AlertDelivery, [AlertDelivery.status == "sent",
                                        AlertDelivery.created_at < now - DELIVERY_RETENTION])):
        batch = sa.select(model.id).where(*old).limit(PRUNE_BATCH).scalar_subquery()
        count += db.session.execute(sa.delete(model).where(model.id.in_(batch))
                                    .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count
