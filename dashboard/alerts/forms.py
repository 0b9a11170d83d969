"""Alert settings: which kinds are on, and which levels of care and urgencies a new request needs."""
from wtforms import BooleanField, SelectField, SelectMultipleField, StringField, widgets
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from ..formfields import FlaskForm
from ..models.vocabulary import LEVEL_LABELS, URGENCIES
from ..submission_field import submission_field


def _checkboxes(label, choices):
    return SelectMultipleField(label, choices=[SelectChoice(value, text) for value, text in choices], widget=widgets.ListWidget(prefix_label=False),
                               option_widget=widgets.CheckboxInput())


def settings_form_class(kinds):
    """A form for ``kinds`` (``[(kind, label)]``): one checkbox each, and, when the EMS new-request
    kind is among them, the levels of care and urgencies it is wanted for (none ticked: all)."""

    class AlertSettingsForm(FlaskForm):
        enabled = _checkboxes("Alert me of", list(kinds))
        email = _checkboxes("Also by email", list(kinds))
        digest = BooleanField("Alert emails as one digest an hour (rather than within the minute)")

    if any(kind == "ems.new_request" for kind, _label in kinds):
        AlertSettingsForm.levels = _checkboxes("New requests of these levels of care (none ticked: all)",
                                               list(LEVEL_LABELS.items()))
        AlertSettingsForm.urgencies = _checkboxes("New requests of these urgencies (none ticked: all)",
                                                  list(URGENCIES.items()))
    return AlertSettingsForm


class ButtonForm(FlaskForm):
    """A button-only form (its CSRF token)."""


def webhook_form_class(organisations, kind_choices):
    """Register an endpoint: the organisation (``[(scope, name)]``), its address and the alert
    kinds it is told of (``[(kind, label)]``, every role's; checked against the organisation's)."""

    class WebhookForm(FlaskForm):
        organisation = SelectField("Organisation", choices=[SelectChoice(v, t) for v, t in organisations],
                                   validators=[DataRequired("Choose the organisation.")])
        url = StringField("Endpoint address (https://)", validators=[
            DataRequired("Enter the endpoint's address."), Length(max=500)])
        kinds = _checkboxes("Alert kinds it is told of", list(kind_choices))
        submission_id = submission_field()

    return WebhookForm
