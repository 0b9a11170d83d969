"""The hospital's forms as a page posts them (public ids; values as typed, times in the
region's zone), what a stored request looks like afterwards, and the forms a page shows.
"""
import re
from datetime import timedelta
from html.parser import HTMLParser

import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.localtime import to_local
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, Hospital
from dashboard.models.ems import Unit
from dashboard.models.hospital import (
    HospitalFacility,
    TransportRequest,
    TransportRequestEvent,
)
from dashboard.models.outbox import HospitalOutboxEvent
from dashboard.models.vocabulary import LEVEL_RANK
from dashboard.services import bidding, trips

#: What a page says when the request changed since it was shown.
STALE = "changed while you were looking at it"


def local_time(app, minutes):
    """A ``datetime-local`` value ``minutes`` from now, in the region's zone."""
    with app.app_context():
        return to_local(utcnow() + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M")


def to_local_input(app, value):
    """``value`` (naive UTC) as a ``datetime-local`` value in the region's zone."""
    with app.app_context():
        return to_local(value).strftime("%Y-%m-%dT%H:%M")


def facility_id(app, name):
    """The public id of the facility named ``name``."""
    with app.app_context():
        return db.session.scalar(sa.select(HospitalFacility.public_id).where(HospitalFacility.name == name))


def hospital_id(app, code):
    """The row id of the hospital with short code ``code``."""
    with app.app_context():
        return db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == code))


def valid_form(app, **overrides):
    """A complete, valid new-request form for Altoona (pickup 5 to 7 hours from now)."""
    data = dict(
        origin_facility=facility_id(app, "Altoona Regional Medical Center"),
        pickup_location="4 West, room 412",
        destination_facility=facility_id(app, "Johnstown Memorial Hospital"),
        destination_address="",
        level_of_care="ALS", urgency="urgent", mobility="stretcher",
        window_start=local_time(app, 300), window_end=local_time(app, 420),
        patient_ref="P-ACDEFH", age_group="older_adult", weight_kg="82", isolation="contact",
        oxygen_lpm="2.5", cardiac_monitor="y", other_needs="Fall risk", notes="Daughter meets the crew",
        bid_deadline_minutes="30", invite_mode="all", invite_all_after_minutes="",
    )
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def edit_form(app, **overrides):
    """A complete, valid edit form (version 1; pickup 5 to 7 hours from now), with ``overrides``; a
    None value leaves the field out."""
    data = dict(window_start=local_time(app, 300), window_end=local_time(app, 420), mobility="stretcher",
                weight_kg="82", isolation="contact", oxygen_lpm="2.5", cardiac_monitor="y",
                other_needs="Fall risk", notes="Daughter meets the crew", version="1")
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def post_form(client, app, **overrides):
    """Post a request through the form; return its public id."""
    response = client.post("/hospital/requests/new", data=valid_form(app, **overrides))
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.fullmatch(r"/hospital/requests/([0-9a-f-]{36})", response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


def load(app, public_id):
    """The trip as stored now (detached, columns loaded)."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        db.session.expunge(trip)
        return trip


def load_fields(app):
    """Stored fields for a request posted directly through the service."""
    alt = hospital_id(app, "ALT")
    origin = db.session.scalar(sa.select(HospitalFacility.id).where(HospitalFacility.hospital_id == alt))
    now = utcnow()
    return dict(origin_facility_id=origin, pickup_location="ED bay 3", destination_address="Home",
                level_of_care="BLS", mobility="stretcher", urgency="routine",
                window_start=now + timedelta(hours=9), window_end=now + timedelta(hours=10),
                patient_ref="", age_group="adult", weight_kg=70, bid_deadline=now + timedelta(hours=1))


def hospital_outbox_types(app, public_id):
    """The hospital outbox's event types for the request, oldest first."""
    with app.app_context():
        return list(db.session.scalars(
            sa.select(HospitalOutboxEvent.type).where(HospitalOutboxEvent.entity_id == public_id)
            .order_by(HospitalOutboxEvent.id)))


def history_actions(app, public_id):
    """The actions of the request's history (timeline), oldest first."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        return [e.action for e in db.session.scalars(
            sa.select(TransportRequestEvent).where(TransportRequestEvent.trip_id == trip.id)
            .order_by(TransportRequestEvent.id))]


def bid_on(app, public_id, agency_code, eta, note=""):
    """An agency's bid (EMS silo), with the first of its units that may take it; return its public id."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        agency = db.session.scalar(sa.select(Agency).where(Agency.short_code == agency_code))
        units = db.session.scalars(sa.select(Unit).where(Unit.agency_id == agency.id).order_by(Unit.id))
        for unit in units:
            if LEVEL_RANK[unit.level] < LEVEL_RANK[trip.level_of_care]:
                continue
            try:
                bid = bidding.place(trip, agency.id, agency.name, agency.level_list, unit.id, eta, note, actor=Actor(None))
            except bidding.BidRefused:
                db.session.rollback()
                continue
            db.session.commit()
            return bid.public_id
    raise AssertionError(f"{agency_code} has no unit free for this request")


def version_of(app, public_id):
    """The request's version as stored now (what a form posts back)."""
    return load(app, public_id).version


def award_form(client, public_id, bid_public_id, version):
    """Post the hospital's award form for ``bid_public_id`` at ``version``; return the response."""
    return client.post(f"/hospital/requests/{public_id}/award",
                       data={"bid": bid_public_id, "version": str(version)})


def freeze_clock(monkeypatch, moment):
    """Every ``utcnow`` the app reads returns ``moment`` (naive UTC) from here on, so a page
    and the form posted from it see one instant, chosen by the test, not the wall clock."""
    import sys

    from dashboard.models import base

    real = base.utcnow
    for name, module in list(sys.modules.items()):
        if name.startswith("dashboard.") and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", lambda: moment)


class PageForms(HTMLParser):
    """The POST forms of a page: ``[(action, [(name, value), ...])]``, as a browser submits them
    (checked boxes, selected options, the first named submit button)."""

    def __init__(self, page_path):
        super().__init__(convert_charrefs=True)
        self.page_path = page_path
        self.forms = []
        self._form = self._select = self._textarea = None
        self._button_taken = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            if (a.get("method") or "get").lower() == "post":
                self._form = (a.get("action") or self.page_path, [])
                self._button_taken = False
            return
        if self._form is None or "disabled" in a:
            return
        fields = self._form[1]
        name = a.get("name")
        if tag == "input" and name:
            kind = (a.get("type") or "text").lower()
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    fields.append((name, a.get("value", "on")))
            elif kind in ("submit", "button", "image"):
                if not self._button_taken:
                    fields.append((name, a.get("value", "")))
                    self._button_taken = True
            elif kind != "file":
                fields.append((name, a.get("value", "")))
        elif tag == "button" and name and not self._button_taken:
            fields.append((name, a.get("value", "")))
            self._button_taken = True
        elif tag == "select" and name:
            self._select = (name, "multiple" in a, [], [])
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            self._select[2].append(value)
            if "selected" in a:
                self._select[3].append(value)
        elif tag == "textarea" and name:
            self._textarea = [name, ""]

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1] += data

    def handle_endtag(self, tag):
        if self._form is None:
            return
        if tag == "select" and self._select is not None:
            name, multiple, options, selected = self._select
            chosen = selected if multiple else (selected[:1] or options[:1])
            self._form[1].extend((name, value) for value in chosen)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self._form[1].append((self._textarea[0], self._textarea[1].removeprefix("\n")))
            self._textarea = None
        elif tag == "form":
            self.forms.append(self._form)
            self._form = None


def counts(app):
    """(trips, history rows, hospital outbox rows): what a refused action must leave alone."""
    with app.app_context():
        return tuple(db.session.scalar(sa.select(sa.func.count(model.id)))
                     for model in (TransportRequest, TransportRequestEvent, HospitalOutboxEvent))
