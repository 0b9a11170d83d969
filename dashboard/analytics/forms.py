"""The analytics filter: a GET form (no CSRF: it changes nothing) for period and filters."""
import re
from datetime import date

from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.widgets import DateInput

from ..formfields import FlaskForm
from ..models.vocabulary import LEVEL_LABELS, URGENCIES
from ..services.analytics.period import PERIODS, AnalyticsInputError, Scope, resolve_period


def _choices(blank, pairs):
    """Select options: a blank "all" option first, then (value, label) pairs."""
    return [SelectChoice("", blank)] + [SelectChoice(value, label) for value, label in pairs]


ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class AnalyticsFilterForm(FlaskForm):
    """Period (today, 7 or 30 days, custom local dates) and hospital/agency/level/urgency filters.

    ``hospitals`` and ``agencies`` are ``[(public_id, name, registry id)]``; an
    organisation a role is bound to is passed as ``hospital_id``/``agency_id``
    and its filter is then fixed (not offered).
    """

    class Meta:
        csrf = False

    period = SelectField("Period", choices=[SelectChoice(v, label) for v, label in PERIODS.items()],
                         default="7d", validate_choice=False)
    start = StringField("From (local date)", widget=DateInput())
    end = StringField("To (local date)", widget=DateInput())
    hospital = SelectField("Hospital", validate_choice=False)
    agency = SelectField("Agency", validate_choice=False)
    level = SelectField("Level of care", choices=_choices("All levels", LEVEL_LABELS.items()),
                        validate_choice=False)
    urgency = SelectField("Urgency", choices=_choices("All urgencies", URGENCIES.items()),
                          validate_choice=False)

    def __init__(self, formdata, hospitals, agencies, today, hospital_id=None, agency_id=None):
        super().__init__(formdata=formdata)
        self.today = today
        self.fixed_hospital_id, self.fixed_agency_id = hospital_id, agency_id
        self.hospital_ids = {public_id: rid for public_id, _name, rid in hospitals}
        self.agency_ids = {public_id: rid for public_id, _name, rid in agencies}
        self.hospital.choices = _choices("All hospitals", [(p, n) for p, n, _ in hospitals])
        self.agency.choices = _choices("All agencies", [(p, n) for p, n, _ in agencies])
        self.resolved_period = None
        self.scope = None

    @staticmethod
    def _date(field):
        """The field's date, or None when empty; a malformed date is a field error."""
        text = (field.data or "").strip()
        if not text:
            return None
        try:
            if not ISO_DATE.fullmatch(text):
                raise ValueError(text)
            return date.fromisoformat(text)
        except ValueError:
            field.errors.append("Enter the date as YYYY-MM-DD, e.g. 2025-03-31.")
            return None

    def validate(self, extra_validators=None):
        """Check every field; on success ``resolved_period`` and ``scope`` are set."""
        super().validate(extra_validators)
        errors = {}
        if self.period.data not in PERIODS:
            errors["period"] = "Choose a period from the list."
        for name, field, known in (("hospital", self.hospital, self.hospital_ids),
                                   ("agency", self.agency, self.agency_ids)):
            if field.data and field.data not in known:
                errors[name] = f"Unknown {name}: choose one from the list."
        if self.level.data and self.level.data not in LEVEL_LABELS:
            errors["level"] = "Unknown level of care: choose BLS, ALS or CCT."
        if self.urgency.data and self.urgency.data not in URGENCIES:
            errors["urgency"] = "Unknown urgency: choose routine, urgent or emergent."
        start, end = self._date(self.start), self._date(self.end)
        if "period" not in errors and not self.start.errors and not self.end.errors:
            try:
                self.resolved_period = resolve_period(self.period.data, start, end, self.today)
            except AnalyticsInputError as exc:
                errors.update(exc.errors)
        for name, message in errors.items():
            getattr(self, name).errors.append(message)
        if any(field.errors for field in self):
            self.resolved_period = None
            return False
        self.scope = Scope(
            hospital_id=self.fixed_hospital_id or self.hospital_ids.get(self.hospital.data),
            agency_id=self.fixed_agency_id or self.agency_ids.get(self.agency.data),
            level=self.level.data or None,
            urgency=self.urgency.data or None,
        )
        return True

    def query_args(self):
        """The validated filters as query arguments (for CSV links)."""
        args = {"period": self.period.data}
        if self.period.data == "custom":
            args.update(start=self.resolved_period.start.isoformat(), end=self.resolved_period.end.isoformat())
        for name in ("hospital", "agency", "level", "urgency"):
            value = getattr(self, name).data
            if value:
                args[name] = value
        return args
