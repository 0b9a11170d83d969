"""Late trips: one rule (``services.lateness``), flagged to the crew, the hospital and the center."""
import re
from datetime import datetime, timedelta

import pytest

from dashboard.localtime import to_local
from dashboard.models.base import utcnow
from dashboard.services import lateness, oversight, trips
from tests.helpers import AEMS, ALT_NURSE, advance, award_agency, bid, new_unit, post_request, signed_in

START = datetime(2026, 12, 1, 14, 0)
END = START + timedelta(hours=1)
MIN = timedelta(minutes=1)


@pytest.mark.parametrize("status, now, code", [
    ("open", START - MIN, None),
    ("open", START + MIN, None),           # open within its window: the center's warning, not late
    ("open", END, "window_passed"),
    ("awarded", START - MIN, None),
    ("awarded", START, "not_en_route"),     # the window started: the crew should be on its way
    ("awarded", END - MIN, "not_en_route"),
    ("awarded", END, "not_at_pickup"),
    ("en_route", END - MIN, None),
    ("en_route", END, "not_at_pickup"),
    ("at_pickup", END + timedelta(hours=3), None),
    ("transporting", END + timedelta(hours=3), None),
    ("completed", END + timedelta(hours=3), None),
    ("cancelled", END + timedelta(hours=3), None),
])
def test_the_late_rule(app, status, now, code):
    with app.app_context():
        late = lateness.late(status, START, END, now)
        assert (late.code if late else None) == code
        if late:
            boundary = START if code == "not_en_route" else END
            assert late.since == boundary
            assert to_local(boundary).strftime("%H:%M") in late.label


def test_a_crew_stop_reads_as_its_trip(app):
    class Stop:
        trip_reference = "ALT-1"
        window_start, window_end = START, END

    stop = Stop()
    with app.app_context():
        for route_status, code in (("planned", "not_en_route"), ("en_route", None), ("handed_back", None),
                                   ("cancelled", None)):
            stop.status = route_status
            late = lateness.of_route(stop, START + MIN)
            assert (late.code if late else None) == code, route_status


def _awarded_trip(app, starts_in, minutes=60):
    new_unit(app, "AEMS", "Ambulance 91")
    public_id = post_request(app, starts_in=starts_in, minutes=minutes)
    client = signed_in(app, AEMS)
    assert bid(client, public_id, "Ambulance 91").status_code == 302
    award_agency(app, public_id, "AEMS")
    return public_id, client


def _shown_late(html):
    """The late badges shown now (not those rendered hidden until their instant)."""
    return re.findall(r'<span class="badge risk late [^"]*">([^<]*)</span>', html)


def _reference(app, public_id):
    with app.app_context():
        return trips.get_by_public_id(public_id).reference


def _row(html, reference):
    return next(row for row in html.split("<tr") if reference in row)


def _card(crew, public_id):
    """The crew's card of the trip on My trips (the demo's other trips have cards too)."""
    reference = _reference(crew.application, public_id)
    html = crew.get("/ems/trips/panel?tab=active").get_data(as_text=True)
    return next(card for card in html.split('<li class="card trip-card">') if reference in card)


def _board_marks(app, public_id):
    with app.app_context():
        result = oversight.board(oversight.BoardFilters())
    return next([code for code, _label in row.marks] for rows in result["groups"].values()
                for row in rows if row.trip.public_id == public_id)


def test_a_crew_not_en_route_when_the_window_starts_is_flagged_to_all_three(app, demo, deliver):
    public_id, crew = _awarded_trip(app, starts_in=timedelta(minutes=-10))
    deliver()
    assert "Late: not en route, window started" in " ".join(_shown_late(_card(crew, public_id)))

    nurse = signed_in(app, ALT_NURSE)
    assert "Late: not en route" in " ".join(_shown_late(nurse.get(f"/hospital/requests/{public_id}").get_data(as_text=True)))
    listing = nurse.get("/hospital/requests/panel?tab=active").get_data(as_text=True)
    assert "Late: not en route" in " ".join(_shown_late(_row(listing, _reference(app, public_id))))
    assert "late" in _board_marks(app, public_id)

    # En route within the window: on time again, everywhere.
    assert advance(crew, public_id, "en_route").status_code == 302
    deliver()
    assert _shown_late(_card(crew, public_id)) == []
    assert _shown_late(nurse.get(f"/hospital/requests/{public_id}").get_data(as_text=True)) == []
    assert "late" not in _board_marks(app, public_id)


def test_a_crew_not_at_pickup_by_the_window_end_is_flagged(app, demo, deliver):
    public_id, crew = _awarded_trip(app, starts_in=timedelta(minutes=-90))
    deliver()
    assert advance(crew, public_id, "en_route").status_code == 302
    deliver()
    assert "Late: not at pickup, window ended" in " ".join(_shown_late(_card(crew, public_id)))
    nurse = signed_in(app, ALT_NURSE)
    assert "Late: not at pickup" in " ".join(_shown_late(nurse.get(f"/hospital/requests/{public_id}").get_data(as_text=True)))
    assert "late" in _board_marks(app, public_id)
    assert advance(crew, public_id, "at_pickup").status_code == 302
    deliver()
    assert _shown_late(_card(crew, public_id)) == []
    assert "late" not in _board_marks(app, public_id)


def test_an_open_request_past_its_window_is_flagged(app, demo):
    public_id = post_request(app, starts_in=timedelta(minutes=-120), minutes=60)
    nurse = signed_in(app, ALT_NURSE)
    assert "Pickup window passed" in " ".join(_shown_late(nurse.get(f"/hospital/requests/{public_id}").get_data(as_text=True)))
    marks = _board_marks(app, public_id)
    assert "late" in marks and "pickup" not in marks
    with app.app_context():
        assert lateness.late("open", utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=2), utcnow()) is None


@pytest.mark.parametrize("status, now, code, since", [
    ("awarded", START - MIN, "not_en_route", START),
    ("awarded", START + MIN, "not_at_pickup", END),
    ("en_route", START - MIN, "not_at_pickup", END),
    ("open", START - MIN, "window_passed", END),
    ("at_pickup", START - MIN, None, None),
    ("awarded", END, None, None),  # already late: nothing further to come
])
def test_what_a_trip_will_be_at_its_next_window_boundary(app, status, now, code, since):
    with app.app_context():
        coming = lateness.upcoming(status, START, END, now)
        assert (coming.code if coming else None) == code
        assert (coming.since if coming else None) == since


def test_a_badge_not_due_yet_is_rendered_hidden_with_its_instant(app):
    from dashboard.templating import late_badge

    class Trip:
        status, window_start, window_end = "awarded", START, END

    with app.app_context():
        # Due en route 15 minutes (the crew's lead) before the window starts.
        waiting = str(late_badge(Trip(), START - 16 * MIN))
        assert 'data-late-from="2026-12-01T13:45:00Z" hidden' in waiting and "Late: not en route" in waiting
        app.config["MEDPORT_CREW_EN_ROUTE_LEAD_MINUTES"] = 0  # no lead: due when the window starts
        waiting = str(late_badge(Trip(), START - MIN))
        assert 'data-late-from="2026-12-01T14:00:00Z" hidden' in waiting and "Late: not en route" in waiting
        shown = str(late_badge(Trip(), START + MIN))
        assert "hidden" not in shown and "Late: not en route" in shown
        Trip.status = "at_pickup"
        assert late_badge(Trip(), START + MIN) == ""


BOUNDS = {"en_route_lead": 15 * MIN, "at_pickup_max": 30 * MIN, "transport_max": 90 * MIN}


@pytest.mark.parametrize("status, now, steps, code, since", [
    ("awarded", START - 16 * MIN, {}, None, None),
    ("awarded", START - 15 * MIN, {}, "en_route_due", START - 15 * MIN),   # the crew's lead began
    ("awarded", START, {}, "not_en_route", START),
    ("at_pickup", START + 29 * MIN, {"at_pickup_at": START}, None, None),
    ("at_pickup", START + 30 * MIN, {"at_pickup_at": START}, "stuck_at_pickup", START + 30 * MIN),
    ("transporting", START + 89 * MIN, {"transporting_at": START}, None, None),
    ("transporting", START + 90 * MIN, {"transporting_at": START}, "not_at_destination", START + 90 * MIN),
    ("at_destination", START + 10 * 60 * MIN, {"transporting_at": START}, None, None),
    ("at_pickup", START + 3 * 60 * MIN, {}, None, None),  # a step time not kept: no flag
])
def test_the_crew_bounds(app, status, now, steps, code, since):
    with app.app_context():
        found = lateness.late(status, START, END, now, **BOUNDS, **steps)
        assert (found.code if found else None) == code
        assert (found.since if found else None) == since
        # Without the bounds the rule is the window's alone.
        assert lateness.late(status, START, END, now, **steps) is None or code in ("not_en_route",)


def test_the_crew_bounds_come_from_the_settings(app):
    with app.app_context():
        assert lateness.crew_bounds() == BOUNDS
        app.config["MEDPORT_CREW_AT_PICKUP_MAX_MINUTES"] = 0
        assert lateness.crew_bounds()["at_pickup_max"] is None
        coming = lateness.upcoming("transporting", START, END, START, **BOUNDS, transporting_at=START)
        assert coming.code == "not_at_destination" and coming.since == START + 90 * MIN
