"""Pieces of the hospital's forms: text filters, choices, the pickup window and the patient's
needs (mixins), the hidden version field.

Every value is checked on the server, with a message per field; the browser gets the same
limits as hints (``required``, ``min``/``max``, ``maxlength``).  Times are entered in the
region's zone and checked in UTC.  The forms themselves are in :mod:`.forms`.
"""
import re
from datetime import timedelta

from wtforms import (
    BooleanField,
    HiddenField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, NumberRange, ValidationError

from ..formfields import FiniteNumberField, LocalTimeField, WholeNumberField
from ..localtime import from_local, to_local
from ..models.base import utcnow
from ..models.hospital import FIELD_LABELS, ISOLATIONS
from ..models.vocabulary import LEVELS, MOBILITIES
from ..services import care_rules, scheduling

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
        None otherwise.  The reason is not stored then (:func:`..services.trip_posting.post`)."""
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


