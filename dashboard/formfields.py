"""Form fields shared by the blueprints: bounded numbers, the region's local times, and the
base forms that keep typed text free of invisible formatting characters.

Every value is bounded before it is converted: a whole number of hundreds of digits or a
date in year 9999 is a message on its field, never an overflow further on.
"""
import math
import re
import unicodedata

import flask_wtf
import wtforms
from markupsafe import Markup, escape
from wtforms import (
    DateTimeLocalField,
    FloatField,
    HiddenField,
    IntegerField,
    PasswordField,
    StringField,
    widgets,
)
from wtforms.validators import NumberRange, StopValidation, ValidationError
from wtforms.widgets import DateTimeLocalInput

from .localtime import RANGE_MESSAGE, clock_change, fold_message, fold_options, gap_message, in_range

#: More digits than any count, minute or kilometre the forms take.
MAX_DIGITS = 9
_WHOLE = re.compile(r"[+-]?[\d_]+")


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
            if len(text) > MAX_DIGITS + 1:  # a sign and MAX_DIGITS digits at most: int() is not reached
                self.data = None
                if _WHOLE.fullmatch(text):
                    raise ValueError(_range_message(self) or f"Enter a number of at most {MAX_DIGITS} digits.")
                raise ValueError(self.invalid_value_message or "Enter a whole number.")
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

    def _value(self):
        """A stored whole number without its ".0" (20.0 is shown "20"), as the pages show it."""
        if self.raw_data:
            return self.raw_data[0]
        if isinstance(self.data, float) and self.data.is_integer():
            return str(int(self.data))
        return super()._value()


class LocalTimeInput(DateTimeLocalInput):
    """A ``datetime-local`` input; when the time entered happens twice (the clocks go back), two
    radio buttons after it choose which (``<name>_fold``: 0 the first, 1 the second)."""

    def __call__(self, field, **kwargs):
        html = super().__call__(field, **kwargs)
        options = field.fold_choices()
        if not options:
            return html
        checked = field.chosen_fold()
        radio = Markup('<label class="check"><input type="radio" name="{}_fold" id="{}-fold-{}" value="{}"{}> '
                       "{}</label>")
        radios = Markup("").join(
            radio.format(field.name, field.id, fold, fold, Markup(" checked") if checked == fold else "", label)
            for fold, label in options)
        return html + Markup('<fieldset class="fold-choice"><legend>Which {}?</legend>{}</fieldset>').format(
            f"{field.data:%H:%M}", radios)


class LocalTimeField(DateTimeLocalField):
    """A ``datetime-local`` input read as the region's local time, from 2000 to 2100.

    A time the clocks skip is refused with a message naming the change.  A time that happens
    twice needs ``<name>_fold`` (0 or 1; the input offers it as a choice) unless ``ask_fold`` is
    false (filters), where it is the first.  ``data`` is a naive local datetime whose ``fold``
    says which, so :func:`..localtime.from_local` gives the right UTC instant.
    """

    widget = LocalTimeInput()

    def __init__(self, label=None, validators=None, ask_fold=True, **kwargs):
        kwargs.setdefault("format", ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"])
        kwargs.setdefault("invalid_value_message", "Enter a date and time, e.g. 2026-11-25 14:30.")
        super().__init__(label, validators, **kwargs)
        self.ask_fold = ask_fold
        self.fold_raw = None

    def process(self, formdata, *args, **kwargs):
        self.fold_raw = formdata.get(f"{self.name}_fold") if formdata is not None else None
        super().process(formdata, *args, **kwargs)

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
        if self.fold_raw in ("0", "1"):
            self.data = self.data.replace(fold=int(self.fold_raw))

    def pre_validate(self, form):
        """Refuse a time the clocks skip, and a repeated one whose occurrence was not chosen."""
        if self.process_errors:
            raise StopValidation()
        if self.data is None:
            return
        change = clock_change(self.data)
        if change == "gap":
            raise StopValidation(gap_message(self.data))
        if change == "fold" and self.ask_fold and self.fold_raw not in ("0", "1"):
            raise StopValidation(fold_message(self.data))

    def fold_choices(self):
        """``[(fold, label)]`` when the time shown happens twice and the form asks which, else ``[]``."""
        if not self.ask_fold or self.data is None or clock_change(self.data) != "fold":
            return []
        return fold_options(self.data)

    def chosen_fold(self):
        """The occurrence chosen (0 or 1), that of a stored value shown, or None."""
        if self.fold_raw in ("0", "1"):
            return int(self.fold_raw)
        return None if self.raw_data else self.data.fold


# --- text as typed -------------------------------------------------------------------------

#: Format characters (Unicode category Cf) that typed text may keep: ZERO WIDTH NON-JOINER and
#: ZERO WIDTH JOINER, which Persian, Indic scripts and emoji sequences need to read right.
ALLOWED_FORMAT_CHARACTERS = frozenset("\u200c\u200d")


def invisible_characters(text):
    """The invisible format characters in ``text`` that a form refuses, in order, each once.

    These are Unicode category ``Cf`` (format) characters other than
    :data:`ALLOWED_FORMAT_CHARACTERS`: the bidirectional embeddings, overrides and isolates
    (U+202A–U+202E, U+2066–U+2069), the direction marks (U+200E, U+200F, U+061C), zero-width
    spaces and byte-order marks (U+200B, U+FEFF), the soft hyphen (U+00AD), tag characters and
    the like.  Each changes how a text reads, or hides part of it, without being seen: a note
    or a name shown to another person must read as it was typed (Trojan Source,
    CVE-2021-42574)."""
    found = []
    for char in text or "":
        if char not in ALLOWED_FORMAT_CHARACTERS and unicodedata.category(char) == "Cf" and char not in found:
            found.append(char)
    return found


#: Characters Unicode files as letters or symbols that draw nothing: the Hangul fillers
#: (U+115F, U+1160, U+3164, U+FFA0) and the blank braille pattern (U+2800).
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")
#: Line and paragraph separators: a line break in a field that takes one line.
LINE_SEPARATORS = "\u2028\u2029"


def has_visible_text(text):
    """Whether ``text`` holds at least one character that shows: a letter, digit, symbol or
    punctuation mark (Unicode categories L, N, S, P) other than :data:`BLANK_LOOKING`.

    Spaces, joiners (U+200C, U+200D), variation selectors (U+FE0F), the combining grapheme
    joiner (U+034F) and combining accents with nothing to sit on (U+0301) are not visible text
    on their own: a reason made only of them reads as empty."""
    return any(unicodedata.category(char)[0] in "LNSP" and char not in BLANK_LOOKING for char in text or "")


def refuse_blank_looking(_form, field):
    """A WTForms validator: refuse text that is not empty yet holds nothing visible
    (:func:`has_visible_text`), e.g. only zero-width joiners or Hangul fillers."""
    data = field.data if isinstance(field.data, str) else ""
    if data.strip() and not has_visible_text(data):
        raise ValidationError("Type the text with visible letters or digits: this holds only blank or "
                              "invisible characters.")


def refuse_line_separators(_form, field):
    """A WTForms validator for one-line fields: refuse U+2028 LINE SEPARATOR and U+2029 PARAGRAPH
    SEPARATOR, which break the line where the field takes one."""
    data = field.data if isinstance(field.data, str) else ""
    if any(char in data for char in LINE_SEPARATORS):
        raise ValidationError("This field takes one line: remove the line or paragraph separator "
                              "(U+2028 or U+2029).")


def _character_name(char):
    return f"U+{ord(char):04X} {unicodedata.name(char, 'FORMAT CHARACTER')}"


def refuse_invisible(_form, field):
    """A WTForms validator: refuse text holding an invisible format character (see
    :func:`invisible_characters`), naming it, e.g. "... U+202E RIGHT-TO-LEFT OVERRIDE ..."."""
    found = invisible_characters(field.data if isinstance(field.data, str) else None)
    if found:
        names = ", ".join(_character_name(char) for char in found[:3])
        raise ValidationError(
            f"Remove the invisible formatting character{'s' if len(found) > 1 else ''} ({names}): "
            "it changes how the text reads without being seen.")


def is_typed_text(field):
    """Whether ``field`` takes text a person types and others read: a string or text-area field,
    not a password (never shown) nor a hidden field (the page's own values, checked where read)."""
    return isinstance(field, StringField) and not isinstance(field, (PasswordField, HiddenField))


class _TypedTextCheck:
    """Runs :func:`refuse_invisible` and :func:`refuse_blank_looking` on every typed-text field
    (:func:`is_typed_text`), and :func:`refuse_line_separators` on the one-line ones (all but
    text areas), after the field's own validators, so every form of the app refuses invisible
    formatting characters, text with nothing visible and line separators in one line with a
    message on the field (a 400 answer in the views)."""

    def validate(self, extra_validators=None):
        extra = {name: list(validators) for name, validators in (extra_validators or {}).items()}
        for name, field in self._fields.items():
            if is_typed_text(field):
                checks = extra.setdefault(name, [])
                checks += [refuse_invisible, refuse_blank_looking]
                if not isinstance(field, wtforms.TextAreaField):
                    checks.append(refuse_line_separators)
        return super().validate(extra_validators=extra)


class QuickSelect(widgets.Select):
    """WTForms' ``<select>`` with the same markup, its options written directly: WTForms builds
    each option's attributes through ``html_params`` (a dict, a sort and a format per option),
    which made a unit picker of a few hundred options a third of the center's request page.
    An option with attributes of its own (``render_kw``) is left to WTForms."""

    @classmethod
    def render_option(cls, choice, **kwargs):
        if kwargs or choice.render_kw:
            return super().render_option(choice, **kwargs)
        value = str(choice.value) if isinstance(choice.value, bool) else choice.value
        selected = "selected " if choice.selected else ""
        # A plain string: Select joins the options into one Markup.
        return f'<option {selected}value="{escape(value)}">{escape(choice.label or choice.value)}</option>'


_QUICK_SELECT = QuickSelect()


class _QuickSelects:
    """Form ``Meta``: a single-choice ``<select>`` is rendered by :class:`QuickSelect`."""

    def render_field(self, field, render_kw):
        if type(field.widget) is widgets.Select and not field.widget.multiple:
            field.widget = _QUICK_SELECT
        return super().render_field(field, render_kw)


class FlaskForm(_TypedTextCheck, flask_wtf.FlaskForm):
    """The base of every form that changes something (CSRF-protected): Flask-WTF's, with typed
    text checked (:class:`_TypedTextCheck`)."""

    class Meta(_QuickSelects):
        pass


class Form(_TypedTextCheck, wtforms.Form):
    """The base of every filter form (GET, no CSRF), with typed text checked."""

    class Meta(_QuickSelects):
        pass
