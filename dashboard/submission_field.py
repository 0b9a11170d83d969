"""The hidden one-time token every creating form carries (see ``services.submissions``)."""
from wtforms import HiddenField
from wtforms.validators import ValidationError

from .services.submissions import TOKEN_MESSAGE, new_token, valid_token


def _token_shape(_form, field):
    """Empty (an old page: not deduplicated) or a token as the form made it; else 400."""
    if field.data and not valid_token(field.data):
        raise ValidationError(TOKEN_MESSAGE)


def submission_field():
    """``submission_id``: a fresh token each time the form is rendered; kept when the form is
    shown again with its errors (nothing was created), so the next send is still the first.
    Hidden, so it takes no place in the Tab order."""
    return HiddenField(default=new_token, validators=[_token_shape])
