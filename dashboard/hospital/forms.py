"""Hospital forms: a transport request, its edit, cancel and award, preferred agencies.

Every value is checked here, on the server, with a message per field; the
browser gets the same limits as hints (``required``, ``min``/``max``,
``maxlength``).  Times are entered in the region's zone and checked in UTC.
"""
import re
from datetime import timedelta

from wtforms import (
    BooleanField,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from ..formfields import FiniteNumberField, FlaskForm, LocalTimeField, WholeNumberField
from ..localtime import from_local, to_local
from ..models.base import LEVEL_LABELS, LEVELS, MOBILITIES, URGENCIES, utcnow
from ..models.hospital import AGE_GROUPS, CANCEL_REASONS, FIELD_LABELS, INVITE_MODES, ISOLATIONS
from ..services import care_rules, scheduling
from ..services.trips import PATIENT_REF_PATTERN
from ..submission_field import submission_field

WINDOW_GRACE = timedelta(minutes=10)
#: The shortest bidding time a request may have, in minutes.
MIN_BID_MINUTES = 5
LOCAL_INPUT_FORMAT = "%Y-%m-%dT%H:%M"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def one_line(value):
    """Trimmed single-line text: no control characters, no line breaks."""
    if value is None:
        return value
    return _CONTROL.sub("", value.replace("\r", " ").replace("\n", " ").replace("\t", " ")).strip()


def multi_line(value):
    """Trimmed text that may hold line breaks, without other control characters."""
    if value is None:
        return value
    return _CONTROL.sub("", value).strip()


def options(mapping, blank=None):
    """Select or radio choices from a ``{value: label}`` mapping, with an optional blank first."""
    choices = [SelectChoice("", blank)] if blank else []
    return choices + [SelectChoice(value, label) for value, label in mapping.items()]


def to_minute(value):
    """A time without seconds: forms enter times to the minute."""
    return value.replace(second=0, microsecond=0)


def local_input(value):
    """A stored naive-UTC time as a ``datetime-local`` value in the region's zone."""
    return to_local(value).strftime(LOCAL_INPUT_FORMAT)


def _version_field():
    """A hidden field holding the trip version the page showed."""
    return HiddenField(validators=[InputRequired("This form is incomplete; reload the page.")])


def parse_version(field):
    """The trip version a form was built from, or None when the hidden field was tampered with."""
    raw = (field.data or "").strip()
    return int(raw) if re.fullmatch(r"[0-9]{1,9}", raw) else None


class WindowMixin:
    """Earliest/latest pickup, in local time, checked against now (UTC)."""

    window_start = LocalTimeField(
        "Earliest pickup", validators=[InputRequired("Enter the earliest pickup time.")]
    )
    window_end = LocalTimeField(
        "Latest pickup", validators=[InputRequired("Enter the latest pickup time.")]
    )

    def window_hints(self, stored_start=None):
        """Browser limits for the two time inputs: from now (less the grace) to the booking
        horizon (``booking_horizon_days``, see ``services.scheduling``).

        An edit may keep a window that has already begun: ``stored_start`` lowers the minimum.
        """
        now = utcnow()
        earliest = now - WINDOW_GRACE
        if stored_start is not None:
            earliest = min(earliest, to_minute(stored_start))
        return {"min": local_input(earliest), "max": local_input(now + scheduling.horizon())}

    def window_utc(self):
        """(start, end) in naive UTC, or (None, None) while a time is missing."""
        if self.window_start.data is None or self.window_end.data is None:
            return None, None
        return from_local(self.window_start.data), from_local(self.window_end.data)

    def check_window(self, unchanged=None):
        """Add per-field errors for a window that is past, reversed or too far ahead.

        ``unchanged`` is the stored (start, end): an edit that keeps the window
        as it was is not refused because time has moved on since.
        """
        start, end = self.window_utc()
        if start is None:
            return False
        ok = True
        now = utcnow()
        ahead = scheduling.horizon()
        too_far = f"can be at most {ahead.days} days ahead."
        unchanged = [to_minute(t) for t in unchanged] if unchanged else None
        if unchanged is None or start != unchanged[0]:
            if start < now - WINDOW_GRACE:
                self.window_start.errors.append("The earliest pickup is in the past.")
                ok = False
            elif start > now + ahead:
                self.window_start.errors.append("The earliest pickup " + too_far)
                ok = False
        if end <= start:
            self.window_end.errors.append("The latest pickup must be after the earliest pickup.")
            ok = False
        elif unchanged is None or end != unchanged[1]:
            if end > now + ahead:
                self.window_end.errors.append("The latest pickup " + too_far)
                ok = False
            elif end < now:
                self.window_end.errors.append("The latest pickup is in the past.")
                ok = False
        return ok


class NeedsMixin:
    """The crew's view of the patient: no name, no date of birth, no record number."""

    #: What a field message asks of the nurse when a need is above the level (``{level}``: the
    #: level every need asks for).
    CARE_REMEDY = "Choose {level}"

    mobility = SelectField(
        FIELD_LABELS["mobility"], choices=options(MOBILITIES), validate_choice=False,
        validators=[InputRequired("Choose the patient's mobility.")],
    )
    weight_kg = WholeNumberField(
        FIELD_LABELS["weight_kg"], invalid_value_message="Enter the weight in whole kilograms.",
        validators=[InputRequired("Enter the patient's weight in kg."),
                    NumberRange(1, 400, "Enter a weight from 1 to 400 kg.")],
    )
    isolation = SelectField(
        FIELD_LABELS["isolation"], choices=options(ISOLATIONS), default="none", validate_choice=False,
        validators=[InputRequired("Choose the isolation precautions (or none).")],
    )
    oxygen_lpm = FiniteNumberField(
        FIELD_LABELS["oxygen_lpm"], default=0, invalid_value_message="Enter the oxygen flow as a number.",
        render_kw={"step": "any"},
        validators=[InputRequired("Enter the oxygen flow (0 if none)."),
                    NumberRange(0, 25, "Enter an oxygen flow from 0 to 25 L/min.")],
    )
    cardiac_monitor = BooleanField(FIELD_LABELS["cardiac_monitor"])
    iv_pump = BooleanField(FIELD_LABELS["iv_pump"])
    ventilator = BooleanField(FIELD_LABELS["ventilator"])
    other_needs = StringField(
        FIELD_LABELS["other_needs"], filters=[one_line],
        validators=[Length(max=200, message="Keep other needs to 200 characters.")],
    )
    notes = TextAreaField(
        FIELD_LABELS["notes"], filters=[multi_line],
        validators=[Length(max=500, message="Keep notes to 500 characters.")],
    )
    care_override = BooleanField("Send at this level of care anyway")
    care_override_reason = StringField(
        "Reason for the override", filters=[one_line],
        validators=[Length(max=care_rules.OVERRIDE_REASON_MAX,
                           message=f"Keep the reason to {care_rules.OVERRIDE_REASON_MAX} characters.")],
    )

    def validate_mobility(self, field):
        """Only the listed mobilities."""
        if field.data not in MOBILITIES:
            raise ValidationError("Choose one of the listed mobility options.")

    def validate_isolation(self, field):
        """Only the listed isolations."""
        if field.data not in ISOLATIONS:
            raise ValidationError("Choose one of the listed isolation options.")

    def check_care(self, level, kept=None):
        """Add field errors for needs above ``level`` (the table of :mod:`..services.care_rules`),
        each on its own field, naming the need and the level it needs; or on the reason when the
        override is ticked without one.  ``kept`` is the request's stored override (reason,
        covered needs) on an edit: needs it covers pass without ticking it again.  Returns
        whether the needs may be saved at ``level``."""
        if level not in LEVELS or any(getattr(self, rule.need).errors for rule in care_rules.CARE_RULES):
            return True  # the level's or the need's own message says what is wrong
        needs = {rule.need: getattr(self, rule.need).data for rule in care_rules.CARE_RULES}
        short = care_rules.shortfalls(level, needs)
        if not short:
            return True
        if self.care_override.data:
            if care_rules.clean_reason(self.care_override_reason.data):
                return True
            if not self.care_override_reason.errors:
                self.care_override_reason.errors.append(
                    f"Give the reason for sending this request at {level}: "
                    + care_rules.summary(level, short) + ".")
            return False
        kept_reason, kept_needs = kept or (None, None)
        kept_needs = set((kept_needs or "").split(",")) if kept_reason else set()
        uncovered = [rule for rule in short if rule.need not in kept_needs]
        if not uncovered:
            return True
        required = care_rules.required_level(needs)
        remedy = self.CARE_REMEDY.format(level=required)
        for rule in uncovered:
            said = remedy
            if rule.minimum != required:  # another need asks for more: name the level all ask for
                said = f"All its needs together need {required}: {remedy[0].lower()}{remedy[1:]}"
            getattr(self, rule.need).errors.append(
                f"{rule.message(level)} {said}, or tick “{self.care_override.label.text}” below and give a reason.")
        return False

    def override_not_needed(self, level):
        """The notice for an override ticked with a reason while ``level`` covers every need,
        e.g. "No override needed: CCT covers every need; the reason given was not kept.";
        None otherwise.  The reason is not stored then (:func:`..services.trips.post`)."""
        if not (self.care_override.data and care_rules.clean_reason(self.care_override_reason.data)):
            return None
        if level not in LEVELS:
            return None
        needs = {rule.need: getattr(self, rule.need).data for rule in care_rules.CARE_RULES}
        if care_rules.shortfalls(level, needs):
            return None
        return f"No override needed: {level} covers every need; the reason given was not kept."

    def care_override_value(self):
        """The override reason to pass to the trips service: the typed reason when the box is
        ticked, else None."""
        return self.care_override_reason.data if self.care_override.data else None

    def needs_values(self):
        """The needs as model values."""
        return dict(
            mobility=self.mobility.data, weight_kg=self.weight_kg.data,
            isolation=self.isolation.data, oxygen_lpm=float(self.oxygen_lpm.data),
            cardiac_monitor=bool(self.cardiac_monitor.data), iv_pump=bool(self.iv_pump.data),
            ventilator=bool(self.ventilator.data), other_needs=self.other_needs.data or "",
            notes=self.notes.data or "",
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
        """The validated values as :func:`services.trips.post` takes them."""
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
        """The validated values as :func:`services.trips.edit` takes them.

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
