"""Forms of the EMS pages: bids, crew hand-back, units, availability windows, crew accounts."""
from wtforms import EmailField, HiddenField, SelectField, StringField, TimeField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import AnyOf, DataRequired, InputRequired, Length, Optional, Regexp, ValidationError

from ..formfields import FlaskForm, LocalTimeField
from ..localtime import from_local
from ..models.vocabulary import LEVEL_LABELS, UNIT_STATUSES
from ..services.bidding import BidRefused, validate_eta
from ..services.units import AVAILABILITY_KINDS
from ..submission_field import submission_field


class BidForm(FlaskForm):
    """A bid: one of the agency's units, an ETA to pickup, an optional note.

    Unit choices are the agency's units of a sufficient level; any other value
    is passed on so the service answers it with a clear message.
    """

    unit = SelectField("Unit", validate_choice=False,
                       validators=[DataRequired("Choose the unit that would go.")])
    eta_minutes = StringField(
        "ETA to pickup (minutes)",
        validators=[InputRequired("Enter the ETA to pickup in minutes."), Length(max=12)],
        render_kw={"inputmode": "numeric", "autocomplete": "off"},
    )
    note = StringField("Note for the hospital (optional)", validators=[Optional(), Length(max=200)])
    submission_id = submission_field()

    def validate_eta_minutes(self, field):
        try:
            validate_eta(field.data)
        except BidRefused as refused:
            raise ValidationError(refused.message) from None


class PairBidForm(BidForm):
    """Bids on a request and its return leg at once: a unit and an ETA for each."""

    return_unit = SelectField("Unit for the return", validate_choice=False,
                              validators=[DataRequired("Choose the unit for the return.")])
    return_eta_minutes = StringField(
        "ETA to the return pickup (minutes, from its window)",
        validators=[InputRequired("Enter the ETA to the return pickup in minutes."), Length(max=12)],
        render_kw={"inputmode": "numeric", "autocomplete": "off"},
    )

    def validate_return_eta_minutes(self, field):
        try:
            validate_eta(field.data)
        except BidRefused as refused:
            raise ValidationError(refused.message) from None


class HandBackForm(FlaskForm):
    """Giving a trip back before pickup: the reason is required."""

    reason = StringField("Reason for handing back", validators=[
        DataRequired("Say why the trip is handed back."), Length(max=300)])


class AdvanceForm(FlaskForm):
    """One tap of crew progress; ``step`` names the step the crew saw, so a double tap is refused."""

    step = HiddenField(validators=[DataRequired("No step given.")])


class UnitForm(FlaskForm):
    """A unit's number, level, base station and usual shift."""

    number = StringField("Unit number", validators=[DataRequired("Give the unit a number."),
                                                    Length(max=20)])
    level = SelectField("Level", choices=[SelectChoice(k, v) for k, v in LEVEL_LABELS.items()])
    base_station = StringField("Base station", validators=[Optional(), Length(max=120)])
    shift_start = TimeField("Shift starts", validators=[Optional()])
    shift_end = TimeField("Shift ends", validators=[Optional()])
    submission_id = submission_field()


class UnitStatusForm(FlaskForm):
    """A unit's new status."""

    status = SelectField("Status", choices=[SelectChoice(k, v) for k, v in UNIT_STATUSES.items()])


class AvailabilityForm(FlaskForm):
    """A window in which a unit is on shift, on break or out of service (local time)."""

    unit = SelectField("Unit", validate_choice=False, validators=[DataRequired("Choose a unit.")])
    kind = SelectField("Kind", choices=[SelectChoice(k, v) for k, v in AVAILABILITY_KINDS.items()])
    starts_at = LocalTimeField("From", validators=[InputRequired("Give the start date and time.")])
    ends_at = LocalTimeField("Until", validators=[InputRequired("Give the end date and time.")])
    note = StringField("Note (optional)", validators=[Optional(), Length(max=200)])
    submission_id = submission_field()

    def validate_ends_at(self, field):
        """The end after the start, in real time (a window may span a clock change)."""
        if self.starts_at.data and field.data and from_local(field.data) <= from_local(self.starts_at.data):
            raise ValidationError("The window must end after it starts.")


class CrewAccountForm(FlaskForm):
    """A new crew account of the agency (the center's user form's email and name checks)."""

    email = EmailField("Email", validators=[DataRequired("Enter the email."),
                                            Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                                                   message="Enter a valid email address."),
                                            Length(max=254)])
    display_name = StringField("Name shown", validators=[DataRequired("Enter a name."), Length(max=120)])


class CrewActiveForm(FlaskForm):
    """Deactivate (``active=0``) or reactivate (``active=1``) a crew account."""

    active = HiddenField(validators=[AnyOf(("0", "1"), message="Choose deactivate or reactivate.")])


class CrewResetForm(FlaskForm):
    """A button-only form (CSRF token): reset a crew member's password."""
