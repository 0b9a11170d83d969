"""Hospital forms: a transport request, its edit, cancel and award, preferred agencies.

Every value is checked here, on the server, with a message per field; the
browser gets the same limits as hints (``required``, ``min``/``max``,
``maxlength``).  Times are entered in the region's zone and checked in UTC.
The shared pieces (filters, the window and needs mixins) are in :mod:`.form_parts`
and importable from here as before.
"""
import re
from datetime import timedelta

from wtforms import (
    HiddenField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from ..formfields import FlaskForm, WholeNumberField
from ..localtime import to_local
from ..models.base import utcnow
from ..models.hospital import AGE_GROUPS, CANCEL_REASONS, INVITE_MODES
from ..models.vocabulary import LEVEL_LABELS, LEVELS, URGENCIES
from ..services import scheduling
from ..services.trips import PATIENT_REF_PATTERN
from ..submission_field import submission_field
from .form_parts import (  # noqa: F401  (importable from here, as before)
    LOCAL_INPUT_FORMAT,
    MIN_BID_MINUTES,
    WINDOW_GRACE,
    NeedsMixin,
    WindowMixin,
    _version_field,
    local_input,
    multi_line,
    one_line,
    options,
    parse_version,
    to_minute,
)


class RequestForm(WindowMixin, NeedsMixin, FlaskForm):
    """A new transport request (also a re-post of an old one, pre-filled).

    Call :meth:`offer` with the facilities before validating: the origin must
    be one of the hospital's own active facilities, the destination any active
    facility (or a typed address, exactly one of the two).
    """

    origin_facility = SelectField(
        "From (your facility)", validate_choice=False,
        validators=[InputRequired("Choose the facility the patient leaves from.")],
    )
    pickup_location = StringField(
        "Pickup location (unit, floor, room)", filters=[one_line],
        validators=[DataRequired("Say where in the facility the crew picks up (unit, floor, room)."),
                    Length(max=120, message="Keep the pickup location to 120 characters.")],
    )
    destination_facility = SelectField("To a registered facility", validate_choice=False)
    destination_address = StringField(
        "…or to an address", filters=[one_line],
        validators=[Length(max=240, message="Keep the address to 240 characters.")],
    )
    level_of_care = RadioField(
        "Level of care", choices=options({level: LEVEL_LABELS[level] for level in LEVELS}),
        validate_choice=False, validators=[InputRequired("Choose the level of care.")],
    )
    urgency = RadioField(
        "Urgency", choices=options(URGENCIES), default="routine", validate_choice=False,
        validators=[InputRequired("Choose the urgency.")],
    )
    patient_ref = HiddenField()
    age_group = SelectField(
        "Age group", choices=options(AGE_GROUPS, "Choose…"), validate_choice=False,
        validators=[InputRequired("Choose the patient's age group.")],
    )
    bid_deadline_minutes = WholeNumberField(
        "Bidding closes after (minutes)", invalid_value_message="Enter the bidding time in whole minutes.",
        validators=[InputRequired("Enter how long agencies may bid, in minutes."),
                    NumberRange(MIN_BID_MINUTES, 1440,
                                "Enter a bidding time from 5 to 1440 minutes (24 hours).")],
    )
    invite_mode = RadioField(
        "Who may bid", choices=options(INVITE_MODES), default="all", validate_choice=False,
        validators=[InputRequired("Choose who may bid.")],
    )
    invite_all_after_minutes = WholeNumberField(
        "Open to everyone after (minutes)",
        invalid_value_message="Enter the minutes in whole numbers.",
        validators=[Optional(), NumberRange(1, 240, "Enter from 1 to 240 minutes.")],
    )
    submission_id = submission_field()
    reposted_from = HiddenField()
    reposted_version = HiddenField()

    def offer(self, own_facilities, all_facilities, preferred_count):
        """Set the choices: own active facilities for the origin, every active one grouped by city."""
        self._own = {f.public_id: f for f in own_facilities}
        self._all = {f.public_id: f for f in all_facilities}
        self.preferred_count = preferred_count
        self.origin_facility.choices = options({f.public_id: f.name for f in own_facilities}, "Choose…")
        self.destination_facility.choices = [SelectChoice("", "None: use the address below")] + [
            SelectChoice(f.public_id, f.name, optgroup=f.city or "Other")
            for f in sorted(all_facilities, key=lambda f: (f.city or "~", f.name))
        ]

    @property
    def origin(self):
        """The chosen origin facility (the user's hospital's), or None."""
        return self._own.get(self.origin_facility.data)

    @property
    def destination(self):
        """The chosen destination facility, or None for a typed address."""
        return self._all.get(self.destination_facility.data or "")

    def validate_origin_facility(self, field):
        """Only one of the user's hospital's active facilities."""
        if field.data not in self._own:
            raise ValidationError("Choose one of your hospital's facilities.")

    def validate_level_of_care(self, field):
        """Only BLS, ALS or CCT."""
        if field.data not in LEVELS:
            raise ValidationError("Choose BLS, ALS or CCT.")

    def validate_urgency(self, field):
        """Only the listed urgencies."""
        if field.data not in URGENCIES:
            raise ValidationError("Choose routine, urgent or emergent.")

    def validate_age_group(self, field):
        """Only the listed age groups."""
        if field.data not in AGE_GROUPS:
            raise ValidationError("Choose one of the listed age groups.")

    def validate_patient_ref(self, field):
        """Only a generated reference: a forged one could carry a name."""
        if not re.fullmatch(PATIENT_REF_PATTERN, field.data or ""):
            raise ValidationError("The patient reference was missing or altered; a new one is shown below.")

    def validate_invite_mode(self, field):
        """Only the listed modes; preferred ones need a preferred list."""
        if field.data not in INVITE_MODES:
            raise ValidationError("Choose one of the listed invitation modes.")
        if field.data != "all" and not self.preferred_count:
            raise ValidationError(
                "Your hospital has no preferred agencies yet: invite all agencies, "
                "or add preferred agencies first."
            )

    def validate(self, extra_validators=None):
        """Field checks, then the checks that involve several fields."""
        ok = super().validate(extra_validators)
        chosen = self.destination_facility.data or ""
        if chosen and chosen not in self._all:
            self.destination_facility.errors.append("Choose one of the listed facilities.")
            ok = False
        elif chosen and self.destination_address.data:
            self.destination_address.errors.append(
                "Give either a registered facility or an address, not both.")
            ok = False
        elif not chosen and not self.destination_address.data:
            self.destination_facility.errors.append(
                "Choose the destination facility, or type an address below.")
            ok = False
        elif chosen and chosen == self.origin_facility.data:
            self.destination_facility.errors.append("The destination is the facility the patient leaves from.")
            ok = False
        if self.invite_mode.data == "preferred_then_all" and self.invite_all_after_minutes.data is None \
                and not self.invite_all_after_minutes.errors:
            self.invite_all_after_minutes.errors.append(
                "Say after how many minutes every agency may bid (1 to 240).")
            ok = False
        ok = self.check_care(self.level_of_care.data) and ok
        window_ok = self.check_window()
        start, end = self.window_utc()
        minutes = self.bid_deadline_minutes.data
        # Booked ahead, bidding opens a lead time before pickup and its time counts from then.
        opens = scheduling.opening_for(self.level_of_care.data, start) \
            if window_ok and self.level_of_care.data in LEVELS else None
        if window_ok and minutes is not None and not self.bid_deadline_minutes.errors \
                and (opens or utcnow()) + timedelta(minutes=minutes) > end:
            self.bid_deadline_minutes.errors.append(
                "Bidding would close after the latest pickup time; shorten it or widen the window.")
            window_ok = False
        return ok and window_ok

    def trip_fields(self):
        """The validated values as :func:`services.trip_posting.post` takes them."""
        start, end = self.window_utc()
        destination = self.destination
        after = self.invite_all_after_minutes.data if self.invite_mode.data == "preferred_then_all" else None
        return dict(
            origin_facility_id=self.origin.id,
            pickup_location=self.pickup_location.data,
            destination_facility_id=destination.id if destination else None,
            destination_address="" if destination else self.destination_address.data,
            level_of_care=self.level_of_care.data,
            urgency=self.urgency.data,
            window_start=start,
            window_end=end,
            patient_ref=self.patient_ref.data,
            age_group=self.age_group.data,
            bid_deadline=utcnow() + timedelta(minutes=self.bid_deadline_minutes.data),
            invite_mode=self.invite_mode.data,
            invite_all_after_minutes=after,
            **self.needs_values(),
        )

    def fill_from(self, trip, now):
        """Pre-fill from an earlier request (a re-post); a window already past is left empty."""
        self.origin_facility.data = trip.origin.public_id if trip.origin else ""
        self.pickup_location.data = trip.pickup_location
        self.destination_facility.data = trip.destination.public_id if trip.destination else ""
        self.destination_address.data = trip.destination_address
        for name in ("level_of_care", "urgency", "patient_ref", "age_group", "mobility", "weight_kg",
                     "isolation", "oxygen_lpm", "cardiac_monitor", "iv_pump", "ventilator",
                     "other_needs", "notes", "invite_mode", "invite_all_after_minutes"):
            getattr(self, name).data = getattr(trip, name)
        # An override is copied as it was, ticked: the form as shown posts as the first did.
        self.care_override.data = bool(trip.care_override_reason)
        self.care_override_reason.data = trip.care_override_reason or ""
        if trip.window_start >= now - WINDOW_GRACE:
            self.window_start.data = to_local(trip.window_start).replace(tzinfo=None)
            self.window_end.data = to_local(trip.window_end).replace(tzinfo=None)
        self.reposted_from.data = trip.public_id
        self.reposted_version.data = str(trip.version)


class EditForm(WindowMixin, NeedsMixin, FlaskForm):
    """What may change on an open request: the window, the needs, the notes."""

    CARE_REMEDY = "Cancel it and re-post it at {level}"  # the level cannot change here

    version = _version_field()

    def fill_from(self, trip):
        """The request's current values."""
        self.window_start.data = to_local(trip.window_start).replace(tzinfo=None)
        self.window_end.data = to_local(trip.window_end).replace(tzinfo=None)
        for name in ("mobility", "weight_kg", "isolation", "oxygen_lpm", "cardiac_monitor", "iv_pump",
                     "ventilator", "other_needs", "notes"):
            getattr(self, name).data = getattr(trip, name)
        self.version.data = str(trip.version)

    def changes(self, trip):
        """The validated values as :func:`services.trip_posting.edit` takes them.

        A window shown to the minute and left alone keeps its stored value.
        """
        start, end = self.window_utc()
        if start == to_minute(trip.window_start):
            start = trip.window_start
        if end == to_minute(trip.window_end):
            end = trip.window_end
        return dict(window_start=start, window_end=end, **self.needs_values())


class CancelForm(FlaskForm):
    """Cancel with a reason; "other" needs a few words."""

    reason = RadioField(
        "Reason", choices=options(CANCEL_REASONS), validate_choice=False,
        validators=[InputRequired("Choose why the request is cancelled.")],
    )
    note = StringField(
        "Details", filters=[one_line],
        validators=[Length(max=300, message="Keep the details to 300 characters.")],
    )
    version = _version_field()

    def validate_reason(self, field):
        """Only the listed reasons."""
        if field.data not in CANCEL_REASONS:
            raise ValidationError("Choose one of the listed reasons.")

    def validate_note(self, field):
        """Some words are needed when the reason is "Other"."""
        if self.reason.data == "other" and not field.data:
            raise ValidationError('Say why, when the reason is "Other".')


class AwardForm(FlaskForm):
    """The bid to award and the request version the page showed."""

    bid = HiddenField(validators=[InputRequired("Choose a bid to award.")])
    version = _version_field()


class PreferenceForm(FlaskForm):
    """Add an agency to the hospital's preferred list."""

    agency = SelectField(
        "Agency", validate_choice=False, validators=[InputRequired("Choose an agency to add.")]
    )
    notes = StringField(
        "Notes", filters=[one_line],
        validators=[Length(max=300, message="Keep the notes to 300 characters.")],
    )
    submission_id = submission_field()

    def offer(self, agencies):
        """The center's active agencies not yet on the list."""
        self._agencies = {a.public_id: a for a in agencies}
        self.agency.choices = options({a.public_id: a.name for a in agencies}, "Choose…")

    @property
    def chosen(self):
        """The chosen agency, or None."""
        return self._agencies.get(self.agency.data)

    def validate_agency(self, field):
        """Only an active agency not on the list yet."""
        if field.data not in self._agencies:
            raise ValidationError("Choose one of the listed agencies (active, not on your list yet).")


class PreferenceNotesForm(FlaskForm):
    """Change the notes of one preferred agency."""

    notes = StringField(
        "Notes", filters=[one_line],
        validators=[Length(max=300, message="Keep the notes to 300 characters.")],
    )


class PreferenceMoveForm(FlaskForm):
    """Move one preferred agency up or down the list."""

    direction = HiddenField(validators=[InputRequired("Say which way to move the agency.")])

    def validate_direction(self, field):
        """Only up or down."""
        if field.data not in ("up", "down"):
            raise ValidationError("Move up or down.")
