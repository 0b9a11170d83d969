"""Forms of the transport center: board filters, interventions, registry, users, configuration, audit.

Filters are plain WTForms forms read from the query string (no CSRF on a GET);
everything that changes state is a Flask-WTF form with its CSRF token.  Select
fields only accept the choices the view offers, so a forged id or role is a
per-field error (400), never a write.
"""
from markupsafe import Markup, escape
from wtforms import (
    BooleanField,
    EmailField,
    FloatField,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp
from wtforms.widgets import html_params

from ..formfields import FlaskForm, Form, LocalTimeField, WholeNumberField
from ..localtime import from_local
from ..models.hospital import CANCEL_REASONS
from ..models.vocabulary import LEVELS, ROLES, UNIT_STATUSES, URGENCIES
from ..services.oversight import BOARD_STATES
from ..services.registry import FACILITY_KINDS
from ..submission_field import submission_field


def optional_int(value):
    """``""`` (the "all" / "none" choice) is None; anything else must be a whole number."""
    if value in ("", None):
        return None
    return int(value)


def choices(pairs, blank=None):
    """Select options from a mapping or (value, label) pairs, with an optional blank first."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return ([SelectChoice("", blank)] if blank else []) + [SelectChoice(v, label) for v, label in items]


# --- filters (GET) -----------------------------------------------------------------------

class BoardFilterForm(Form):
    """The regional board's filters; choices of hospital and agency are set by the view."""

    hospital = SelectField("Hospital", coerce=optional_int)
    agency = SelectField("Assigned agency", coerce=optional_int)
    level = SelectField("Level of care", choices=choices({lv: lv for lv in LEVELS}, "All levels"), default="")
    urgency = SelectField("Urgency", choices=choices(URGENCIES, "All urgencies"), default="")
    state = SelectField("State", choices=choices(BOARD_STATES, "All states"), default="")
    risk = BooleanField("At risk only")


class UnitFilterForm(Form):
    """The units overview's filters; agency choices are set by the view."""

    agency = SelectField("Agency", coerce=optional_int)
    level = SelectField("Level", choices=choices({lv: lv for lv in LEVELS}, "All levels"), default="")
    status = SelectField("Status", choices=choices(UNIT_STATUSES, "All statuses"), default="")


class AuditFilterForm(Form):
    """The audit log's filters; times are entered in the region's time zone."""

    user = StringField("User (email)", validators=[Optional(), Length(max=254)])
    action = StringField("Action (starts with, e.g. trip.)", validators=[Optional(), Length(max=60)])
    entity_type = StringField("Entity type", validators=[Optional(), Length(max=40)])
    entity_id = StringField("Entity id", validators=[Optional(), Length(max=64)])
    since = LocalTimeField("From", ask_fold=False, validators=[Optional()])
    until = LocalTimeField("To", ask_fold=False, validators=[Optional()])

    def validate(self, extra_validators=None):
        """The range must run forwards (compared in UTC: a range may span a clock change)."""
        if not super().validate(extra_validators):
            return False
        if self.since.data and self.until.data and from_local(self.until.data) <= from_local(self.since.data):
            self.until.errors.append("The end of the range must be after its start.")
            return False
        return True


# --- interventions (POST) ----------------------------------------------------------------

class _VersionedForm(FlaskForm):
    """Carries the version of the request the coordinator was looking at."""

    version = HiddenField(validators=[InputRequired(), Regexp(r"^\d{1,9}$", message="Reload the page.")])


class AwardForm(_VersionedForm):
    bid = HiddenField(validators=[InputRequired(), Length(max=36)])


class _PairsSelect(widgets.Select):
    """A ``<select>`` of ``(value, label)`` choice pairs, written as WTForms' own ``Select`` (and
    :class:`dashboard.formfields.QuickSelect`) writes it, byte for byte, but straight from the
    pairs: WTForms makes two choice objects per option (it reads the choices twice, once to
    look for groups), which a picker of a few hundred units pays on every page view."""

    def __call__(self, field, **kwargs):
        kwargs.setdefault("id", field.id)
        flags = getattr(field, "flags", {})
        for k in dir(flags):
            if k in self.validation_attrs and k not in kwargs:
                kwargs[k] = getattr(flags, k)
        coerce, data = field.coerce, field.data
        options = "".join(
            f'<option {"selected " if coerce(value) == data else ""}value="{escape(value)}">'
            f'{escape(label or value)}</option>'
            for value, label in field.choices or ())
        # Safe: html_params escapes the attributes and every value and label is escaped above.
        return Markup(f"<select {html_params(name=field.name, **kwargs)}>{options}</select>")  # nosec B704


class PickerField(SelectField):
    """A select field of many choices, given as ``(value, label)`` pairs (no groups, no
    per-option attributes) and rendered by :class:`_PairsSelect`; validated as ``SelectField``."""

    widget = _PairsSelect()


class AssignForm(_VersionedForm):
    agency = PickerField("Agency", coerce=optional_int,
                         validators=[InputRequired("Choose the agency.")])
    unit = PickerField("Unit", coerce=optional_int, validators=[InputRequired("Choose the unit.")])
    eta_minutes = WholeNumberField(
        "ETA to pickup (minutes, as agreed with the agency)",
        validators=[InputRequired("Enter the ETA in whole minutes."),
                    NumberRange(1, 24 * 60, "Enter an ETA from 1 to 1440 minutes.")],
    )
    reason = TextAreaField("Reason for the assignment",
                           validators=[DataRequired("Say why the center assigns this request."),
                                       Length(max=250)])


class ExtendForm(_VersionedForm):
    minutes = WholeNumberField("Extend the bidding deadline by (minutes)",
                           validators=[InputRequired("Enter the minutes."),
                                       NumberRange(5, 12 * 60, "Enter 5 to 720 minutes.")])
    note = StringField("Note", validators=[Optional(), Length(max=200)])


class ReopenForm(_VersionedForm):
    reason = TextAreaField("Reason for re-opening",
                           validators=[DataRequired("Say why the request is re-opened."), Length(max=250)])


class CancelForm(_VersionedForm):
    reason = SelectField("Reason", choices=choices(CANCEL_REASONS, "Choose a reason"),
                         validators=[DataRequired("Choose a reason.")])
    note = TextAreaField("Note", validators=[Optional(), Length(max=300)])

    def validate_note(self, field):
        """"Other" needs the reason spelled out."""
        if self.reason.data == "other" and not (field.data or "").strip():
            raise ValueError("Say what the other reason is.")


# --- registry ------------------------------------------------------------------------------

_CODE = Regexp(r"^[A-Z0-9]{2,12}$", message="2 to 12 letters or digits.")


def _upper(value):
    return value.strip().upper() if isinstance(value, str) else value


class HospitalForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Enter the hospital's name."), Length(max=160)])
    short_code = StringField("Short code", filters=[_upper],
                             validators=[DataRequired("Enter a short code."), _CODE])
    city = StringField("City", validators=[Optional(), Length(max=80)])
    region = StringField("Region", validators=[Optional(), Length(max=80)])
    phone = StringField("Phone", validators=[Optional(), Length(max=40)])
    active = BooleanField("Active", default=True)


class NewHospitalForm(HospitalForm):
    """A new hospital comes with its main campus as its first facility."""

    facility_address = StringField("Main campus address",
                                   validators=[DataRequired("Enter the main campus address."),
                                               Length(max=240)])
    facility_lat = FloatField("Latitude", validators=[Optional(), NumberRange(-90, 90)])
    facility_lon = FloatField("Longitude", validators=[Optional(), NumberRange(-180, 180)])
    submission_id = submission_field()


class FacilityForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Enter the facility's name."), Length(max=160)])
    kind = SelectField("Kind", choices=choices(FACILITY_KINDS))
    address = StringField("Address", validators=[DataRequired("Enter the address."), Length(max=240)])
    city = StringField("City", validators=[Optional(), Length(max=80)])
    lat = FloatField("Latitude", validators=[Optional(), NumberRange(-90, 90, "From -90 to 90.")])
    lon = FloatField("Longitude", validators=[Optional(), NumberRange(-180, 180, "From -180 to 180.")])
    active = BooleanField("Active", default=True)
    submission_id = submission_field()


class AgencyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Enter the agency's name."), Length(max=160)])
    short_code = StringField("Short code", filters=[_upper],
                             validators=[DataRequired("Enter a short code."), _CODE])
    levels = SelectMultipleField(
        "Levels of care", choices=choices({lv: lv for lv in LEVELS}),
        widget=widgets.ListWidget(prefix_label=False), option_widget=widgets.CheckboxInput(),
        validators=[DataRequired("Choose at least one level of care.")],
    )
    service_area = StringField("Service area", validators=[Optional(), Length(max=240)])
    base_lat = FloatField("Base latitude", validators=[Optional(), NumberRange(-90, 90, "From -90 to 90.")])
    base_lon = FloatField("Base longitude",
                          validators=[Optional(), NumberRange(-180, 180, "From -180 to 180.")])
    service_radius_km = WholeNumberField("Service radius (km)", default=80,
                                     validators=[InputRequired("Enter the radius."),
                                                 NumberRange(1, 1000, "From 1 to 1000 km.")])
    phone = StringField("Phone", validators=[Optional(), Length(max=40)])
    active = BooleanField("Active", default=True)
    submission_id = submission_field()


# --- users -----------------------------------------------------------------------------------

class UserForm(FlaskForm):
    """Create or edit an account; hospital and agency choices are set by the view."""

    # A plain shape check: reserved domains (the demo's .test) are fine for an account.
    email = EmailField("Email", validators=[DataRequired("Enter the email."),
                                            Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                                                   message="Enter a valid email address."),
                                            Length(max=254)])
    display_name = StringField("Name shown", validators=[DataRequired("Enter a name."), Length(max=120)])
    role = SelectField("Role", choices=choices(ROLES))
    hospital = SelectField("Hospital", coerce=optional_int)
    agency = SelectField("Agency", coerce=optional_int)
    active = BooleanField("Active", default=True)
    org_admin = BooleanField("Organisation administrator")
    submission_id = submission_field()


class UserFilterForm(Form):
    q = StringField("Email or name", validators=[Optional(), Length(max=120)])
    role = SelectField("Role", choices=choices(ROLES, "All roles"), default="")
    status = SelectField("Status", default="",
                          choices=choices({"": "Active and deactivated", "active": "Active",
                                           "inactive": "Deactivated"}))


class ConfirmForm(FlaskForm):
    """A button-only form (CSRF token), e.g. reset a password."""


def config_form_class(settings, policies):
    """A form with one field per setting; the values are checked by ``configuration.validate``."""

    class ConfigForm(FlaskForm):
        pass

    for key, (_default, _kind, low, high, label) in settings.items():
        if key == "auto_award_policy":
            field = SelectField(label, choices=choices(policies), validate_choice=False)
        elif key == "escalation_ladder":
            field = StringField(label)
        else:
            field = StringField(label, render_kw={"type": "number", "min": low, "max": high,
                                                  "step": 1, "inputmode": "numeric"})
        setattr(ConfigForm, key, field)
    return ConfigForm
