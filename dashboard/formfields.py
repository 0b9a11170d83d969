"""Form fields shared by the blueprints: bounded numbers and the region's local times.

Every value is bounded before it is converted: a whole number of hundreds of digits or a
date in year 9999 is a message on its field, never an overflow further on.
"""
import math
import re

from wtforms import DateTimeLocalField, FloatField, IntegerField
from wtforms.validators import NumberRange, StopValidation

from .localtime import RANGE_MESSAGE, in_range

#: More digits than any count, minute or kilometre the forms take.
MAX_DIGITS = 9
_WHOLE = re.compile(r"[+-]?[0-9]+")


def _range_message(field):
    """The message of the field's :class:`NumberRange`, if it has one."""
    for validator in field.validators:
        if isinstance(validator, NumberRange) and validator.message:
            return validator.message
    return None


class WholeNumberField(IntegerField):
    """A whole number of at most :data:`MAX_DIGITS` digits; an empty input is "missing" (for the
    validators), not "not a number".  A longer number is refused with the field's range message
    (its :class:`NumberRange`), before any conversion."""

    def process_formdata(self, valuelist):
        if valuelist and not str(valuelist[0]).strip():
            self.data = None
            return
        if valuelist:
            text = str(valuelist[0]).strip()
            if _WHOLE.fullmatch(text) and len(text.lstrip("+-")) > MAX_DIGITS:
                self.data = None
                raise ValueError(_range_message(self) or f"Enter a number of at most {MAX_DIGITS} digits.")
        super().process_formdata(valuelist)

    def pre_validate(self, form):
        """A value that could not be read has its message already; the range check is not run on it."""
        if self.process_errors:
            raise StopValidation()


class FiniteNumberField(FloatField):
    """A decimal number that must be finite (``nan`` and ``inf`` are not numbers here)."""

    def process_formdata(self, valuelist):
        if valuelist and not str(valuelist[0]).strip():
            self.data = None
            return
        super().process_formdata(valuelist)
        if self.data is not None and not math.isfinite(self.data):
            self.data = None
            raise ValueError(self.invalid_value_message)

    def pre_validate(self, form):
        """A value that could not be read has its message already; the range check is not run on it."""
        if self.process_errors:
            raise StopValidation()


class LocalTimeField(DateTimeLocalField):
    """A ``datetime-local`` input read as the region's local time, from 2000 to 2100."""

    def __init__(self, label=None, validators=None, **kwargs):
        kwargs.setdefault("format", ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"])
        kwargs.setdefault("invalid_value_message", "Enter a date and time, e.g. 2026-11-25 14:30.")
        super().__init__(label, validators, **kwargs)

    def process_formdata(self, valuelist):
        if valuelist and not " ".join(valuelist).strip():
            self.data = None
            return
        if valuelist and len(" ".join(valuelist)) > 40:
            self.data = None
            raise ValueError(self.invalid_value_message)
        super().process_formdata(valuelist)
        if self.data is None:
            return
        if not in_range(self.data):
            self.data = None
            raise ValueError(RANGE_MESSAGE)

    def pre_validate(self, form):
        """A value that could not be read has its message already."""
        if self.process_errors:
            raise StopValidation()
