"""The ``hospital`` silo: facilities, staff profiles, trips and their history.

``hospital_id`` and ``agency_id`` columns hold center registry ids; ``*_bid_id``
and ``*_unit_id`` hold EMS silo ids.  None of them is a foreign key: no key
crosses a silo.
"""
import sqlalchemy as sa

from ..extensions import db
from .base import JSONText, SubmissionMixin, new_public_id, utcnow

INVITE_MODES = {
    "preferred": "Preferred agencies only",
    "all": "All agencies able to serve the level of care",
    "preferred_then_all": "Preferred first, then everyone after N minutes",
}
CANCEL_REASONS = {
    "no_availability": "No EMS availability",
    "patient_not_stable": "Patient not stable",
    "not_needed": "Transport no longer needed",
    "other": "Other",
}
AGE_GROUPS = {
    "neonate": "Neonate (< 1 month)",
    "infant": "Infant (< 1 year)",
    "child": "Child (1-12)",
    "adolescent": "Adolescent (13-17)",
    "adult": "Adult (18-64)",
    "older_adult": "Older adult (65+)",
}
ISOLATIONS = {
    "none": "None",
    "contact": "Contact",
    "droplet": "Droplet",
    "airborne": "Airborne",
    "enteric": "Enteric",
}
#: What the screens call a request's fields: one map for the forms' needs, the pages and the
#: timeline's "Changed: ..." line.  Both override columns are the "Level override".
FIELD_LABELS = {
    "level_of_care": "Level of care",
    "urgency": "Urgency",
    "pickup_location": "Pickup location",
    "destination_address": "Destination address",
    "window_start": "Earliest pickup",
    "window_end": "Latest pickup",
    "mobility": "Mobility",
    "weight_kg": "Weight (kg)",
    "isolation": "Isolation",
    "oxygen_lpm": "Oxygen (L/min)",
    "cardiac_monitor": "Cardiac monitor",
    "iv_pump": "IV pump",
    "ventilator": "Ventilator",
    "other_needs": "Other needs",
    "notes": "Notes for the crew",
    "invite_mode": "Invited agencies",
    "invite_all_after_minutes": "Open to every agency after (min)",
    "care_override_reason": "Level override",
    "care_override_needs": "Level override",
}


def field_labels(names):
    """The labels of request fields ``names`` (:data:`FIELD_LABELS`; an unknown name with its
    underscores as spaces), each once, in the order given."""
    labels = []
    for name in names:
        label = FIELD_LABELS.get(name, name.replace("_", " "))
        if label not in labels:
            labels.append(label)
    return labels


def oxygen_flow(lpm):
    """An oxygen flow (L/min, a number or None) as every screen shows it: "2.5 L/min",
    "20 L/min" (no trailing ".0"); "None" for no flow."""
    if not lpm:
        return "None"
    return f"{number_text(lpm)} L/min"


def number_text(value):
    """A number without a trailing ".0": 20.0 → "20", 2.5 → "2.5"."""
    value = float(value)
    return str(int(value)) if value.is_integer() else str(value)


class HospitalFacility(db.Model):
    """A place patients are picked up from or taken to."""

    __bind_key__ = "hospital"
    __tablename__ = "hospital_facilities"

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    hospital_id = sa.Column(sa.Integer, nullable=False, index=True)
    name = sa.Column(sa.String(160), nullable=False)
    kind = sa.Column(sa.String(40), nullable=False, default="hospital")
    address = sa.Column(sa.String(240), nullable=False, default="")
    city = sa.Column(sa.String(80), nullable=False, default="")
    lat = sa.Column(sa.Float)
    lon = sa.Column(sa.Float)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class HospitalUser(db.Model):
    """A hospital staff member's profile, linked to a center user by id."""

    __bind_key__ = "hospital"
    __tablename__ = "hospital_users"

    id = sa.Column(sa.Integer, primary_key=True)
    user_id = sa.Column(sa.Integer, nullable=False, unique=True)
    hospital_id = sa.Column(sa.Integer, nullable=False, index=True)
    display_name = sa.Column(sa.String(120), nullable=False, default="")
    job_title = sa.Column(sa.String(80), nullable=False, default="")
    default_facility_id = sa.Column(sa.Integer, sa.ForeignKey("hospital_facilities.id"))
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow)


class TransportRequest(db.Model):
    """A trip: posted by a hospital, bid on by agencies, awarded, driven, completed.

    Holds no patient name, date of birth or record number: only a generated
    patient reference and the clinical needs the crew must know.
    """

    __bind_key__ = "hospital"
    __tablename__ = "transport_requests"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('open', 'awarded', 'en_route', 'at_pickup', 'transporting', "
            "'at_destination', 'completed', 'cancelled')",
            name="status_known",
        ),
        sa.CheckConstraint("window_end >= window_start", name="window_ordered"),
        sa.Index("ix_transport_requests_hospital_status_created", "hospital_id", "status", "created_at"),
        sa.Index("ix_transport_requests_status_created", "status", "created_at"),
        sa.Index("ix_transport_requests_status_deadline", "status", "bid_deadline"),
        # The boards' pickup-time order, a page at a time (services/boards.py).
        sa.Index("ix_transport_requests_status_window", "status", "window_start"),
        sa.Index("ix_transport_requests_agency_status", "awarded_agency_id", "status"),
        sa.Index("ix_transport_requests_created", "created_at"),
        # Analytics of one hospital or one agency over the days computed live: SQLite (no
        # statistics) otherwise reads all of the hospital's or agency's requests by the
        # equality indexes above and keeps the period's.
        sa.Index("ix_transport_requests_hospital_created", "hospital_id", "created_at"),
        sa.Index("ix_transport_requests_agency_created", "awarded_agency_id", "created_at"),
        # Analytics medians: a period's requests read from the index alone (PostgreSQL).
        sa.Index("ix_transport_requests_created_timings", "created_at",
                 postgresql_include=["hospital_id", "awarded_agency_id", "level_of_care", "urgency",
                                     "first_bid_at", "awarded_at", "at_pickup_at", "awarded_eta_minutes",
                                     "bidding_opens_at"]),
        # History tabs and analytics: completed trips by completion time, per hospital.
        sa.Index("ix_transport_requests_status_completed", "status", "completed_at", "hospital_id"),
        sa.Index("ix_transport_requests_status_cancelled", "status", "cancelled_at"),
        # Open requests by their opening: the ones taking bids (opened, or never booked ahead)
        # apart from the many upcoming ones of recurring series (agencies' boards, center board).
        sa.Index("ix_transport_requests_status_opens", "status", "bidding_opens_at"),
        # Booked ahead: the requests whose bidding opening the timer has still to announce.
        sa.Index(
            "ix_transport_requests_opening_due",
            "bidding_opens_at",
            postgresql_where=sa.text("opening_announced_at IS NULL AND bidding_opens_at IS NOT NULL"),
            sqlite_where=sa.text("opening_announced_at IS NULL AND bidding_opens_at IS NOT NULL"),
        ),
        sa.UniqueConstraint("series_id", "series_date", name="uq_transport_requests_series_date"),
        # Reposts are rare: index only the rows that have one.
        sa.Index(
            "ix_transport_requests_reposted_from",
            "reposted_from_id",
            postgresql_where=sa.text("reposted_from_id IS NOT NULL"),
            sqlite_where=sa.text("reposted_from_id IS NOT NULL"),
        ),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    reference = sa.Column(sa.String(32), nullable=False, unique=True)
    hospital_id = sa.Column(sa.Integer, nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="open")
    # Optimistic lock: every state change bumps it and checks the old value.
    version = sa.Column(sa.Integer, nullable=False, default=1)

    origin_facility_id = sa.Column(
        sa.Integer, sa.ForeignKey("hospital_facilities.id"), nullable=False, index=True
    )
    pickup_location = sa.Column(sa.String(120), nullable=False)
    destination_facility_id = sa.Column(
        sa.Integer, sa.ForeignKey("hospital_facilities.id"), index=True
    )
    destination_address = sa.Column(sa.String(240), nullable=False, default="")
    destination_lat = sa.Column(sa.Float)
    destination_lon = sa.Column(sa.Float)

    level_of_care = sa.Column(sa.String(3), nullable=False)
    mobility = sa.Column(sa.String(24), nullable=False)
    urgency = sa.Column(sa.String(10), nullable=False)
    window_start = sa.Column(sa.DateTime, nullable=False)
    window_end = sa.Column(sa.DateTime, nullable=False)

    patient_ref = sa.Column(sa.String(16), nullable=False)
    age_group = sa.Column(sa.String(16), nullable=False)
    weight_kg = sa.Column(sa.Integer, nullable=False)
    isolation = sa.Column(sa.String(12), nullable=False, default="none")
    oxygen_lpm = sa.Column(sa.Float, nullable=False, default=0)
    cardiac_monitor = sa.Column(sa.Boolean, nullable=False, default=False)
    iv_pump = sa.Column(sa.Boolean, nullable=False, default=False)
    ventilator = sa.Column(sa.Boolean, nullable=False, default=False)
    other_needs = sa.Column(sa.String(200), nullable=False, default="")
    notes = sa.Column(sa.String(500), nullable=False, default="")
    # A need above the level of care (services/care_rules.py), sent at this level anyway: the
    # nurse's reason, and the needs it covers (",".join of rule needs, e.g. "ventilator").
    care_override_reason = sa.Column(sa.String(300))
    care_override_needs = sa.Column(sa.String(120))

    bid_deadline = sa.Column(sa.DateTime, nullable=False)
    # Booked ahead (services.scheduling): bidding opens at this time, not at posting; the
    # request is "upcoming" until then.  None: bidding opened at posting (same-day work).
    bidding_opens_at = sa.Column(sa.DateTime)
    # When the timer told the boards that bidding opened (once; None until then).
    opening_announced_at = sa.Column(sa.DateTime)
    invite_mode = sa.Column(sa.String(20), nullable=False, default="all")
    invite_all_after_minutes = sa.Column(sa.Integer)
    # When a preferred-then-all invitation widens to every agency; the relay's timer
    # clears it when it tells their boards (so each request is announced once).
    widen_invite_at = sa.Column(sa.DateTime, index=True)
    # Preferred agencies at posting time (",3,7,"), so the invitation is stable.
    invited_agency_ids = sa.Column(sa.String(400), nullable=False, default="")
    unfilled_at = sa.Column(sa.DateTime)

    # Denormalised from EMS bid events by the relay, for the dashboards.
    bid_count = sa.Column(sa.Integer, nullable=False, default=0)
    best_eta_minutes = sa.Column(sa.Integer)
    first_bid_at = sa.Column(sa.DateTime)

    awarded_bid_id = sa.Column(sa.Integer)
    awarded_agency_id = sa.Column(sa.Integer)
    awarded_unit_id = sa.Column(sa.Integer)
    awarded_unit_label = sa.Column(sa.String(60))
    awarded_agency_name = sa.Column(sa.String(160))
    awarded_eta_minutes = sa.Column(sa.Integer)
    awarded_at = sa.Column(sa.DateTime)
    award_source = sa.Column(sa.String(12))
    award_note = sa.Column(sa.String(300))

    en_route_at = sa.Column(sa.DateTime)
    at_pickup_at = sa.Column(sa.DateTime)
    transporting_at = sa.Column(sa.DateTime)
    at_destination_at = sa.Column(sa.DateTime)
    # The crew's last step, "back in service", completes the trip: both times are set then
    # (trips completed before that step existed have ``completed_at`` alone).
    back_in_service_at = sa.Column(sa.DateTime)
    completed_at = sa.Column(sa.DateTime)
    cancelled_at = sa.Column(sa.DateTime)
    cancel_reason = sa.Column(sa.String(24))
    cancel_note = sa.Column(sa.String(300))
    handed_back_count = sa.Column(sa.Integer, nullable=False, default=0)
    reposted_from_id = sa.Column(sa.Integer, sa.ForeignKey("transport_requests.id"))
    # An occurrence of a recurring series (services.series): its series and the local date it
    # stands for (once per date: the unique constraint makes two sweepers create it once).
    series_id = sa.Column(sa.Integer, sa.ForeignKey("transport_series.id"))
    series_date = sa.Column(sa.Date)
    # A return leg (services.returns): the outbound request it brings the patient back from.
    return_of_id = sa.Column(sa.Integer, sa.ForeignKey("transport_requests.id"), unique=True)
    # A will-call return waits, not biddable, until someone marks the patient ready
    # (``released_at``): bidding opens then, with the urgency chosen then.
    will_call = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    released_at = sa.Column(sa.DateTime)
    released_by = sa.Column(sa.String(160))
    # Patient readiness at pickup (waiting split between "patient not ready" and "crew late").
    patient_ready_at = sa.Column(sa.DateTime)
    not_ready_at = sa.Column(sa.DateTime)
    not_ready_reason = sa.Column(sa.String(200))

    created_by_user_id = sa.Column(sa.Integer, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    origin = db.relationship("HospitalFacility", foreign_keys=[origin_facility_id])
    destination = db.relationship("HospitalFacility", foreign_keys=[destination_facility_id])
    series = db.relationship("TransportSeries", foreign_keys=[series_id])
    return_of = db.relationship("TransportRequest", foreign_keys=[return_of_id], remote_side=[id],
                                backref=db.backref("return_leg", uselist=False))
    history = db.relationship(
        "TransportRequestEvent",
        order_by="TransportRequestEvent.id",
        back_populates="trip",
        lazy="dynamic",
    )

    @property
    def destination_label(self):
        if self.destination is not None:
            return self.destination.name
        return self.destination_address

    @property
    def will_call_waiting(self):
        """A will-call return not released yet: open, not biddable, never late or unfilled."""
        return bool(self.will_call) and self.released_at is None and self.status == "open"

    @property
    def bidding_start(self):
        """When bidding opened (or opens): ``bidding_opens_at`` when booked ahead, the release
        of a will-call return, else posting."""
        return self.bidding_opens_at or self.released_at or self.created_at

    @property
    def invited_ids(self):
        return {int(x) for x in self.invited_agency_ids.strip(",").split(",") if x}


SERIES_STATUSES = ("active", "cancelled")
#: Weekdays as the series form offers them (Monday first, as ``dateutil.rrule`` numbers them).
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class TransportSeries(db.Model):
    """A recurring transport (dialysis three times a week, radiation every weekday): a rule and
    the request every occurrence copies.  Occurrences are ordinary requests, created by the
    timer ahead of their bidding lead time (``services.series``).  No patient name: the same
    generated patient reference on every occurrence.
    """

    __bind_key__ = "hospital"
    __tablename__ = "transport_series"
    __table_args__ = (
        sa.CheckConstraint("status IN ('active', 'cancelled')", name="series_status_known"),
        sa.CheckConstraint("frequency IN ('weekly', 'daily')", name="series_frequency_known"),
        sa.Index("ix_transport_series_status_generated", "status", "generated_through"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    hospital_id = sa.Column(sa.Integer, nullable=False, index=True)
    # The hospital's registry code, for its occurrences' references (no center read needed).
    hospital_code = sa.Column(sa.String(12), nullable=False)
    status = sa.Column(sa.String(12), nullable=False, default="active")
    version = sa.Column(sa.Integer, nullable=False, default=1)
    # The rule (RFC 5545 RRULE terms): FREQ=WEEKLY;BYDAY=... or FREQ=DAILY;INTERVAL=n, from
    # start_date, until until_date or for occurrence_count occurrences (one of the two).
    frequency = sa.Column(sa.String(8), nullable=False, default="weekly")
    interval = sa.Column(sa.Integer, nullable=False, default=1)
    weekdays = sa.Column(sa.String(20), nullable=False, default="")  # "0,2,4" Monday = 0
    pickup_time = sa.Column(sa.Time, nullable=False)  # local wall-clock time
    window_minutes = sa.Column(sa.Integer, nullable=False, default=60)
    start_date = sa.Column(sa.Date, nullable=False)
    until_date = sa.Column(sa.Date)
    occurrence_count = sa.Column(sa.Integer)
    # A repeated local time (the autumn change) is taken as its first (0) or second (1) occurrence.
    fold = sa.Column(sa.Integer, nullable=False, default=0)
    # The request each occurrence copies.
    origin_facility_id = sa.Column(sa.Integer, sa.ForeignKey("hospital_facilities.id"), nullable=False)
    pickup_location = sa.Column(sa.String(120), nullable=False)
    destination_facility_id = sa.Column(sa.Integer, sa.ForeignKey("hospital_facilities.id"))
    destination_address = sa.Column(sa.String(240), nullable=False, default="")
    level_of_care = sa.Column(sa.String(3), nullable=False)
    mobility = sa.Column(sa.String(24), nullable=False)
    urgency = sa.Column(sa.String(10), nullable=False, default="routine")
    patient_ref = sa.Column(sa.String(16), nullable=False)
    age_group = sa.Column(sa.String(16), nullable=False)
    weight_kg = sa.Column(sa.Integer, nullable=False)
    isolation = sa.Column(sa.String(12), nullable=False, default="none")
    oxygen_lpm = sa.Column(sa.Float, nullable=False, default=0)
    cardiac_monitor = sa.Column(sa.Boolean, nullable=False, default=False)
    iv_pump = sa.Column(sa.Boolean, nullable=False, default=False)
    ventilator = sa.Column(sa.Boolean, nullable=False, default=False)
    other_needs = sa.Column(sa.String(200), nullable=False, default="")
    notes = sa.Column(sa.String(500), nullable=False, default="")
    bid_deadline_minutes = sa.Column(sa.Integer, nullable=False, default=30)
    invite_mode = sa.Column(sa.String(20), nullable=False, default="all")
    invite_all_after_minutes = sa.Column(sa.Integer)
    # Standing order: this agency (center registry id) is offered each occurrence first, for
    # ``standing_order_minutes``, then every agency able to serve the level of care.
    standing_agency_id = sa.Column(sa.Integer)
    standing_order_minutes = sa.Column(sa.Integer)
    # Occurrences exist for every date up to here (the timer's progress).
    generated_through = sa.Column(sa.Date)
    cancelled_at = sa.Column(sa.DateTime)
    cancel_reason = sa.Column(sa.String(24))
    cancel_note = sa.Column(sa.String(300))
    # "This and later": the series this one continues (ended the day before this one starts).
    continues_id = sa.Column(sa.Integer, sa.ForeignKey("transport_series.id"))
    created_by_user_id = sa.Column(sa.Integer, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    origin = db.relationship("HospitalFacility", foreign_keys=[origin_facility_id])
    destination = db.relationship("HospitalFacility", foreign_keys=[destination_facility_id])
    exceptions = db.relationship("SeriesException", order_by="SeriesException.day",
                                 back_populates="series", cascade="all, delete-orphan")

    @property
    def destination_label(self):
        if self.destination is not None:
            return self.destination.name
        return self.destination_address

    @property
    def weekday_list(self):
        return [int(x) for x in self.weekdays.split(",") if x != ""]


class SeriesException(db.Model):
    """One date of a series skipped, or its occurrence moved to another local time."""

    __bind_key__ = "hospital"
    __tablename__ = "transport_series_exceptions"
    __table_args__ = (
        sa.UniqueConstraint("series_id", "day", name="uq_series_exception_day"),
        sa.CheckConstraint("kind IN ('skip', 'move')", name="series_exception_kind_known"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    series_id = sa.Column(sa.Integer, sa.ForeignKey("transport_series.id"), nullable=False)
    day = sa.Column(sa.Date, nullable=False)  # the occurrence's own date by the rule
    kind = sa.Column(sa.String(8), nullable=False)
    moved_to = sa.Column(sa.DateTime)  # naive local wall-clock time (a move)
    moved_fold = sa.Column(sa.Integer, nullable=False, default=0)
    note = sa.Column(sa.String(200), nullable=False, default="")
    created_by_user_id = sa.Column(sa.Integer)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    series = db.relationship("TransportSeries", back_populates="exceptions")


class TransportRequestEvent(db.Model):
    """One line of a trip's status history: every transition, with time and who."""

    __bind_key__ = "hospital"
    __tablename__ = "transport_request_events"
    __table_args__ = (sa.Index("ix_transport_request_events_trip_at", "trip_id", "at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    trip_id = sa.Column(sa.Integer, sa.ForeignKey("transport_requests.id"), nullable=False)
    action = sa.Column(sa.String(30), nullable=False)
    from_status = sa.Column(sa.String(16))
    to_status = sa.Column(sa.String(16), nullable=False)
    at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    user_id = sa.Column(sa.Integer)
    user_label = sa.Column(sa.String(160), nullable=False, default="")
    note = sa.Column(sa.String(300), nullable=False, default="")
    detail = sa.Column(JSONText)

    trip = db.relationship("TransportRequest", back_populates="history")


class HospitalAgencyPreference(db.Model):
    """A hospital's ordered list of preferred agencies (center registry ids)."""

    __bind_key__ = "hospital"
    __tablename__ = "hospital_agency_preferences"
    __table_args__ = (sa.UniqueConstraint("hospital_id", "agency_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    hospital_id = sa.Column(sa.Integer, nullable=False, index=True)
    agency_id = sa.Column(sa.Integer, nullable=False)
    rank = sa.Column(sa.Integer, nullable=False)
    notes = sa.Column(sa.String(300), nullable=False, default="")
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class HospitalSubmission(SubmissionMixin, db.Model):
    """A used one-time form token of the hospital silo."""

    __bind_key__ = "hospital"
    __tablename__ = "hospital_submissions"
