"""Level of care matches needs: the table of rules, the refusal, and the audited override."""
import html
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import AuditLog
from dashboard.models.ems import EmsRoute
from dashboard.models.hospital import TransportRequest, TransportRequestEvent
from dashboard.models.vocabulary import LEVEL_RANK, LEVELS
from dashboard.services import care_rules, trip_posting, trips
from dashboard.services.care_rules import CARE_RULES, RULES_BY_NEED
from tests.helpers import (
    CORD,
    DISPATCH_AEMS,
    REASON,
    award_form,
    bid_on,
    history_actions,
    hospital_id,
    hospital_outbox_types,
    load,
    load_fields,
    post_form,
    signed_in,
    text,
    to_local_input,
    valid_form,
    version_of,
)

DEMO_PASSWORD = "medport-demo"


def errors(response):
    return [html.unescape(e) for e in re.findall(r'class="error">([^<]+)', text(response))]


def trip_count(app):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(TransportRequest))


NEEDS_ON = {"ventilator": True, "iv_pump": True, "cardiac_monitor": True, "oxygen_lpm": 16}
NEEDS_FORM = {"ventilator": "y", "iv_pump": "y", "cardiac_monitor": "y", "oxygen_lpm": "16"}
NO_NEEDS = {"cardiac_monitor": None, "oxygen_lpm": "2"}


# --- the table -------------------------------------------------------------------------------

@pytest.mark.parametrize("need", list(NEEDS_ON))
@pytest.mark.parametrize("level", LEVELS)
def test_each_rule_at_each_level(need, level):
    rule = RULES_BY_NEED[need]
    broken = care_rules.shortfalls(level, {need: NEEDS_ON[need]})
    assert broken == ((rule,) if LEVEL_RANK[level] < LEVEL_RANK[rule.minimum] else ())
    assert care_rules.shortfalls(level, {}) == ()


def test_the_table_holds_the_field_values():
    assert {rule.need: rule.minimum for rule in CARE_RULES} == {
        "ventilator": "CCT", "oxygen_lpm": "CCT", "iv_pump": "ALS", "cardiac_monitor": "ALS"}
    # Oxygen counts above what a conventional device gives (15 L/min), not at it.
    assert care_rules.shortfalls("BLS", {"oxygen_lpm": 15}) == ()
    assert care_rules.shortfalls("ALS", {"oxygen_lpm": 15.5}) == (RULES_BY_NEED["oxygen_lpm"],)
    assert care_rules.required_level({"cardiac_monitor": True, "iv_pump": True}) == "ALS"
    assert care_rules.required_level({"cardiac_monitor": True, "ventilator": True}) == "CCT"
    assert care_rules.required_level({"oxygen_lpm": 4}) == "BLS"
    assert care_rules.summary("BLS", (RULES_BY_NEED["ventilator"], RULES_BY_NEED["cardiac_monitor"])) \
        == "BLS with a ventilator (needs CCT), a cardiac monitor (needs ALS)"
    assert care_rules.summary("ALS", (RULES_BY_NEED["oxygen_lpm"],)) == "ALS with oxygen above 15 L/min (needs CCT)"
    with pytest.raises(ValueError):
        care_rules.shortfalls("XLS", {})


# --- the service -----------------------------------------------------------------------------

def _post(app, care_override=None, **needs):
    """A request posted through the service (inside an app context), with ``needs`` changed."""
    return trip_posting.post(hospital_id(app, "ALT"), "ALT", dict(load_fields(app), **needs),
                             care_override=care_override, actor=Actor(1, None, "Test"))


@pytest.mark.parametrize("need", list(NEEDS_ON))
def test_posting_a_need_above_the_level_is_refused_naming_it(app, demo, need):
    rule = RULES_BY_NEED[need]
    with app.app_context():
        before = trip_count(app)
        for reason in (None, "", "   "):
            with pytest.raises(trips.CareLevelRefused) as refused:
                _post(app, care_override=reason, level_of_care="BLS", **{need: NEEDS_ON[need]})
            db.session.rollback()
            assert refused.value.status == 400 and refused.value.rules == (rule,)
            assert f"{rule.label} needs {rule.minimum} or higher; this request is BLS." in refused.value.message
            assert f"Send it at {rule.minimum}, or override the level with a reason" in refused.value.message
        assert trip_count(app) == before
        # At its level, the need posts without any override.
        trip = _post(app, level_of_care=rule.minimum, **{need: NEEDS_ON[need]})
        db.session.commit()
        assert trip.care_override_reason is None and trip.care_override_needs is None


def test_an_override_with_a_reason_is_kept_in_the_timeline_and_the_outbox(app, demo):
    with app.app_context():
        trip = _post(app, care_override=f"  {REASON}  ", level_of_care="ALS", ventilator=True,
                     cardiac_monitor=True)
        db.session.commit()
        assert (trip.care_override_reason, trip.care_override_needs) == (REASON, "ventilator")
        line = db.session.scalar(sa.select(TransportRequestEvent).where(
            TransportRequestEvent.trip_id == trip.id, TransportRequestEvent.action == "care_override"))
        assert line.note == f"Level of care override: ALS with a ventilator (needs CCT). Reason: {REASON}"
        assert line.detail == {"level_of_care": "ALS", "needs": ["ventilator"], "reason": REASON}
        public_id = trip.public_id
    assert hospital_outbox_types(app, public_id) == ["trip.posted", "trip.care_override"]
    # A level that covers every need keeps no override, even when one is given.
    with app.app_context():
        trip = _post(app, care_override=REASON, level_of_care="CCT", ventilator=True)
        db.session.commit()
        assert trip.care_override_reason is None and hospital_outbox_types(app, trip.public_id) == ["trip.posted"]
        # A reason longer than kept is refused, not cut.
        with pytest.raises(trips.TransitionRefused) as refused:
            _post(app, care_override="x" * 301, level_of_care="BLS", ventilator=True)
        assert refused.value.status == 400 and "300 characters" in refused.value.message


def test_an_edit_keeps_checks_renews_and_ends_the_override(app, demo):
    with app.app_context():
        trip = _post(app, care_override=REASON, level_of_care="BLS", cardiac_monitor=True)
        db.session.commit()
        public_id = trip.public_id
        # Another change: the override covering the monitor stays, without a new reason.
        trip, changed = trip_posting.edit(trip, {"notes": "Side door"}, expected_version=trip.version, actor=Actor(1, None, "Test"))
        db.session.commit()
        assert set(changed) == {"notes"} and trip.care_override_reason == REASON
        # A new need above the level is not covered by the old override.
        with pytest.raises(trips.CareLevelRefused) as refused:
            trip_posting.edit(trip, {"cardiac_monitor": True, "ventilator": True}, actor=Actor(1, None, "Test"))
        db.session.rollback()
        assert "A ventilator needs CCT or higher; this request is BLS." in refused.value.message
        assert "cardiac monitor" not in refused.value.message  # the kept override covers it
        assert load(app, public_id).ventilator is False
        # Given again with a reason, it covers both.
        trip = trips.get_by_public_id(public_id)
        trip, changed = trip_posting.edit(trip, {"ventilator": True}, care_override="RT and monitor", actor=Actor(1, None, "Test"))
        db.session.commit()
        assert (trip.care_override_reason, trip.care_override_needs) == ("RT and monitor",
                                                                         "ventilator,cardiac_monitor")
        # No need above the level left: the override ends, said in the timeline.
        trip, changed = trip_posting.edit(trip, {"ventilator": False, "cardiac_monitor": False}, actor=Actor(1, None, "Test"))
        db.session.commit()
        assert trip.care_override_reason is None and trip.care_override_needs is None
        notes = list(db.session.scalars(sa.select(TransportRequestEvent.note).where(
            TransportRequestEvent.trip_id == trip.id, TransportRequestEvent.action == "care_override")
            .order_by(TransportRequestEvent.id)))
    assert notes == [
        f"Level of care override: BLS with a cardiac monitor (needs ALS). Reason: {REASON}",
        "Level of care override: BLS with a ventilator (needs CCT), a cardiac monitor (needs ALS). "
        "Reason: RT and monitor",
        "Level of care override ended: BLS covers every need",
    ]
    assert hospital_outbox_types(app, public_id).count("trip.care_override") == 3


# --- the forms -------------------------------------------------------------------------------

def test_the_forms_show_the_table(app, nurse):
    page = text(nurse.get("/hospital/requests/new"))
    assert "Level of care each need asks for" in page
    for rule in CARE_RULES:
        assert re.search(rf'<th scope="row">{re.escape(html.escape(rule.label))}</th><td><span class="badge '
                         rf'level-{rule.minimum}">{rule.minimum}</span>', page), rule
    assert 'name="care_override"' in page and 'name="care_override_reason"' in page
    public_id = post_form(nurse, app)
    page = text(nurse.get(f"/hospital/requests/{public_id}/edit"))
    assert "Level of care each need asks for (this request is ALS)" in page


@pytest.mark.parametrize("need", list(NEEDS_FORM))
def test_the_new_request_form_refuses_a_need_above_the_level_on_its_field(app, nurse, need):
    rule = RULES_BY_NEED[need]
    before = trip_count(app)
    response = nurse.post("/hospital/requests/new",
                          data=valid_form(app, level_of_care="BLS", **dict(NO_NEEDS, **{need: NEEDS_FORM[need]})))
    assert response.status_code == 400
    assert errors(response) == [f"{rule.label} needs {rule.minimum} or higher; this request is BLS. "
                                f"Choose {rule.minimum}, or tick “Send at this level of care anyway” below "
                                "and give a reason."]
    assert re.search(rf'id="{need}"[^>]*aria-describedby="{need}-msg"|aria-describedby="{need}-msg"[^>]*id="{need}"',
                     text(response))
    # Ticked without a reason: the reason is asked for.
    response = nurse.post("/hospital/requests/new", data=valid_form(
        app, level_of_care="BLS", care_override="y", care_override_reason="  ",
        **dict(NO_NEEDS, **{need: NEEDS_FORM[need]})))
    assert response.status_code == 400
    assert errors(response) == [f"Give the reason for sending this request at BLS: "
                                f"{care_rules.summary('BLS', (rule,))}."]
    assert trip_count(app) == before


def test_an_override_reason_is_text_as_typed(app, nurse):
    response = nurse.post("/hospital/requests/new", data=valid_form(
        app, level_of_care="BLS", care_override="y", care_override_reason="RT \u202eedisni"))
    assert response.status_code == 400 and "U+202E RIGHT-TO-LEFT OVERRIDE" in " ".join(errors(response))
    response = nurse.post("/hospital/requests/new", data=valid_form(
        app, level_of_care="BLS", care_override="y", care_override_reason="x" * 301))
    assert response.status_code == 400 and errors(response) == ["Keep the reason to 300 characters."]


def test_an_override_is_audited_and_seen_by_the_hospital_ems_and_center(app, nurse, deliver):
    public_id = post_form(nurse, app, level_of_care="BLS", care_override="y", care_override_reason=REASON)
    trip = load(app, public_id)
    assert (trip.level_of_care, trip.cardiac_monitor) == ("BLS", True)
    assert (trip.care_override_reason, trip.care_override_needs) == (REASON, "cardiac_monitor")
    assert history_actions(app, public_id) == ["posted", "care_override"]
    deliver()
    with app.app_context():
        entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "trip.care_override",
                                                            AuditLog.entity_id == public_id))
        assert entry is not None and entry.silo == "hospital" and entry.user_email == "nurse@altoona.medport.test"
        assert entry.after["care_override"] == {"level_of_care": "BLS", "needs": ["cardiac_monitor"],
                                                "reason": REASON}
    said = "BLS with a cardiac monitor (needs ALS)."
    for client, url in ((nurse, f"/hospital/requests/{public_id}"),
                        (signed_in(app, DISPATCH_AEMS), f"/ems/requests/{public_id}"),
                        (signed_in(app, CORD), f"/center/requests/{public_id}")):
        page = html.unescape(text(client.get(url)))
        assert "Level override" in page and said in page and REASON in page, url
    assert "Level of care override: BLS with a cardiac monitor" in html.unescape(
        text(nurse.get(f"/hospital/requests/{public_id}/timeline")))
    # The EMS board marks the row; a request without an override has no mark.
    plain = post_form(nurse, app, level_of_care="ALS")
    deliver()
    board = text(signed_in(app, DISPATCH_AEMS).get("/ems/board/panel"))
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<tr class="urgency-row[^"]*">.*?/ems/requests/([0-9a-f-]{36}).*?</tr>',
                                                         board, re.S)}
    assert "Level override" in rows[public_id] and "Level override" not in rows[plain]
    # The hospital's list and the center's board mark it too (the demo's own override is Mount Nittany's).
    assert text(nurse.get("/hospital/requests/panel")).count("Level override") == 1
    board = text(signed_in(app, CORD).get("/center/board/panel"))
    reference = load(app, public_id).reference
    row = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*{reference}(?:(?!</tr>).)*</tr>", board, re.S).group(0)
    assert "Level override" in row
    # Awarded, the crew's copy of the trip carries it (My trips, with the hospital silo down too).
    bid = bid_on(app, public_id, "AEMS", 20)
    assert award_form(nurse, public_id, bid, version_of(app, public_id)).status_code == 302
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip.id))
        assert (route.care_override_reason, route.care_override_needs) == (REASON, "cardiac_monitor")
    page = html.unescape(text(signed_in(app, DISPATCH_AEMS).get("/ems/trips")))
    assert "Level override" in page and REASON in page


def test_the_edit_form_refuses_an_uncovered_need_and_takes_an_override(app, nurse, deliver):
    public_id = post_form(nurse, app)  # ALS with a cardiac monitor
    original = load(app, public_id)
    window = {name: to_local_input(app, getattr(original, name)) for name in ("window_start", "window_end")}
    data = dict(window, mobility="stretcher", weight_kg="82", isolation="contact", oxygen_lpm="2.5",
                cardiac_monitor="y", ventilator="y", other_needs="", notes="", version="1")
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=data)
    assert response.status_code == 400
    assert errors(response) == ["A ventilator needs CCT or higher; this request is ALS. Cancel it and re-post "
                                "it at CCT, or tick “Send at this level of care anyway” below and give a reason."]
    assert load(app, public_id).version == 1
    response = nurse.post(f"/hospital/requests/{public_id}/edit",
                          data=dict(data, care_override="y", care_override_reason=REASON))
    assert response.status_code == 302
    trip = load(app, public_id)
    assert trip.ventilator and (trip.care_override_reason, trip.care_override_needs) == (REASON, "ventilator")
    deliver()
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(
            AuditLog.action == "trip.care_override", AuditLog.entity_id == public_id)) == 1
    # The edit form says the override is in place; sent again unticked, it stays.
    page = html.unescape(text(nurse.get(f"/hospital/requests/{public_id}/edit")))
    assert f"Override in place: ALS with a ventilator (needs CCT). Reason: {REASON}." in page
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=dict(data, notes="Side door", version="2"))
    assert response.status_code == 302 and load(app, public_id).care_override_reason == REASON


def test_a_reposted_overridden_request_posts_as_shown(app, nurse):
    public_id = post_form(nurse, app, level_of_care="BLS", care_override="y", care_override_reason=REASON)
    assert nurse.post(f"/hospital/requests/{public_id}/cancel",
                      data={"reason": "not_needed", "version": "1"}).status_code == 302
    page = text(nurse.get(f"/hospital/requests/new?repost={public_id}"))
    assert re.search(r'id="care_override"[^>]*checked|checked[^>]*id="care_override"', page)
    assert f'value="{REASON}"' in page


def test_the_demo_region_holds_only_covered_needs(app, demo):
    with app.app_context():
        overridden = 0
        for trip in db.session.scalars(sa.select(TransportRequest)):
            broken = {rule.need for rule in care_rules.shortfalls(trip.level_of_care, trip)}
            if trip.care_override_reason:
                overridden += 1
                assert broken and broken == set(trip.care_override_needs.split(",")), trip.reference
            else:
                assert not broken, trip.reference
        assert overridden == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(
            AuditLog.action == "trip.care_override")) == 1
        assert utcnow() - timedelta(days=30) < db.session.scalar(
            sa.select(AuditLog.created_at).where(AuditLog.action == "trip.care_override"))


# --- reasons that look blank, unneeded overrides, the edit's wording --------------------------

BLANK_LOOKING_REASONS = ["\u200c" * 5, "\u200d" * 5, "\u034f", "\ufe0f", "\u3164", "\u115f", "\u2800",
                         "\u0301\u0301\u0301", " \u2028 "]


@pytest.mark.parametrize("reason", BLANK_LOOKING_REASONS)
def test_a_reason_with_nothing_visible_is_refused(app, nurse, reason):
    before = trip_count(app)
    response = nurse.post("/hospital/requests/new", data=valid_form(
        app, level_of_care="BLS", care_override="y", care_override_reason=reason))
    assert response.status_code == 400 and errors(response), repr(reason)
    assert trip_count(app) == before
    # The service refuses it too: no "Reason: " with nothing after it.
    with app.app_context():
        with pytest.raises(trips.CareLevelRefused):
            _post(app, care_override=reason, level_of_care="BLS", cardiac_monitor=True)
        db.session.rollback()
    assert trip_count(app) == before


def test_a_line_separator_in_a_one_line_field_is_refused(app, nurse):
    for name, value in (("care_override_reason", f"{REASON}\u2028more"), ("other_needs", "Fall\u2029risk")):
        data = dict(valid_form(app, level_of_care="BLS", care_override="y", care_override_reason=REASON),
                    **{name: value})
        response = nurse.post("/hospital/requests/new", data=data)
        assert response.status_code == 400
        assert any("takes one line" in message for message in errors(response)), name
    # Notes take several lines: a separator there is kept.
    public_id = post_form(nurse, app, notes="Side door\u2028ring twice")
    assert load(app, public_id).notes == "Side door\u2028ring twice"


def test_a_blank_looking_edit_reason_is_refused(app, nurse):
    public_id = post_form(nurse, app)  # ALS with a cardiac monitor
    original = load(app, public_id)
    window = {name: to_local_input(app, getattr(original, name)) for name in ("window_start", "window_end")}
    data = dict(window, mobility="stretcher", weight_kg="82", isolation="contact", oxygen_lpm="2.5",
                cardiac_monitor="y", ventilator="y", other_needs="", notes="", version="1",
                care_override="y", care_override_reason="\u3164\u200d\u2800")
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=data)
    assert response.status_code == 400 and errors(response)
    assert load(app, public_id).version == 1 and not load(app, public_id).ventilator


def test_an_override_nobody_needs_is_said_not_kept(app, nurse):
    response = nurse.post("/hospital/requests/new", data=valid_form(
        app, level_of_care="CCT", ventilator="y", care_override="y", care_override_reason="no need"),
        follow_redirects=True)
    assert response.status_code == 200
    page = html.unescape(text(response))
    assert "No override needed: CCT covers every need; the reason given was not kept." in page
    # Without the box ticked, no such notice.
    response = nurse.post("/hospital/requests/new", data=valid_form(app, level_of_care="CCT", ventilator="y"),
                          follow_redirects=True)
    assert "No override needed" not in html.unescape(text(response))


def test_the_edit_names_the_level_every_need_asks_for(app, nurse):
    public_id = post_form(nurse, app, level_of_care="BLS", cardiac_monitor=None, ventilator="y",
                          care_override="y", care_override_reason=REASON)
    original = load(app, public_id)
    assert original.care_override_needs == "ventilator"
    window = {name: to_local_input(app, getattr(original, name)) for name in ("window_start", "window_end")}
    data = dict(window, mobility="stretcher", weight_kg="82", isolation="contact", oxygen_lpm="2.5",
                cardiac_monitor="y", ventilator="y", other_needs="", notes="", version="1")
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=data)
    assert response.status_code == 400
    assert errors(response) == ["A cardiac monitor needs ALS or higher; this request is BLS. All its needs "
                                "together need CCT: cancel it and re-post it at CCT, or tick “Send at this "
                                "level of care anyway” below and give a reason."]


def test_no_rule_contradicts_its_minimum():
    for rule in CARE_RULES:
        for level in LEVELS:
            if level != rule.minimum:
                assert f"need {level}" not in rule.why and f"needs {level}" not in rule.why, rule
