"""Text is shown as typed: every form refuses invisible formatting characters in typed text.

A right-to-left override (U+202E) or another invisible format character (Unicode category Cf,
ZWJ and ZWNJ apart) in a note, a name or a reason makes the text read differently from what
was typed, without anyone seeing why.  Every form of the app is built on
``dashboard.formfields.FlaskForm`` or ``Form``, which check every string and text-area field.
"""
import importlib
import inspect
import re
from datetime import date

import pytest
import sqlalchemy as sa
import wtforms
from werkzeug.datastructures import MultiDict
from wtforms import HiddenField, PasswordField, RadioField, SelectField, SelectMultipleField, StringField

from dashboard import formfields
from dashboard.extensions import db
from dashboard.models.center import User
from dashboard.models.ems import TransportBid, Unit
from dashboard.models.hospital import TransportRequest
from dashboard.services import configuration
from tests.helpers import AEMS, ALT_NURSE, post_request, signed_in, valid_form

RLO = "\u202e"
MODULES = ["dashboard.auth.forms", "dashboard.hospital.forms", "dashboard.ems.forms",
           "dashboard.center.forms", "dashboard.analytics.forms"]
MESSAGE = "Remove the invisible formatting character"


def _form_classes():
    classes = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, wtforms.Form) and value.__module__ == name:
                classes.append(value)
    center = importlib.import_module("dashboard.center.forms")
    classes.append(center.config_form_class(configuration.SETTINGS, configuration.AUTO_AWARD_POLICIES))
    return classes


def _build(form_class, formdata):
    if form_class.__name__ == "AnalyticsFilterForm":
        return form_class(formdata, [], [], date(2026, 12, 1))
    form = form_class(formdata=formdata)
    for field in form:
        if isinstance(field, (SelectField, RadioField, SelectMultipleField)) and field.choices is None:
            field.choices = []
    return form


def _text_fields(form):
    return [field for field in form if isinstance(field, StringField)
            and not isinstance(field, (PasswordField, HiddenField))]


def test_every_form_is_built_on_the_checked_bases():
    classes = _form_classes()
    assert len(classes) > 20
    unchecked = [cls.__qualname__ for cls in classes if not issubclass(cls, formfields._TypedTextCheck)]
    assert unchecked == []


@pytest.mark.parametrize("value", [f"4 West{RLO}214 moor", "\u2066x\u2069", "a\u200bb", "\ufeffname"])
def test_every_text_field_of_every_form_refuses_an_invisible_format_character(app, value):
    checked = 0
    with app.test_request_context("/", method="POST"):
        for form_class in _form_classes():
            names = [field.name for field in _text_fields(_build(form_class, MultiDict()))]
            for name in names:
                form = _build(form_class, MultiDict({name: value}))
                assert not form.validate(), (form_class.__qualname__, name)
                assert any(MESSAGE in error for error in form[name].errors), (form_class.__qualname__, name)
                checked += 1
    assert checked >= 30


@pytest.mark.parametrize("value", ["Ali\u200cReza", "👩\u200d⚕️ on board", "مرحبا", "Zoë, Łódź"])
def test_joiners_and_ordinary_scripts_pass(app, value):
    with app.test_request_context("/", method="POST"):
        form = _build(importlib.import_module("dashboard.ems.forms").BidForm, MultiDict({"note": value}))
        form.validate()
        assert not form.note.errors


def test_the_refusal_names_the_character():
    assert formfields.invisible_characters(f"a{RLO}b\u2066c{RLO}") == [RLO, "\u2066"]
    assert formfields.invisible_characters("a\u200db\u200cc") == []


# --- through the pages: 400, the message on the field, nothing stored ----------------------

def _count(app, model):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_request_with_an_override_in_its_pickup_location_is_refused(app, client, auth, demo):
    assert auth.login(ALT_NURSE).status_code == 302
    before = _count(app, TransportRequest)
    response = client.post("/hospital/requests/new",
                           data=valid_form(app, pickup_location=f"4 West{RLO}214 moor", notes="ok"))
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert MESSAGE in page and "U+202E RIGHT-TO-LEFT OVERRIDE" in page
    assert _count(app, TransportRequest) == before


def test_a_bid_note_and_a_unit_number_with_an_override_are_refused(app, demo):
    client = signed_in(app, AEMS)
    public_id = post_request(app)
    bids = _count(app, TransportBid)
    page = client.get(f"/ems/requests/{public_id}").get_data(as_text=True)
    unit = re.findall(r'<option value="([0-9a-f-]{36})"', page)[0]
    response = client.post(f"/ems/requests/{public_id}/bid",
                           data={"unit": unit, "eta_minutes": "20", "note": f"fast{RLO}"})
    assert response.status_code == 400 and MESSAGE in response.get_data(as_text=True)
    assert _count(app, TransportBid) == bids
    units = _count(app, Unit)
    response = client.post("/ems/units", data={"number": f"M{RLO}12", "level": "BLS", "base_station": ""})
    assert response.status_code == 400 and MESSAGE in response.get_data(as_text=True)
    assert _count(app, Unit) == units


def test_a_user_display_name_with_an_isolate_is_refused(app, client, auth, demo):
    assert auth.login("admin@medport.test").status_code == 302
    users = _count(app, User)
    response = client.post("/center/users/new", data={
        "email": "new.nurse@example.org", "display_name": "Nurse \u2067Evil\u2069", "role": "coordinator"})
    assert response.status_code == 400 and MESSAGE in response.get_data(as_text=True)
    assert _count(app, User) == users
