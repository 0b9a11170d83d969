"""Work a page does once, not per row or per use: the center registry read once per page view
(services/center_reads.py); a ``<select>`` of many options written without WTForms' per-option
attribute building (formfields.QuickSelect), with the same markup."""
import pytest
import wtforms
from wtforms import SelectField
from wtforms.validators import DataRequired

from dashboard import formfields
from dashboard.services import center_reads
from tests.helpers import signed_in


def count_reads(monkeypatch):
    real = center_reads._read
    keys = []

    def spy(key, query, fallback):
        keys.append(key)
        return real(key, query, fallback)

    monkeypatch.setattr(center_reads, "_read", spy)
    return keys


def test_a_page_reads_the_registry_once(app, demo, monkeypatch):
    client = signed_in(app, "coordinator@medport.test")
    keys = count_reads(monkeypatch)
    assert client.get("/center/").status_code == 200  # its filters and its rows both name hospitals
    assert keys.count("registry") == 1
    assert client.get("/center/units").status_code == 200
    assert keys.count("registry") == 2  # each page view reads it again: a change shows at once


def test_a_form_reads_it_afresh(app, demo, monkeypatch):
    from dashboard.extensions import db

    with app.test_request_context("/center/", method="POST"):
        keys = count_reads(monkeypatch)
        center_reads.registry_names()
        center_reads.registry_names()
        db.session.remove()
    assert keys == ["registry", "registry"]
    with app.test_request_context("/center/", method="GET"):
        keys.clear()
        first = center_reads.registry_names()
        assert center_reads.registry_names() is first
        db.session.remove()
    assert keys == ["registry"]


CHOICES = [("", "Any"), ('a"b', 'A <&> "q"'), (True, "yes"), (3, "three"), ("x", ""), ("7", "Unit 7 · ALS")]


@pytest.mark.parametrize("data", [{}, {"s": 'a"b'}, {"s": "7"}, {"s": "x"}])
def test_quick_select_writes_what_wtforms_writes(app, data):
    """The app's forms render a ``<select>`` with :class:`QuickSelect`, byte for byte as WTForms'
    own widget would (values and labels escaped, the chosen one selected)."""
    class Ours(formfields.Form):
        s = SelectField(choices=CHOICES, validators=[DataRequired()])

    class Ours2(formfields.FlaskForm):
        s = SelectField(choices=CHOICES)

    class Plain(wtforms.Form):
        s = SelectField(choices=CHOICES, validators=[DataRequired()])

    class Plain2(wtforms.Form):
        s = SelectField(choices=CHOICES)

    with app.test_request_context():
        ours, plain = Ours(data=data), Plain(data=data)
        assert str(ours.s()) == str(plain.s())
        assert type(ours.s.widget) is formfields.QuickSelect
        assert str(ours.s(class_="wide")) == str(plain.s(class_="wide"))
        ours2, plain2 = Ours2(data=data, meta={"csrf": False}), Plain2(data=data)
        assert str(ours2.s()) == str(plain2.s())
        assert type(ours2.s.widget) is formfields.QuickSelect
