"""What the pages call things: one label per field of a request, one way to show an oxygen flow
and an age, and an audit log that names the request by its reference."""
import html
import re
from datetime import timedelta

import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import FIELD_LABELS, TransportRequest, field_labels, oxygen_flow
from dashboard.templating import format_duration
from tests.helpers import (
    CORD,
    DISPATCH_AEMS,
    REASON,
    bid_on,
    load,
    post_form,
    signed_in,
    text,
    to_local_input,
)


def page_text(response):
    return html.unescape(re.sub(r"<[^>]+>", " ", text(response)))


def test_ages_carry_their_units():
    assert format_duration(4 * 60) == "4 min"
    assert format_duration(2 * 3600 + 28 * 60 + 59) == "2 h 28 min"
    assert format_duration(2 * 3600 + 5 * 60) == "2 h 05 min"
    assert format_duration(int(timedelta(days=3).total_seconds())) == "3 d"


def test_one_oxygen_formatter_and_one_label_map():
    assert [oxygen_flow(v) for v in (0, None, 20.0, 2.5, 15)] == ["None", "None", "20 L/min", "2.5 L/min",
                                                                  "15 L/min"]
    assert field_labels(["iv_pump", "oxygen_lpm", "care_override_reason", "care_override_needs"]) == [
        "IV pump", "Oxygen (L/min)", "Level override"]


def test_every_page_spells_needs_and_oxygen_one_way(app, nurse, deliver):  # noqa: F811
    public_id = post_form(nurse, app, level_of_care="CCT", cardiac_monitor=None, iv_pump="y", oxygen_lpm="20")
    deliver()
    hospital = page_text(nurse.get(f"/hospital/requests/{public_id}"))
    assert "IV pump" in hospital and "Iv pump" not in hospital
    for client, url in ((nurse, f"/hospital/requests/{public_id}"),
                        (signed_in(app, DISPATCH_AEMS), f"/ems/requests/{public_id}"),
                        (signed_in(app, CORD), f"/center/requests/{public_id}")):
        shown = page_text(client.get(url))
        assert "20 L/min" in shown and "20.0" not in shown, url
    # The edit form shows the stored flow as typed, not "20.0".
    edit = text(nurse.get(f"/hospital/requests/{public_id}/edit"))
    assert re.search(r'name="oxygen_lpm"[^>]*value="20"', edit) and 'value="20.0"' not in edit


def test_the_timeline_names_changed_fields_by_their_labels(app, nurse):  # noqa: F811
    public_id = post_form(nurse, app, level_of_care="BLS", cardiac_monitor=None)
    original = load(app, public_id)
    window = {name: to_local_input(app, getattr(original, name)) for name in ("window_start", "window_end")}
    data = dict(window, mobility="stretcher", weight_kg="82", isolation="contact", oxygen_lpm="4",
                iv_pump="y", ventilator="y", other_needs="Fall risk", notes="Daughter meets the crew",
                version="1", care_override="y", care_override_reason=REASON)
    assert nurse.post(f"/hospital/requests/{public_id}/edit", data=data).status_code == 302
    timeline = page_text(nurse.get(f"/hospital/requests/{public_id}/timeline"))
    assert "Changed: Oxygen (L/min), IV pump, Ventilator, Level override" in timeline
    assert "iv pump" not in timeline and "care override needs" not in timeline
    assert FIELD_LABELS["oxygen_lpm"] == "Oxygen (L/min)"


def test_the_audit_log_names_the_request_by_its_reference(app, nurse, deliver):  # noqa: F811
    public_id = post_form(nurse, app, level_of_care="BLS", care_override="y", care_override_reason=REASON)
    reference = load(app, public_id).reference
    deliver()
    page = text(signed_in(app, CORD).get(f"/center/audit?entity_type=trip&entity_id={public_id}"))
    rows = re.findall(r"<tr>.*?</tr>", page.split("<tbody>")[1], re.S)
    assert rows and all(reference in row for row in rows)
    assert f"<code>{public_id[:8]}</code>" not in page
    shown = html.unescape(page)
    assert f"reason {REASON}" in shown and "Status: open" in shown
    assert '{"' not in html.unescape(page.split("<tbody>")[1])  # no raw JSON


def _rows(page):
    return re.findall(r"<tr[ >].*?</tr>", page.split("<tbody>", 1)[1], re.S)


def test_a_bid_whose_eta_passed_says_so_and_is_not_best(app, nurse, deliver):  # noqa: F811
    public_id = post_form(nurse, app)
    stale = bid_on(app, public_id, "AEMS", 20)
    bid_on(app, public_id, "ACCT", 40)
    deliver()
    with app.app_context():  # the 20-minute bid was given two hours ago: its arrival has passed
        db.session.execute(sa.update(TransportBid).where(TransportBid.public_id == stale)
                           .values(updated_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
    for client, url in ((nurse, f"/hospital/requests/{public_id}/bids"),
                        (signed_in(app, CORD), f"/center/requests/{public_id}")):
        page = text(client.get(url))
        rows = _rows(page.split('id="bids-title"', 1)[-1])
        (passed,) = [row for row in rows if "ETA passed" in row]
        (best,) = [row for row in rows if ">Best<" in row]
        assert "20 min" in passed and ">Best<" not in passed, url
        assert "40 min" in best and "ETA passed" not in best, url


def test_the_center_request_page_warns_of_a_passed_pickup_window(app, nurse):  # noqa: F811
    public_id = post_form(nurse, app)
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id)
                           .values(window_start=utcnow() - timedelta(hours=3),
                                   window_end=utcnow() - timedelta(hours=1)))
        db.session.commit()
    warning = "Pickup window passed"
    assert warning in text(nurse.get(f"/hospital/requests/{public_id}"))
    center = text(signed_in(app, CORD).get(f"/center/requests/{public_id}"))
    assert warning in center
    # The extend box names the deadline as such, not as the time now.
    assert "Current deadline: " in center and "<p>Now " not in center
