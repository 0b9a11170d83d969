"""Forms of return legs, will-call release and the patient's readiness (``services.returns``)."""
from wtforms import RadioField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from ..formfields import FlaskForm, LocalTimeField
from ..localtime import from_local
from ..models.vocabulary import URGENCIES
from ..services.returns import RETURN_KINDS
from .forms import one_line, options


class ReturnForm(FlaskForm):
    """A return leg: will-call, or a fixed pickup window (local time)."""

    kind = RadioField("Return", choices=options(RETURN_KINDS), default="will_call", validate_choice=False,
                      validators=[InputRequired("Choose will-call or a fixed time.")])
    window_start = LocalTimeField("Earliest pickup", validators=[Optional()])
    window_end = LocalTimeField("Latest pickup", validators=[Optional()])

    def validate_kind(self, field):
        if field.data not in RETURN_KINDS:
            raise ValidationError("Choose will-call or a fixed time.")

    def validate(self, extra_validators=None):
        """A fixed return needs both times."""
        ok = super().validate(extra_validators)
        if ok and self.kind.data == "fixed" and (self.window_start.data is None or self.window_end.data is None):
            self.window_start.errors = list(self.window_start.errors) + ["Give the return's pickup window."]
            ok = False
        return ok

    def window_utc(self):
        return from_local(self.window_start.data), from_local(self.window_end.data)


class ReleaseForm(FlaskForm):
    """The patient is ready: the urgency the return gets now."""

    urgency = RadioField("Urgency", choices=options(URGENCIES), default="routine", validate_choice=False,
                         validators=[InputRequired("Choose the urgency.")])

    def validate_urgency(self, field):
        if field.data not in URGENCIES:
            raise ValidationError("Choose routine, urgent or emergent.")


class NotReadyForm(FlaskForm):
    """The patient was not ready when the crew arrived: why."""

    reason = StringField("Reason", filters=[one_line],
                         validators=[DataRequired("Say why the patient is not ready."),
                                     Length(max=200, message="Keep the reason to 200 characters.")])
