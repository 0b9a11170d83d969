"""The ``ems`` silo: agencies' operating profiles, units, availability, bids, routes.

``agency_id`` holds the center registry id; ``trip_id`` holds the hospital
silo's trip id.  Neither is a foreign key: no key crosses a silo.
"""
import sqlalchemy as sa

from ..extensions import db
from .base import SubmissionMixin, new_public_id, utcnow
from .vocabulary import IN_PROGRESS_ROUTE_STATUSES

IN_PROGRESS_WHERE = ("status IN (" + ", ".join(f"'{s}'" for s in IN_PROGRESS_ROUTE_STATUSES)
                     + ") AND en_route_at IS NOT NULL")


class EmsAgency(db.Model):
    """An agency's operating profile in the EMS silo."""

    __bind_key__ = "ems"
    __tablename__ = "ems_agencies"

    id = sa.Column(sa.Integer, primary_key=True)
    agency_id = sa.Column(sa.Integer, nullable=False, unique=True)
    name = sa.Column(sa.String(160), nullable=False)
    levels = sa.Column(sa.String(20), nullable=False, default="BLS")
    dispatch_phone = sa.Column(sa.String(40), nullable=False, default="")
    base_lat = sa.Column(sa.Float)
    base_lon = sa.Column(sa.Float)
    service_radius_km = sa.Column(sa.Integer, nullable=False, default=80)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Unit(db.Model):
    """An ambulance (or critical-care truck) with its crew level and status."""

    __bind_key__ = "ems"
    __tablename__ = "units"
    __table_args__ = (
        sa.UniqueConstraint("agency_id", "number"),
        sa.CheckConstraint("level IN ('BLS', 'ALS', 'CCT')", name="level_known"),
        sa.CheckConstraint(
            "status IN ('available', 'assigned', 'on_break', 'out_of_service')",
            name="status_known",
        ),
        sa.Index("ix_units_agency_status", "agency_id", "status"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    agency_id = sa.Column(sa.Integer, nullable=False)
    number = sa.Column(sa.String(20), nullable=False)
    level = sa.Column(sa.String(3), nullable=False)
    base_station = sa.Column(sa.String(120), nullable=False, default="")
    status = sa.Column(sa.String(16), nullable=False, default="available")
    shift_start = sa.Column(sa.Time)
    shift_end = sa.Column(sa.Time)
    # The trip the unit is on: the one under way, else its next planned one by window start
    # (kept by ``route_steps.refresh_unit_status``).
    current_trip_id = sa.Column(sa.Integer)
    lat = sa.Column(sa.Float)
    lon = sa.Column(sa.Float)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    @property
    def label(self):
        return f"{self.number} ({self.level})"


class UnitAvailability(db.Model):
    """A window in which a unit is on shift, on break or out of service."""

    __bind_key__ = "ems"
    __tablename__ = "unit_availability"
    __table_args__ = (
        sa.CheckConstraint("ends_at > starts_at", name="window_ordered"),
        sa.Index("ix_unit_availability_unit_starts", "unit_id", "starts_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    unit_id = sa.Column(sa.Integer, sa.ForeignKey("units.id"), nullable=False)
    starts_at = sa.Column(sa.DateTime, nullable=False)
    ends_at = sa.Column(sa.DateTime, nullable=False)
    kind = sa.Column(sa.String(16), nullable=False, default="on_shift")
    note = sa.Column(sa.String(200), nullable=False, default="")

    unit = db.relationship("Unit")


class TransportBid(db.Model):
    """An agency's offer for a trip: a unit and an ETA to pickup.

    At most one ``live`` bid per agency per trip (a partial unique index).
    """

    __bind_key__ = "ems"
    __tablename__ = "transport_bids"
    __table_args__ = (
        sa.CheckConstraint("eta_minutes > 0", name="eta_positive"),
        sa.CheckConstraint(
            "status IN ('live', 'accepted', 'declined', 'withdrawn', 'expired', 'closed')",
            name="status_known",
        ),
        sa.Index(
            "uq_transport_bids_one_live_per_agency",
            "trip_id",
            "agency_id",
            unique=True,
            sqlite_where=sa.text("status = 'live'"),
            postgresql_where=sa.text("status = 'live'"),
        ),
        sa.Index("ix_transport_bids_trip_status", "trip_id", "status"),
        sa.Index("ix_transport_bids_agency_created", "agency_id", "created_at"),
        # An agency's live bids (its board): SQLite cannot use the partial index above for a
        # status given as a parameter, and would otherwise read all the agency's bids.
        sa.Index("ix_transport_bids_agency_status", "agency_id", "status"),
        # An agency's bids on one request, newest first (its request page): without it SQLite
        # (no statistics) takes the agency's index for the order and reads all its bids.
        sa.Index("ix_transport_bids_trip_agency_created", "trip_id", "agency_id", "created_at"),
        # A unit's bids by status; with the window's end, the overlap check of a new bid reads
        # only the unit's bids still ahead, not its years of accepted ones.
        sa.Index("ix_transport_bids_unit_status_window", "unit_id", "status", "window_end"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    public_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    trip_id = sa.Column(sa.Integer, nullable=False)
    hospital_id = sa.Column(sa.Integer, nullable=False)
    agency_id = sa.Column(sa.Integer, nullable=False)
    unit_id = sa.Column(sa.Integer, sa.ForeignKey("units.id"), nullable=False)
    eta_minutes = sa.Column(sa.Integer, nullable=False)
    note = sa.Column(sa.String(200), nullable=False, default="")
    status = sa.Column(sa.String(12), nullable=False, default="live")
    # The trip's pickup window, copied at bid time to refuse overlapping bids of one unit.
    window_start = sa.Column(sa.DateTime, nullable=False)
    window_end = sa.Column(sa.DateTime, nullable=False)
    created_by_user_id = sa.Column(sa.Integer)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    decided_at = sa.Column(sa.DateTime)

    unit = db.relationship("Unit")


class EmsRoute(db.Model):
    """One stop of a unit's day: an assigned trip in order, with its pickup and drop-off."""

    __bind_key__ = "ems"
    __tablename__ = "ems_routes"
    __table_args__ = (
        sa.UniqueConstraint("unit_id", "trip_id"),
        sa.Index("ix_ems_routes_unit_date_position", "unit_id", "service_date", "position"),
        # The agency's route pages: its planned stops in window order.
        sa.Index("ix_ems_routes_agency_status_window", "agency_id", "status", "window_start"),
        # The overlap check of a bid or an assignment: the unit's active stops still ahead.
        sa.Index("ix_ems_routes_unit_status_window", "unit_id", "status", "window_end"),
        # A unit is in one place at a time: at most one of its stops is under way.  Stops
        # started before the step times were kept (no ``en_route_at``) are left out, so old
        # data never blocks the upgrade; ``route_steps.advance`` refuses those clashes as well.
        sa.Index(
            "uq_ems_routes_one_under_way_per_unit",
            "unit_id",
            unique=True,
            sqlite_where=sa.text(IN_PROGRESS_WHERE),
            postgresql_where=sa.text(IN_PROGRESS_WHERE),
        ),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    unit_id = sa.Column(sa.Integer, sa.ForeignKey("units.id"), nullable=False)
    agency_id = sa.Column(sa.Integer, nullable=False)
    trip_id = sa.Column(sa.Integer, nullable=False)
    trip_reference = sa.Column(sa.String(32), nullable=False)
    service_date = sa.Column(sa.Date, nullable=False)
    position = sa.Column(sa.Integer, nullable=False)
    pickup_label = sa.Column(sa.String(200), nullable=False, default="")
    dropoff_label = sa.Column(sa.String(240), nullable=False, default="")
    pickup_lat = sa.Column(sa.Float)
    pickup_lon = sa.Column(sa.Float)
    dropoff_lat = sa.Column(sa.Float)
    dropoff_lon = sa.Column(sa.Float)
    window_start = sa.Column(sa.DateTime, nullable=False)
    window_end = sa.Column(sa.DateTime, nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="planned")
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    # When the crew took each step (naive UTC), kept in the EMS silo: the unit's own record
    # and what an undo checks.  An undone step's time is cleared.  "Back in service" ends the
    # stop (status ``completed``) and frees the unit.
    en_route_at = sa.Column(sa.DateTime)
    at_pickup_at = sa.Column(sa.DateTime)
    transporting_at = sa.Column(sa.DateTime)
    at_destination_at = sa.Column(sa.DateTime)
    back_in_service_at = sa.Column(sa.DateTime)
    # What the crew needs of the trip, copied at the award and kept in step with the
    # hospital's edits, so a crew can drive and report it with the hospital silo down.
    # (Rows from before these columns have them empty: the trip is read instead.)
    trip_public_id = sa.Column(sa.String(36), index=True)
    level_of_care = sa.Column(sa.String(3))
    mobility = sa.Column(sa.String(24))
    urgency = sa.Column(sa.String(10))
    weight_kg = sa.Column(sa.Integer)
    isolation = sa.Column(sa.String(12))
    oxygen_lpm = sa.Column(sa.Float)
    cardiac_monitor = sa.Column(sa.Boolean)
    iv_pump = sa.Column(sa.Boolean)
    ventilator = sa.Column(sa.Boolean)
    other_needs = sa.Column(sa.String(200))
    notes = sa.Column(sa.String(500))
    care_override_reason = sa.Column(sa.String(300))
    care_override_needs = sa.Column(sa.String(120))

    unit = db.relationship("Unit")

    #: Trip columns a route keeps a copy of (same names on both).
    CREW_FACTS = ("level_of_care", "mobility", "urgency", "weight_kg", "isolation", "oxygen_lpm",
                  "cardiac_monitor", "iv_pump", "ventilator", "other_needs", "notes",
                  "care_override_reason", "care_override_needs")

    @classmethod
    def crew_facts_of(cls, trip):
        """``{column: value}`` of what a crew needs of ``trip`` (a hospital silo trip), as a
        route keeps it."""
        facts = {name: getattr(trip, name) for name in cls.CREW_FACTS}
        facts["trip_public_id"] = trip.public_id
        return facts

    @property
    def has_crew_facts(self):
        """Whether this route holds its own copy of the trip's facts (routes since the copy began)."""
        return self.trip_public_id is not None


class EmsSubmission(SubmissionMixin, db.Model):
    """A used one-time form token of the EMS silo."""

    __bind_key__ = "ems"
    __tablename__ = "ems_submissions"


class CrewShift(db.Model):
    """A crew member staffing one unit for a shift: who (the center's user id and the name
    the dispatcher sees), which unit, from when, until when it is planned to end and when it
    ended.  A crew member has at most one open shift (a partial unique index); a unit may be
    staffed by several (a two-person crew)."""

    __bind_key__ = "ems"
    __tablename__ = "crew_shifts"
    __table_args__ = (
        sa.CheckConstraint("ends_at > started_at", name="shift_ordered"),
        sa.Index("uq_crew_shifts_one_open_per_user", "user_id", unique=True,
                 sqlite_where=sa.text("ended_at IS NULL"), postgresql_where=sa.text("ended_at IS NULL")),
        sa.Index("ix_crew_shifts_unit_ended", "unit_id", "ended_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    unit_id = sa.Column(sa.Integer, sa.ForeignKey("units.id"), nullable=False)
    agency_id = sa.Column(sa.Integer, nullable=False)
    # The center's user id (no key crosses a silo) and the crew member's name as the
    # dispatcher sees it, kept here so the units page shows it with the center down.
    user_id = sa.Column(sa.Integer, nullable=False)
    crew_name = sa.Column(sa.String(120), nullable=False)
    started_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    # When the shift is planned to end: past it the shift is over (the crew picks a unit again)
    # and what the crew's page stored on the phone expires.
    ends_at = sa.Column(sa.DateTime, nullable=False)
    ended_at = sa.Column(sa.DateTime)

    unit = db.relationship("Unit")


class CrewTap(db.Model):
    """One tap of a crew's phone (a step or an undo), by the idempotency key the phone gave it:
    a tap sent again (a retry after coverage came back) gets the stored answer, no second
    effect.  ``tapped_at`` is the phone's time of the tap, ``received_at`` the server's."""

    __bind_key__ = "ems"
    __tablename__ = "crew_taps"

    id = sa.Column(sa.Integer, primary_key=True)
    key = sa.Column(sa.String(64), nullable=False, unique=True)
    user_id = sa.Column(sa.Integer, nullable=False)
    unit_id = sa.Column(sa.Integer, nullable=False)
    trip_public_id = sa.Column(sa.String(36), nullable=False)
    action = sa.Column(sa.String(8), nullable=False)
    step = sa.Column(sa.String(20), nullable=False)
    tapped_at = sa.Column(sa.DateTime, nullable=False)
    received_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
    # The answer given the first time, given again to a repeat: HTTP status and message.
    status = sa.Column(sa.Integer, nullable=False)
    message = sa.Column(sa.String(400), nullable=False, default="")
