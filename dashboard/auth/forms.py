"""Sign-in and password forms."""
from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, EqualTo, Length

from ..formfields import FlaskForm


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired("Enter your email."), Length(max=254)])
    password = PasswordField(
        "Password", validators=[DataRequired("Enter your password."), Length(max=128)]
    )
    next = HiddenField()


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(
        "Current password", validators=[DataRequired("Enter your current password."), Length(max=128)]
    )
    new_password = PasswordField(
        "New password", validators=[DataRequired("Choose a new password."), Length(min=10, max=128)]
    )
    confirm = PasswordField(
        "Repeat new password",
        validators=[DataRequired("Repeat the new password."), EqualTo("new_password", "The two new passwords differ.")],
    )
