"""Series forms: a recurring transport, its exceptions, "this and later" and cancelling.

The request part reuses the new-request form's fields and checks (``hospital.forms``); the
rule part is new.  Dates and the pickup time are the region's local wall-clock ones.
"""
import re

from wtforms import (
    DateField,
    HiddenField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TimeField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from ..formfields import FlaskForm, LocalTimeField, WholeNumberField
from ..hospital.forms import CancelForm, NeedsMixin, RequestForm, one_line, options
from ..models.hospital import WEEKDAYS
from ..services import series as series_service
from ..submission_field import submission_field

ENDS = {"until": "On a date", "count": "After a number of occurrences"}
FOLDS = {"0": "The first (before the clocks go back)", "1": "The second (after the clocks go back)"}
EXCEPTIONS = {"skip": "Skip this date", "move": "Move this occurrence"}


class MultiCheckboxField(SelectMultipleField):
    """Checkboxes for a multiple choice (the days of the week)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _version_field():
    return HiddenField(validators=[InputRequired("This form is incomplete; reload the page.")])


class RuleMixin:
    """When: the days or interval, the local pickup time, the start and the end."""

    frequency = RadioField("Repeats", choices=options(series_service.FREQUENCIES), default="weekly",
                           validate_choice=False, validators=[InputRequired("Choose how the series repeats.")])
    weekdays = MultiCheckboxField("On", choices=options({str(i): name for i, name in enumerate(WEEKDAYS)}),
                                  validate_choice=False)
    interval = WholeNumberField(
        "Every (weeks or days)", default=1, invalid_value_message="Enter the interval in whole numbers.",
        validators=[InputRequired("Enter the interval (1 for every week or day)."),
                    NumberRange(1, 30, "Enter an interval from 1 to 30.")])
    pickup_time = TimeField("Pickup time (local)", validators=[InputRequired("Enter the pickup time.")])
    window_minutes = WholeNumberField(
        "Pickup window (minutes)", default=60, invalid_value_message="Enter the window in whole minutes.",
        validators=[InputRequired("Enter how long the pickup window lasts."),
                    NumberRange(15, 480, "Enter a window from 15 to 480 minutes.")])
    fold = RadioField("If the pickup time happens twice (clocks go back)", choices=options(FOLDS),
                      default="0", validate_choice=False)

    def validate_frequency(self, field):
        """Only weekly or daily."""
        if field.data not in series_service.FREQUENCIES:
            raise ValidationError("Choose one of the listed ways to repeat.")

    def validate_weekdays(self, field):
        """Only Monday to Sunday; at least one for a weekly series."""
        if any(value not in {str(i) for i in range(7)} for value in field.data or []):
            raise ValidationError("Choose days from the list.")
        if self.frequency.data == "weekly" and not field.data:
            raise ValidationError("Choose at least one day of the week.")

    def validate_fold(self, field):
        """Only the first or the second."""
        if field.data not in FOLDS:
            raise ValidationError("Choose the first or the second.")

    def rule_values(self):
        return dict(
            frequency=self.frequency.data, interval=self.interval.data,
            weekdays=",".join(sorted(set(self.weekdays.data or []))) if self.frequency.data == "weekly" else "",
            pickup_time=self.pickup_time.data.replace(second=0, microsecond=0),
            window_minutes=self.window_minutes.data, fold=int(self.fold.data or 0))


class SeriesForm(RuleMixin, RequestForm):
    """A new recurring series: the request every occurrence copies, and its rule."""

    window_start = None  # each occurrence's window comes from the rule
    window_end = None
    reposted_from = None
    reposted_version = None
    urgency = None  # scheduled work is routine
    start_date = DateField("First date", validators=[InputRequired("Enter the first date.")])
    end = RadioField("Ends", choices=options(ENDS), default="until", validate_choice=False,
                     validators=[InputRequired("Choose how the series ends.")])
    until_date = DateField("Last date", validators=[Optional()])
    occurrence_count = WholeNumberField(
        "Number of occurrences", invalid_value_message="Enter the number in whole numbers.",
        validators=[Optional(), NumberRange(1, series_service.MAX_COUNT,
                                            f"Enter from 1 to {series_service.MAX_COUNT}.")])
    standing_agency = SelectField("Standing order: offer first to", validate_choice=False)
    standing_order_minutes = WholeNumberField(
        "Its head start (minutes)", default=30, invalid_value_message="Enter the minutes in whole numbers.",
        validators=[Optional(), NumberRange(1, 1440, "Enter from 1 to 1440 minutes.")])
    submission_id = submission_field()

    def offer_agencies(self, agencies):
        """The active agencies a standing order may name."""
        self._agencies = {str(a.id): a for a in agencies}
        self.standing_agency.choices = options({str(a.id): a.name for a in agencies},
                                               "None: the usual invitation")

    @property
    def standing(self):
        return self._agencies.get(self.standing_agency.data or "")

    def validate_end(self, field):
        if field.data not in ENDS:
            raise ValidationError("Choose how the series ends.")

    def validate_standing_agency(self, field):
        if field.data and field.data not in self._agencies:
            raise ValidationError("Choose one of the listed agencies.")

    def validate(self, extra_validators=None):
        """Field checks, the destination rule of a request, then the rule as a whole."""
        ok = FlaskForm.validate(self, extra_validators)
        chosen = self.destination_facility.data or ""
        if chosen and chosen not in self._all:
            self.destination_facility.errors.append("Choose one of the listed facilities.")
            ok = False
        elif chosen and self.destination_address.data:
            self.destination_address.errors.append("Give either a registered facility or an address, not both.")
            ok = False
        elif not chosen and not self.destination_address.data:
            self.destination_facility.errors.append("Choose the destination facility, or type an address below.")
            ok = False
        elif chosen and chosen == self.origin_facility.data:
            self.destination_facility.errors.append("The destination is the facility the patient leaves from.")
            ok = False
        if self.invite_mode.data == "preferred_then_all" and self.invite_all_after_minutes.data is None \
                and not self.invite_all_after_minutes.errors:
            self.invite_all_after_minutes.errors.append("Say after how many minutes every agency may bid (1 to 240).")
            ok = False
        if self.end.data == "until" and self.until_date.data is None and not self.until_date.errors:
            self.until_date.errors.append("Enter the last date.")
            ok = False
        if self.end.data == "count" and self.occurrence_count.data is None and not self.occurrence_count.errors:
            self.occurrence_count.errors.append("Enter the number of occurrences.")
            ok = False
        if ok:
            values = self.series_values()
            problems = series_service.check_rule(dict(values, weekdays=self.weekdays.data or []))
            for name, message in problems.items():
                getattr(self, name if name != "end" else "end").errors.append(message)
            ok = not problems
        return ok

    def series_values(self):
        """The validated values as :func:`services.series.create` takes them."""
        destination = self.destination
        after = self.invite_all_after_minutes.data if self.invite_mode.data == "preferred_then_all" else None
        standing = self.standing
        return dict(
            self.rule_values(),
            start_date=self.start_date.data,
            until_date=self.until_date.data if self.end.data == "until" else None,
            occurrence_count=self.occurrence_count.data if self.end.data == "count" else None,
            origin_facility_id=self.origin.id, pickup_location=self.pickup_location.data,
            destination_facility_id=destination.id if destination else None,
            destination_address="" if destination else self.destination_address.data,
            level_of_care=self.level_of_care.data, urgency="routine", patient_ref=self.patient_ref.data,
            age_group=self.age_group.data, bid_deadline_minutes=self.bid_deadline_minutes.data,
            invite_mode=self.invite_mode.data, invite_all_after_minutes=after,
            standing_agency_id=standing.id if standing else None,
            standing_order_minutes=(self.standing_order_minutes.data or 30) if standing else None,
            **self.needs_values())


class ExceptionForm(FlaskForm):
    """Skip one date of the series, or move its occurrence to another local time."""

    day = DateField("Date of the series", validators=[InputRequired("Enter the date of the series.")])
    kind = RadioField("Change", choices=options(EXCEPTIONS), default="skip", validate_choice=False,
                      validators=[InputRequired("Choose skip or move.")])
    moved_to = LocalTimeField("New pickup (local)", validators=[Optional()])
    note = StringField("Note", filters=[one_line],
                       validators=[Length(max=200, message="Keep the note to 200 characters.")])

    def validate_kind(self, field):
        if field.data not in EXCEPTIONS:
            raise ValidationError("Choose skip or move.")

    def validate(self, extra_validators=None):
        """A move needs its new time."""
        ok = super().validate(extra_validators)
        if self.kind.data == "move" and self.moved_to.data is None and not self.moved_to.errors:
            self.moved_to.errors = list(self.moved_to.errors) + ["Enter the new pickup time."]
            ok = False
        return ok


class ChangeForm(RuleMixin, NeedsMixin, FlaskForm):
    """"This and later": the rule's time and days and the needs, from a date on."""

    frequency = None  # the kind of rule stays; its days, interval and time may change
    from_day = DateField("From", validators=[InputRequired("Enter the first date the change applies to.")])
    pickup_location = StringField(
        "Pickup location", filters=[one_line],
        validators=[InputRequired("Say where in the facility the crew picks up."),
                    Length(max=120, message="Keep the pickup location to 120 characters.")])
    version = _version_field()

    def validate_weekdays(self, field):
        if any(value not in {str(i) for i in range(7)} for value in field.data or []):
            raise ValidationError("Choose days from the list.")
        if self._weekly and not field.data:
            raise ValidationError("Choose at least one day of the week.")

    def fill_from(self, series):
        self.weekdays.data = [str(d) for d in series.weekday_list]
        for name in ("interval", "pickup_time", "window_minutes", "pickup_location", "mobility",
                     "weight_kg", "isolation", "oxygen_lpm", "cardiac_monitor", "iv_pump", "ventilator",
                     "other_needs", "notes"):
            getattr(self, name).data = getattr(series, name)
        self.fold.data = str(series.fold)
        self.version.data = str(series.version)

    def changes(self, series):
        values = dict(
            interval=self.interval.data,
            weekdays=",".join(sorted(set(self.weekdays.data or []))) if series.frequency == "weekly" else "",
            pickup_time=self.pickup_time.data.replace(second=0, microsecond=0),
            window_minutes=self.window_minutes.data, fold=int(self.fold.data or 0),
            pickup_location=self.pickup_location.data, **self.needs_values())
        return values


class SeriesCancelForm(CancelForm):
    """Cancel the series (its occurrences still ahead) with a reason."""


def parse_version(field):
    raw = (field.data or "").strip()
    return int(raw) if re.fullmatch(r"[0-9]{1,9}", raw) else None
