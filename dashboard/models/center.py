"""The ``center`` silo: accounts, registry, configuration, health, analytics, audit."""
import sqlalchemy as sa
from flask_login import UserMixin

from .. import hashing
from ..extensions import db
from .base import JSONText, SubmissionMixin, new_public_id, utcnow
from .vocabulary import CENTER_ROLES


class User(UserMixin, db.Model):
    """Every account of every role.  Hospital, EMS and crew users are bound to one organisation
    (a crew member to the agency whose units they staff)."""

    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint(
            "role IN ('hospital', 'ems', 'crew', 'coordinator', 'admin')", name="role_known"
        ),
        sa.CheckConstraint(
            "(role <> 'hospital' OR hospital_id IS NOT NULL) AND "
            "(role <> 'ems' OR agency_id IS NOT NULL) AND "
            "(role <> 'crew' OR agency_id IS NOT NULL)",
            name="role_bound",
        ),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    email = sa.Column(sa.String(254), nullable=False, unique=True)
    display_name = sa.Column(sa.String(120), nullable=False)
    password_hash = sa.Column(sa.String(256), nullable=False)
    role = sa.Column(sa.String(20), nullable=False)
    hospital_id = sa.Column(sa.Integer, sa.ForeignKey("hospitals.id"), index=True)
    agency_id = sa.Column(sa.Integer, sa.ForeignKey("agencies.id"), index=True)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    must_change_password = sa.Column(sa.Boolean, nullable=False, default=False)
    #: A hospital or EMS user who also runs their own organisation's alert defaults and webhooks
    #: (and, for an agency, its crew accounts); set by a center administrator.
    org_admin = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    # Bumped on deactivation and password reset: every older session ends.
    session_epoch = sa.Column(sa.Integer, nullable=False, default=0)
    last_login_at = sa.Column(sa.DateTime)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow)

    hospital = db.relationship("Hospital")
    agency = db.relationship("Agency")

    @property
    def is_active(self):
        return bool(self.active)

    #: The server-side session this user object was loaded for (set at sign-in or by the loader).
    session_token = None

    def get_id(self):
        """Session identity: public id, epoch and server-side session token.

        An epoch bump ends every session of the user; revoking the token ends one.
        """
        return f"{self.public_id}:{self.session_epoch}:{self.session_token or ''}"

    def set_password(self, password):
        """Store a current hash of ``password`` (:func:`dashboard.hashing.hash_password`: Argon2id,
        in the worker's hash pool); raises :class:`dashboard.hashing.HashingBusy` when no slot came
        free in time.  The caller commits."""
        self.password_hash = hashing.hash_password(password)

    def check_password(self, password):
        """Whether ``password`` matches the stored hash, of any scheme it may be in
        (:func:`dashboard.hashing.check_password`); stores nothing.  Raises
        :class:`dashboard.hashing.HashingBusy` when no slot came free in time."""
        return hashing.check_password(self.password_hash, password).ok

    @property
    def is_center(self):
        return self.role in CENTER_ROLES

    @property
    def is_admin(self):
        return self.role == "admin"

    @property
    def is_org_admin(self):
        """A hospital or EMS user marked as their organisation's administrator."""
        return bool(self.org_admin) and self.role in ("hospital", "ems")

    @property
    def home_endpoint(self):
        return {
            "hospital": "hospital.dashboard",
            "ems": "ems.board",
            "crew": "crew.home",
            "coordinator": "center.board",
            "admin": "center.board",
        }[self.role]


class UserSession(db.Model):
    """A signed-in browser session; sign-out revokes it, so a copied cookie stops working."""

    __tablename__ = "user_sessions"
    __table_args__ = (sa.Index("ix_user_sessions_user_revoked", "user_id", "revoked_at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    token = sa.Column(sa.String(64), nullable=False, unique=True)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("users.id"), nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    revoked_at = sa.Column(sa.DateTime)
    ip = sa.Column(sa.String(64))


class Hospital(db.Model):
    """A hospital organisation in the center's registry."""

    __tablename__ = "hospitals"

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    name = sa.Column(sa.String(160), nullable=False, unique=True)
    short_code = sa.Column(sa.String(12), nullable=False, unique=True)
    city = sa.Column(sa.String(80), nullable=False, default="")
    region = sa.Column(sa.String(80), nullable=False, default="")
    phone = sa.Column(sa.String(40), nullable=False, default="")
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Agency(db.Model):
    """An EMS agency in the center's registry, with what it can serve and where."""

    __tablename__ = "agencies"

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    name = sa.Column(sa.String(160), nullable=False, unique=True)
    short_code = sa.Column(sa.String(12), nullable=False, unique=True)
    # Comma-separated subset of BLS,ALS,CCT.
    levels = sa.Column(sa.String(20), nullable=False, default="BLS")
    service_area = sa.Column(sa.String(240), nullable=False, default="")
    base_lat = sa.Column(sa.Float)
    base_lon = sa.Column(sa.Float)
    service_radius_km = sa.Column(sa.Integer, nullable=False, default=80)
    phone = sa.Column(sa.String(40), nullable=False, default="")
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    @property
    def level_list(self):
        return [level for level in self.levels.split(",") if level]


class SystemConfiguration(db.Model):
    """One tunable value (deadline default, escalation thresholds, auto-award policy)."""

    __tablename__ = "system_configurations"

    id = sa.Column(sa.Integer, primary_key=True)
    key = sa.Column(sa.String(80), nullable=False, unique=True)
    value = sa.Column(JSONText, nullable=False)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_by_user_id = sa.Column(sa.Integer)


class ServiceRegistry(db.Model):
    """The last result of each silo's checks."""

    __tablename__ = "service_registry"

    id = sa.Column(sa.Integer, primary_key=True)
    silo = sa.Column(sa.String(20), nullable=False, unique=True)
    status = sa.Column(sa.String(12), nullable=False)
    latency_ms = sa.Column(sa.Float)
    detail = sa.Column(JSONText, nullable=False, default=dict)
    checked_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class DatabaseReference(db.Model):
    """Where each silo lives (dialect, host, database name; never credentials)."""

    __tablename__ = "database_references"

    id = sa.Column(sa.Integer, primary_key=True)
    silo = sa.Column(sa.String(20), nullable=False, unique=True)
    dialect = sa.Column(sa.String(20), nullable=False)
    host = sa.Column(sa.String(120), nullable=False, default="")
    database = sa.Column(sa.String(240), nullable=False)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


#: The counts an analytics cell keeps (integers; see :class:`AnalyticsCell`).
ANALYTICS_CELL_COUNTS = (
    ("requests", "awarded", "unfilled", "cancelled", "handed_back", "pickups", "inside", "early",
     "preferred_awards", "completed", "bid_awards",
     "late_1_15", "late_16_30", "late_31_60", "late_61_120", "late_over_120",
     "cancel_no_availability", "cancel_patient_not_stable", "cancel_not_needed", "cancel_other",
     "bids", "bids_1", "bids_2", "bids_3", "bids_4", "bids_5_plus")
    + tuple(f"hour_{h:02d}" for h in range(24))
)


class AnalyticsDay(db.Model):
    """A closed local day whose analytics cells are stored (a day with no requests has a row too)."""

    __tablename__ = "analytics_days"

    day = sa.Column(sa.Date, primary_key=True)
    requests = sa.Column(sa.Integer, nullable=False)
    computed_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class AnalyticsCell(db.Model):
    """The counts of one closed day's requests of one hospital, awarded agency, level and urgency.

    ``agency_id`` is 0 for requests never awarded.  Any filter combination of the
    analytics page is a sum over cells; bids per request are counted per request
    before they are summed (``bids_1`` ... ``bids_5_plus``: requests with that many).
    """

    __table__ = sa.Table(
        "analytics_cells", db.metadata,
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("hospital_id", sa.Integer, primary_key=True),
        sa.Column("agency_id", sa.Integer, primary_key=True),
        sa.Column("level_of_care", sa.String(3), primary_key=True),
        sa.Column("urgency", sa.String(10), primary_key=True),
        *[sa.Column(name, sa.Integer, nullable=False, default=0) for name in ANALYTICS_CELL_COUNTS],
    )


class AnalyticsUnitCell(db.Model):
    """Completed trips and busy minutes (award to completion) of a unit, per closed day and cell."""

    __tablename__ = "analytics_unit_cells"

    day = sa.Column(sa.Date, primary_key=True)
    hospital_id = sa.Column(sa.Integer, primary_key=True)
    agency_id = sa.Column(sa.Integer, primary_key=True)
    level_of_care = sa.Column(sa.String(3), primary_key=True)
    urgency = sa.Column(sa.String(10), primary_key=True)
    unit_id = sa.Column(sa.Integer, primary_key=True)
    trips = sa.Column(sa.Integer, nullable=False)
    busy_minutes = sa.Column(sa.Float, nullable=False)


class AnalyticsBidCell(db.Model):
    """Bids an agency placed on one closed day's requests of a hospital, level and urgency.

    Not keyed by the awarded agency: an agency's bids count on every request the
    other filters match, won or lost.
    """

    __tablename__ = "analytics_bid_cells"

    day = sa.Column(sa.Date, primary_key=True)
    hospital_id = sa.Column(sa.Integer, primary_key=True)
    level_of_care = sa.Column(sa.String(3), primary_key=True)
    urgency = sa.Column(sa.String(10), primary_key=True)
    agency_id = sa.Column(sa.Integer, primary_key=True)
    bids = sa.Column(sa.Integer, nullable=False)


class AuditLog(db.Model):
    """Who did what, when, from where.  Append-only: the app never edits or deletes rows."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        sa.Index("ix_audit_logs_entity", "entity_type", "entity_id"),
        sa.Index("ix_audit_logs_action_ip_created", "action", "ip", "created_at"),
        sa.Index("ix_audit_logs_action_email_created", "action", "user_email", "created_at"),
        sa.Index("ix_audit_logs_user_created", "user_id", "created_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
    user_id = sa.Column(sa.Integer)
    user_email = sa.Column(sa.String(254))
    action = sa.Column(sa.String(60), nullable=False)
    silo = sa.Column(sa.String(20), nullable=False, default="center")
    entity_type = sa.Column(sa.String(40))
    entity_id = sa.Column(sa.String(64))
    ip = sa.Column(sa.String(64))
    before = sa.Column(JSONText)
    after = sa.Column(JSONText)
    detail = sa.Column(sa.String(500))
    # The outbox event this entry records, so a retried delivery never doubles it.
    event_id = sa.Column(sa.String(36), unique=True)


class LiveSignal(db.Model):
    """A small signal for live pages, kept so a reconnecting stream can replay what it missed.

    ``hospital_id`` / ``agency_ids`` scope who may receive it; center roles
    receive everything.  ``agency_ids`` is a comma-wrapped list (",3,5,") or
    "*" for every agency.
    """

    __tablename__ = "live_signals"

    id = sa.Column(sa.Integer, primary_key=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
    name = sa.Column(sa.String(30), nullable=False)
    entity_id = sa.Column(sa.String(64), nullable=False)
    hospital_id = sa.Column(sa.Integer)
    agency_ids = sa.Column(sa.String(400), nullable=False, default="")
    # Set when the signal concerns one user only (e.g. their account changed).
    user_id = sa.Column(sa.Integer)
    # The units (EMS silo ids) a trip or unit signal concerns, comma-wrapped (",12,40,"): a
    # crew's stream passes on only its own unit's signals.
    unit_ids = sa.Column(sa.String(200), nullable=False, default="", server_default="")


class CenterSubmission(SubmissionMixin, db.Model):
    """A used one-time form token of the center silo."""

    __tablename__ = "center_submissions"


class Alert(db.Model):
    """One alert for one user: what happened to which item, when, and when the user read it.

    Written by the relay from outbox events (and by its timer for what no event marks: a
    bidding deadline near with no bid, a crew late, a request at risk, a parked event, a
    silo down).  ``key`` makes each alert once per user: the event id and kind, or the
    timer's occasion (the trip, its deadline or late step).  Holds no patient data: the
    request's public reference, level and urgency only.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "key", name="uq_alerts_user_key"),
        sa.Index("ix_alerts_user_read", "user_id", "read_at"),
        sa.Index("ix_alerts_mail_pending", "mail_pending", "user_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("users.id"), nullable=False)
    kind = sa.Column(sa.String(40), nullable=False)
    key = sa.Column(sa.String(160), nullable=False)
    #: The item's public reference (a request's ``ALT-261201-7KQ3``, a silo's name).
    reference = sa.Column(sa.String(64), nullable=False, default="")
    title = sa.Column(sa.String(200), nullable=False)
    #: Where the item is, a path of this site the recipient may open.
    link = sa.Column(sa.String(300), nullable=False, default="")
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
    read_at = sa.Column(sa.DateTime)
    #: What a message about it may say beside the title: level of care, urgency, pickup window.
    details = sa.Column(JSONText, nullable=False, default=dict)
    #: True while it waits to be mailed (the user wants this kind by email); the mail delivery
    #: that carries it once it is put in one.
    mail_pending = sa.Column(sa.Boolean, nullable=False, default=False)
    mail_delivery_id = sa.Column(sa.Integer)


class AlertSetting(db.Model):
    """Whether alerts of one kind are wanted, for one user or as an organisation's default.

    ``scope`` is ``user:<id>``, ``hospital:<id>``, ``agency:<id>`` or ``center`` (the
    coordinators' and admins' default).  ``levels`` and ``urgencies`` (comma lists, empty
    for all) narrow the EMS "new request" alert.  A user's own row wins over the default of
    their organisation, which wins over "on".
    """

    __tablename__ = "alert_settings"
    __table_args__ = (sa.UniqueConstraint("scope", "kind", name="uq_alert_settings_scope_kind"),)

    id = sa.Column(sa.Integer, primary_key=True)
    scope = sa.Column(sa.String(40), nullable=False)
    kind = sa.Column(sa.String(40), nullable=False)
    enabled = sa.Column(sa.Boolean, nullable=False, default=True)
    #: Also by email (when the kind is on).  For the kind ``mail.digest``, ``enabled`` means the
    #: user's alert emails come as one digest an hour rather than within the minute.
    email = sa.Column(sa.Boolean, nullable=False, default=False)
    levels = sa.Column(sa.String(20), nullable=False, default="")
    urgencies = sa.Column(sa.String(40), nullable=False, default="")
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow)
    updated_by_user_id = sa.Column(sa.Integer)


class AlertEscalation(db.Model):
    """A request unfilled or at risk climbing the escalation ladder until someone acknowledges it.

    ``step`` is the index of the ladder's last step alerted (the ladder is the center's
    ``escalation_ladder`` setting, step 0 the first alert to the center); ``next_at`` when the
    next step is due (None once the ladder's last step is alerted).  An acknowledgement records
    who and when and stops it; so does the request no longer needing it (``resolved_at``).
    """

    __tablename__ = "alert_escalations"
    __table_args__ = (sa.Index("ix_alert_escalations_open_next", "acknowledged_at", "next_at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    #: What started it, once: ``unfilled:<trip public id>:<deadline>`` or ``at_risk:...``.
    key = sa.Column(sa.String(160), nullable=False, unique=True)
    reason = sa.Column(sa.String(20), nullable=False)
    trip_public_id = sa.Column(sa.String(36), nullable=False, index=True)
    reference = sa.Column(sa.String(64), nullable=False)
    started_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    step = sa.Column(sa.Integer, nullable=False, default=0)
    next_at = sa.Column(sa.DateTime)
    acknowledged_at = sa.Column(sa.DateTime)
    acknowledged_by_user_id = sa.Column(sa.Integer)
    acknowledged_by = sa.Column(sa.String(254))
    #: Set when the request no longer needs it (awarded, cancelled, no longer at risk).
    resolved_at = sa.Column(sa.DateTime)


class WebhookEndpoint(db.Model):
    """An organisation's own system, told of its alerts by a signed JSON POST (Standard Webhooks).

    ``scope`` is the organisation (``hospital:<id>``, ``agency:<id>``, ``center``); ``kinds`` the
    alert kinds it asked for (comma list); ``secret`` the ``whsec_...`` signing secret, shown to
    the admin who registered it.
    """

    __tablename__ = "webhook_endpoints"

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    scope = sa.Column(sa.String(40), nullable=False, index=True)
    url = sa.Column(sa.String(500), nullable=False)
    kinds = sa.Column(sa.String(600), nullable=False, default="")
    secret = sa.Column(sa.String(100), nullable=False)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    created_by_user_id = sa.Column(sa.Integer)

    @property
    def kind_list(self):
        return [k for k in self.kinds.split(",") if k]


class AlertDelivery(db.Model):
    """One message to send, by email or webhook, with its own retries; the center sees them all.

    ``status``: ``pending`` (not tried yet), ``retrying`` (failed, tried again at
    ``next_attempt_at``), ``sent``, ``parked`` (given up after repeated failure; a replay puts it
    back).  ``target`` is the email address or the endpoint's id; ``message`` what is sent
    (the email's subject and text, or the webhook's id, type and JSON body), built when the
    delivery is made so a retry sends the same thing.
    """

    __tablename__ = "alert_deliveries"
    __table_args__ = (sa.Index("ix_alert_deliveries_status_next", "status", "next_attempt_at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    channel = sa.Column(sa.String(10), nullable=False)
    user_id = sa.Column(sa.Integer)
    endpoint_id = sa.Column(sa.Integer)
    target = sa.Column(sa.String(500), nullable=False)
    #: A webhook delivery's occasion (``<endpoint>:<alert key>``): one message per organisation.
    key = sa.Column(sa.String(200), unique=True)
    message = sa.Column(JSONText, nullable=False, default=dict)
    items = sa.Column(sa.Integer, nullable=False, default=1)
    status = sa.Column(sa.String(10), nullable=False, default="pending")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    next_attempt_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    claimed_until = sa.Column(sa.DateTime)
    last_error = sa.Column(sa.String(300))
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
    last_attempt_at = sa.Column(sa.DateTime)
    sent_at = sa.Column(sa.DateTime)
