"""Analytics: known answers on a hand-built set, role scoping, CSV exports, bad input, rollups.

The demo region gives the registry, users and units; the hand-built requests sit
in March 2024, far from the demo's trips (which are near today), so custom
periods there see only them.  America/New_York: EST (UTC-5) until 10 March 2024.
"""
import csv
import io
import re
from collections import Counter
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import (
    Agency,
    AnalyticsBidCell,
    AnalyticsCell,
    AnalyticsDay,
    AnalyticsUnitCell,
    Hospital,
)
from dashboard.models.ems import TransportBid, Unit
from dashboard.models.hospital import HospitalFacility, TransportRequest
from tests.pg_slots import wait_for_slots

PERIOD = "/center/analytics?start=2024-03-04&end=2024-03-06"


def _ids(model):
    return {row.short_code: row for row in db.session.execute(sa.select(model)).scalars()}


def _trip(code, hospital_code, created, level="BLS", urgency="routine", window=(30, 90), **fields):
    """A request posted at ``created`` (naive UTC) with its window in minutes after posting."""
    hospital = _ids(Hospital)[hospital_code]
    facility = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == hospital.id))
    trip = TransportRequest(
        reference=code, hospital_id=hospital.id, status=fields.pop("status", "completed"),
        origin_facility_id=facility.id, pickup_location="4 West", level_of_care=level,
        mobility="stretcher", urgency=urgency, window_start=created + timedelta(minutes=window[0]),
        window_end=created + timedelta(minutes=window[1]), patient_ref="P-ACDEFH", age_group="adult",
        weight_kg=80, bid_deadline=created + timedelta(minutes=30), created_by_user_id=1,
        created_at=created, updated_at=created, notes="secret clinical note",
    )
    for key, value in fields.items():
        setattr(trip, key, value)
    db.session.add(trip)
    return trip


def _award(trip, agency_code, unit_number, after, eta, pickup_after=None, done_after=None, on_bid=True):
    """Award ``trip`` on a bid of the agency, or (``on_bid=False``) by a center assignment."""
    agencies = _ids(Agency)
    trip.awarded_bid_id = 1 if on_bid else None  # a bid's id (not looked up here)
    trip.award_source = "hospital" if on_bid else "center"
    trip.awarded_agency_id = agencies[agency_code].id
    trip.awarded_agency_name = agencies[agency_code].name
    unit = db.session.scalar(sa.select(Unit).where(Unit.number == unit_number))
    trip.awarded_unit_id, trip.awarded_unit_label = unit.id, unit.label
    trip.awarded_eta_minutes = eta
    trip.awarded_at = trip.created_at + timedelta(minutes=after)
    if pickup_after is not None:
        trip.at_pickup_at = trip.awarded_at + timedelta(minutes=pickup_after)
    if done_after is not None:
        trip.completed_at = trip.awarded_at + timedelta(minutes=done_after)


def build_known_set():
    """Six requests over 4-6 March 2024 (local), with bids; answers worked out in the tests."""
    t1 = _trip("T1", "ALT", datetime(2024, 3, 4, 14, 0), first_bid_at=datetime(2024, 3, 4, 14, 4))
    _award(t1, "AEMS", "Medic 11", 10, eta=20, pickup_after=30, done_after=60)       # inside
    t2 = _trip("T2", "ALT", datetime(2024, 3, 4, 15, 0), level="ALS", urgency="urgent", window=(10, 40),
               first_bid_at=datetime(2024, 3, 4, 15, 6))
    _award(t2, "BCA", "Medic 23", 20, eta=15, pickup_after=40, done_after=90)        # 20 min late
    t3 = _trip("T3", "MNV", datetime(2024, 3, 4, 16, 0), window=(60, 120),
               first_bid_at=datetime(2024, 3, 4, 16, 2))
    _award(t3, "BCA", "Unit 21", 30, eta=25, pickup_after=20, done_after=70,         # early
           on_bid=False)  # the center assigned it: an award, not a win of BCA's bid
    _trip("T4", "MNV", datetime(2024, 3, 4, 17, 0), level="CCT", urgency="emergent",
          status="cancelled", cancel_reason="no_availability",
          cancelled_at=datetime(2024, 3, 4, 18, 0), unfilled_at=datetime(2024, 3, 4, 17, 30))
    t5 = _trip("T5", "ALT", datetime(2024, 3, 5, 13, 0), urgency="urgent", window=(0, 120),
               first_bid_at=datetime(2024, 3, 5, 13, 8), handed_back_count=1)
    _award(t5, "AEMS", "Medic 11", 40, eta=30, pickup_after=50, done_after=100)      # inside
    # 04:30 UTC on the 6th is 23:30 on the 5th in New York: it counts on the 5th.
    t6 = _trip("T6", "ALT", datetime(2024, 3, 6, 4, 30), level="ALS", status="cancelled",
               cancel_reason="not_needed", cancelled_at=datetime(2024, 3, 6, 5, 0),
               first_bid_at=datetime(2024, 3, 6, 4, 40))
    db.session.commit()
    bids = {t1: ["AEMS", "BCA"], t2: ["BCA", "AEMS", "CLL"], t3: ["BCA"], t5: ["AEMS", "BCA"], t6: ["CLL"]}
    agencies = _ids(Agency)
    for trip, codes in bids.items():
        for code in codes:
            unit = db.session.scalar(sa.select(Unit).where(Unit.agency_id == agencies[code].id))
            db.session.add(TransportBid(trip_id=trip.id, hospital_id=trip.hospital_id,
                                        agency_id=agencies[code].id, unit_id=unit.id, eta_minutes=20,
                                        status="declined", window_start=trip.window_start,
                                        window_end=trip.window_end, created_at=trip.created_at))
    db.session.commit()


@pytest.fixture(autouse=True)
def connection_slots(app):
    """Connections opened from threads mid-test wait (bounded) for a slot on the shared server."""
    return wait_for_slots(app)


@pytest.fixture
def known(app, demo):
    with app.app_context():
        build_known_set()


def error_summary(response):
    """What an error page says (title, message, ``Retry-After``): a failure shows whether a 503
    was a busy pool ("Busy", retry after) or a silo that could not be reached."""
    html = response.get_data(as_text=True)
    found = re.search(r"<h1>(.*?)</h1>\s*<p>(.*?)</p>", html, re.S)
    said = " ".join(re.sub(r"<[^>]+>", "", found.group(0)).split()) if found else html[:300]
    return f"{response.status_code} {said} (Retry-After: {response.headers.get('Retry-After')})"


def get_ok(client, url):
    """GET ``url``, which must answer 200 (else the failure says what the error page said)."""
    response = client.get(url)
    assert response.status_code == 200, error_summary(response)
    return response


def rows(client, url):
    response = get_ok(client, url)
    assert response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))


def table(client, url, name):
    """A CSV table as {first column: rest of the row}."""
    header, *body = rows(client, f"{url}&format=csv&table={name}")
    return {row[0]: row[1:] for row in body}


def test_known_answers(client, auth, known):
    auth.login("coordinator@medport.test")
    page = get_ok(client, PERIOD)
    html = page.get_data(as_text=True)
    assert 'id="analytics-charts"' in html and "chart-4.6.1.umd.min.js" in html
    assert 'role="img"' in html and "<table" in html

    volume = table(client, PERIOD, "volume_by_day")
    assert volume["2024-03-04"] == ["4", "2", "1", "1", "2", "1", "1"]
    assert volume["2024-03-05"] == ["2", "1", "1", "0", "1", "1", "0"]
    assert volume["2024-03-06"] == ["0"] * 7
    hours = table(client, PERIOD, "volume_by_hour")
    assert {h: n[0] for h, n in hours.items() if n[0] != "0"} == {
        "08:00": "1", "09:00": "1", "10:00": "1", "11:00": "1", "12:00": "1", "23:00": "1"}

    speed = table(client, PERIOD, "speed")
    first_bid, award, pickup = speed.values()
    assert first_bid == ["5", "6.0", "9.2"]      # 2 4 6 8 10
    assert award == ["4", "25.0", "37.0"]        # 10 20 30 40
    assert pickup == ["4", "35.0", "47.0"]       # 20 30 40 50

    fill = table(client, PERIOD, "fill")
    assert fill["Awarded"] == ["4", "66.7"]
    assert fill["Went unfilled (deadline passed, no live bid)"] == ["1", "16.7"]
    assert fill["Ended unfilled (never taken by an agency)"] == ["1", "16.7"]
    assert fill["Cancelled"] == ["2", "33.3"]
    assert fill["Handed back by an agency"] == ["1", "16.7"]
    reasons = table(client, PERIOD, "cancel_reasons")
    assert reasons["No EMS availability"] == ["1", "50.0"]
    assert reasons["Transport no longer needed"] == ["1", "50.0"]
    assert reasons["Patient not stable"] == ["0", "0.0"]

    on_time = table(client, PERIOD, "on_time")
    assert on_time["Inside the requested window"] == ["2", "50.0"]
    assert on_time["Before the window"] == ["1", "25.0"]
    assert on_time["After the window"] == ["1", "25.0"]
    late = table(client, PERIOD, "late_minutes")
    assert late["16–30 min"] == ["1"] and late["1–15 min"] == ["0"]

    competition = table(client, PERIOD, "competition")
    assert competition["Bids"] == ["9"] and competition["Bids per request"] == ["1.5"]
    assert competition["Awarded to a preferred agency"] == ["3"]
    assert competition["Share awarded to a preferred agency (%)"] == ["75.0"]
    assert table(client, PERIOD, "bids_per_request") == {
        "0": ["1"], "1": ["2"], "2": ["2"], "3": ["1"], "4": ["0"], "5+": ["0"]}

    agencies = table(client, PERIOD, "agencies")
    assert agencies["Altoona EMS"] == ["3", "2", "66.7", "25.0", "40.0", "2", "2"]
    assert agencies["Blair County Ambulance"] == ["4", "1", "25.0", "20.0", "30.0", "2", "2"]
    assert agencies["Centre LifeLink"] == ["2", "0", "0.0", "", "", "0", "0"]

    hospitals = table(client, PERIOD, "hospitals")
    assert hospitals["Altoona Regional Medical Center"] == ["4", "20.0", "0", "0.0"]
    assert hospitals["Mount Nittany Valley Hospital"] == ["2", "30.0", "1", "50.0"]

    units = table(client, PERIOD, "units")
    # Medic 11: busy 60 + 100 min; on shift 07:00-19:00 for three days = 36 h.
    assert units["Medic 11 (ALS)"] == ["AEMS", "2.7", "36.0", "7.4", "2"]


def test_filters_narrow_every_figure(client, auth, known):
    auth.login("coordinator@medport.test")
    with client.application.app_context():
        aems = _ids(Agency)["AEMS"].public_id
    url = f"{PERIOD}&agency={aems}"
    assert table(client, url, "fill")["Awarded"] == ["2", "100.0"]
    # AEMS's own bids on every request, its wins, and the competition on its two trips.
    assert table(client, url, "agencies") == {"Altoona EMS": ["3", "2", "66.7", "25.0", "40.0", "2", "2"]}
    assert table(client, url, "competition")["Bids"] == ["4"]
    url = f"{PERIOD}&level=BLS&urgency=routine"
    assert table(client, url, "volume_by_day")["2024-03-04"] == ["2", "2", "0", "0", "2", "0", "0"]
    assert table(client, url, "competition")["Bids"] == ["3"]


def test_hospital_user_sees_own_hospital_only(client, auth, known):
    auth.login("nurse@altoona.medport.test")
    with client.application.app_context():
        hospitals = _ids(Hospital)
    url = "/hospital/analytics?start=2024-03-04&end=2024-03-06"
    assert table(client, url, "fill")["Cancelled"] == ["1", "25.0"]
    assert list(table(client, url, "hospitals")) == ["Altoona Regional Medical Center"]
    get_ok(client, f"{url}&hospital={hospitals['ALT'].public_id}")
    assert client.get(f"{url}&hospital={hospitals['MNV'].public_id}").status_code == 404
    assert client.get(f"{url}&hospital={hospitals['MNV'].public_id}&format=csv&table=trips").status_code == 404
    references = [row[0] for row in rows(client, f"{url}&format=csv&table=trips")[1:]]
    assert references == ["T1", "T2", "T5", "T6"]
    assert client.get(url + "&format=csv&table=units").status_code == 400
    assert client.get("/center/analytics").status_code == 403
    assert client.get("/ems/analytics").status_code == 403


def test_ems_user_sees_own_agency_only(client, auth, known):
    auth.login("dispatch@blaircounty.medport.test")
    with client.application.app_context():
        agencies = _ids(Agency)
    url = "/ems/analytics?start=2024-03-04&end=2024-03-06"
    assert table(client, url, "fill")["Awarded"] == ["2", "100.0"]
    # Two awards, one of them a center assignment: one win.
    assert table(client, url, "agencies") == {"Blair County Ambulance": ["4", "1", "25.0", "20.0", "30.0", "2", "2"]}
    assert set(table(client, url, "units")) == {"Unit 21 (BLS)", "Unit 22 (BLS)", "Medic 23 (ALS)"}
    assert client.get(f"{url}&agency={agencies['AEMS'].public_id}").status_code == 404
    assert [r[0] for r in rows(client, f"{url}&format=csv&table=trips")[1:]] == ["T2", "T3"]


def test_trips_export_is_streamed_without_patient_data(client, auth, known):
    auth.login("coordinator@medport.test")
    response = get_ok(client, PERIOD + "&format=csv&table=trips")
    assert response.is_streamed
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.data.decode("utf-8-sig")
    header, *body = list(csv.reader(io.StringIO(text)))
    assert [row[0] for row in body] == ["T1", "T2", "T3", "T4", "T5", "T6"]
    assert "patient_ref" not in header and "notes" not in header
    assert "P-ACDEFH" not in text and "secret clinical note" not in text and "4 West" not in text
    first = dict(zip(header, body[0], strict=True))
    assert first["posted_at"] == "2024-03-04 09:00" and first["awarded_agency"] == "AEMS"
    assert first["at_pickup_at"] == "2024-03-04 09:40"


BAD_INPUT = [
    ("start=2024-03-10&end=2024-03-01", "The end date is before the start date."),
    ("start=2023-01-01&end=2024-03-01", "at most 400 days"),
    ("start=1999-12-01&end=2000-01-05", "Dates before 2000"),
    ("start=2024-01-01&end=2999-01-01", "more than a year ahead"),
    ("start=2024-02-30&end=2024-03-01", "YYYY-MM-DD"),
    ("start=yesterday&end=2024-03-01", "YYYY-MM-DD"),
    ("period=custom&start=2024-03-01", "Enter an end date"),
    ("period=fortnight", "Choose a period"),
    ("period=7d&hospital=not-a-hospital", "Unknown hospital"),
    ("period=7d&agency=00000000-0000-0000-0000-000000000000", "Unknown agency"),
    ("period=7d&level=XLS", "Unknown level of care"),
    ("period=7d&urgency=whenever", "Unknown urgency"),
]


def test_bad_input_is_a_clear_400(client, auth, demo):
    auth.login("coordinator@medport.test")
    for query, field_message in BAD_INPUT:
        page = client.get("/center/analytics?" + query)
        assert page.status_code == 400, query
        assert field_message in page.get_data(as_text=True), query
        export = client.get("/center/analytics?format=csv&table=fill&" + query)
        assert export.status_code == 400 and field_message in export.get_data(as_text=True), query


def test_bad_export_requests(client, auth, demo):
    auth.login("coordinator@medport.test")
    unknown = client.get("/center/analytics?period=7d&format=csv&table=everything")
    assert unknown.status_code == 400 and "Unknown table" in unknown.get_data(as_text=True)
    assert client.get("/center/analytics?period=7d&format=xlsx").status_code == 400


def _rollups():
    """Every stored row: (table, row) pairs, the days first."""
    stored = []
    for model in (AnalyticsDay, AnalyticsCell, AnalyticsUnitCell, AnalyticsBidCell):
        table = model.__table__
        columns = [c for c in table.c if c.name != "computed_at"]
        stored += [(table.name, tuple(row)) for row in db.session.execute(sa.select(*columns)).all()]
    return stored


def _stored_days():
    return {row[0].isoformat() for name, row in _rollups() if name == "analytics_days"}


def test_closed_days_are_rolled_up_once_and_reused(app, client, auth, known):
    auth.login("coordinator@medport.test")
    assert table(client, PERIOD, "volume_by_day")["2024-03-04"][0] == "4"
    with app.app_context():
        stored = _rollups()
        assert _stored_days() == {"2024-03-04", "2024-03-05", "2024-03-06"}
        # Change the source behind the rollup's back: a closed day is not recomputed.
        db.session.execute(sa.delete(TransportBid))
        db.session.execute(sa.delete(TransportRequest).where(TransportRequest.reference == "T4"))
        db.session.commit()
    assert table(client, PERIOD, "volume_by_day")["2024-03-04"][0] == "4"
    assert table(client, PERIOD, "competition")["Bids"] == ["9"]
    with app.app_context():
        assert sorted(_rollups()) == sorted(stored)


def test_open_days_are_computed_live(app, client, auth, known):
    """Today, and a past day with a request still running, are never stored."""
    auth.login("coordinator@medport.test")
    with app.app_context():
        _trip("RUNNING", "TYR", datetime(2024, 3, 6, 15, 0), status="en_route")
        db.session.commit()
    assert table(client, PERIOD, "volume_by_day")["2024-03-06"][0] == "1"
    with app.app_context():
        assert _stored_days() == {"2024-03-04", "2024-03-05"}
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.reference == "RUNNING")
                           .values(status="completed"))
        _trip("NOW", "TYR", utcnow() - timedelta(minutes=1), status="open")
        db.session.commit()
    assert table(client, PERIOD, "fill")["Cancelled"] == ["2", "28.6"]
    today = table(client, "/center/analytics?period=today", "volume_by_day")
    assert sum(int(v[0]) for v in today.values()) >= 1
    with app.app_context():
        assert max(_stored_days()) == "2024-03-06"


def test_local_days_and_hours_across_daylight_saving(app, client, auth, demo):
    auth.login("coordinator@medport.test")
    with app.app_context():
        _trip("EST", "ALT", datetime(2024, 3, 10, 6, 30))    # 01:30 EST on the 10th
        _trip("EDT", "ALT", datetime(2024, 3, 10, 7, 30))    # 03:30 EDT on the 10th
        _trip("EVE", "ALT", datetime(2024, 3, 10, 4, 30))    # 23:30 EST on the 9th
        db.session.commit()
    url = "/center/analytics?start=2024-03-09&end=2024-03-11"
    volume = table(client, url, "volume_by_day")
    assert [volume[d][0] for d in ("2024-03-09", "2024-03-10", "2024-03-11")] == ["1", "2", "0"]
    hours = table(client, url, "volume_by_hour")
    assert {h for h, n in hours.items() if n[0] != "0"} == {"01:00", "03:00", "23:00"}


def test_page_renders_for_each_role_on_demo_data(client, auth, demo):
    for email, path in (("admin@medport.test", "/center/analytics?period=30d"),
                        ("nurse@juniata.medport.test", "/hospital/analytics"),
                        ("dispatch@altoonaems.medport.test", "/ems/analytics?period=today")):
        auth.login(email)
        page = get_ok(client, path)
        html = page.get_data(as_text=True)
        assert "Median time to award" in html and 'type="application/json"' in html
        assert "<script>" not in html  # no inline script: the CSP forbids it
        auth.logout()


SCOPES = [
    {}, {"hospital": "ALT"}, {"hospital": "MNV"}, {"agency": "AEMS"}, {"agency": "BCA"}, {"agency": "CLL"},
    {"level": "BLS"}, {"level": "ALS"}, {"urgency": "urgent"}, {"hospital": "ALT", "agency": "AEMS"},
    {"hospital": "ALT", "level": "ALS", "urgency": "routine"}, {"agency": "BCA", "level": "BLS"},
]


def _scope(spec):
    from dashboard.services.analytics.period import Scope

    hospitals, agencies = _ids(Hospital), _ids(Agency)
    return Scope(hospital_id=hospitals[spec["hospital"]].id if "hospital" in spec else None,
                 agency_id=agencies[spec["agency"]].id if "agency" in spec else None,
                 level=spec.get("level"), urgency=spec.get("urgency"))


def test_stored_cells_sum_like_live_cells_for_every_filter(app, known):
    """The SQL sums over stored cells and the Python sums over live cells agree, filter by filter."""
    from collections import Counter
    from datetime import date

    from dashboard.services.analytics.cells import cell_metrics, compute_cells
    from dashboard.services.analytics.stored import store_cells, stored_metrics

    days = [date(2024, 3, d) for d in (3, 4, 5, 6, 7)]
    with app.app_context():
        cells = compute_cells(days)
        live = {}
        for spec in SCOPES:
            per_day = cell_metrics(cells, days, _scope(spec))
            live[str(spec)] = ({d: Counter(per_day.get(d, {})) for d in days},
                               sum(per_day.values(), Counter()))
        assert store_cells(cells, days) == days
        db.session.commit()
        assert store_cells(cells, days) == []  # stored once: nothing doubles
        for spec in SCOPES:
            per_day, overall = stored_metrics(days, _scope(spec))
            total = sum(per_day.values(), Counter(overall))
            live_days, live_total = live[str(spec)]
            assert total == live_total, spec
            for d in days:  # the figures shown per day
                for metric in ("requests", "awarded", "inside", "pickups", "level:ALS", "urgency:urgent"):
                    assert per_day[d][metric] == live_days[d][metric], (spec, d, metric)
        everything = live[str({})][1]
        assert everything["requests"] == 6 and everything["bids"] == 9
        assert live[str({"agency": "AEMS"})][1]["agency_bids:" + str(_ids(Agency)["AEMS"].id)] == 3
        assert live[str({"agency": "BCA", "level": "BLS"})][1]["requests"] == 1



def test_live_figures_equal_the_sums_of_live_cells_for_every_filter(app, known):
    """Today's figures, aggregated in SQL for the filter, equal the cells' sums for it."""
    from datetime import date

    from dashboard.services.analytics.cells import cell_metrics, compute_cells, live_metrics

    days = [date(2024, 3, d) for d in (3, 4, 5, 6, 7)]
    with app.app_context():
        cells = compute_cells(days)
        for spec in SCOPES:
            scope = _scope(spec)
            expected = {d: counts for d, counts in cell_metrics(cells, days, scope).items() if counts}
            assert dict(live_metrics(days, scope)) == expected, spec
        everything = live_metrics(days, _scope({}))
        assert sum(everything.values(), Counter())["bids"] == 9
        aems = _ids(Agency)["AEMS"].id
        assert sum(live_metrics(days, _scope({"agency": "AEMS"})).values(), Counter())[f"agency_bids:{aems}"] == 3

def test_bids_counted_alike_by_id_range_and_by_id_list(app, known, monkeypatch):
    from datetime import date

    from dashboard.services.analytics import cells

    days = [date(2024, 3, 4), date(2024, 3, 5)]
    with app.app_context():
        by_range = cells.compute_cells(days)
        monkeypatch.setattr(cells, "DENSE_IDS", 0)
        by_list = cells.compute_cells(days)
        for scoped in (by_range, by_list):
            assert sum(counts["bids"] for counts in scoped.cells.values()) == 9
            assert sum(scoped.bids.values()) == 9
        assert by_range == by_list


def test_rollup_stores_each_closed_day_once(app, runner, known):
    """The backfill skips today and days still running a request; a later run finishes them."""
    from dashboard.services.analytics.stored import roll_up

    now = datetime(2024, 3, 8, 17, 0)  # noon on the 8th in New York
    with app.app_context():
        _trip("RUNNING", "TYR", datetime(2024, 3, 6, 15, 0), status="en_route")
        db.session.commit()
        assert roll_up(now, days_back=5) == 4
        assert _stored_days() == {"2024-03-03", "2024-03-04", "2024-03-05", "2024-03-07"}
        requests = {row[0].isoformat(): row[1] for name, row in _rollups() if name == "analytics_days"}
        assert requests == {"2024-03-03": 0, "2024-03-04": 4, "2024-03-05": 2, "2024-03-07": 0}
        assert roll_up(now, days_back=5) == 0
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.reference == "RUNNING")
                           .values(status="completed"))
        db.session.commit()
        assert roll_up(now, days_back=5) == 1
        assert "2024-03-06" in _stored_days() and "2024-03-08" not in _stored_days()
    result = runner.invoke(args=["medport", "rollup", "--days", "3"])
    assert result.exit_code == 0, result.output
    assert "closed days" in result.output


def test_relay_timer_stores_closed_days(app, client, auth, known):
    """The relay's timer stores the days that closed; the page then reads them without computing."""
    from dashboard.events.relay import Relay

    Relay(app).run_once(now=datetime(2024, 3, 7, 17, 0))
    with app.app_context():
        stored = _stored_days()
        assert {"2024-03-04", "2024-03-05", "2024-03-06"} <= stored
        assert "2024-03-07" not in stored
        rows_before = sorted(_rollups())
    auth.login("coordinator@medport.test")
    assert table(client, PERIOD, "volume_by_day")["2024-03-04"][0] == "4"
    assert table(client, PERIOD, "competition")["Bids"] == ["9"]
    with app.app_context():
        assert sorted(_rollups()) == rows_before


def test_table_rows_escape_text_and_format_numbers():
    """The rows the page shows: a row header, numbers formatted, any text escaped, "—" for none."""
    from dashboard.analytics.presentation import Table

    table = Table("t", "T", [("Name", "text"), ("Count", "int"), ("Code", "text"), ("Share", "pct")],
                  [["<script>", "<b>", "A&B", None], ["Medic 11", 1234, "AEMS", 12.25]])
    assert table.body_html() == (
        '<tr><th scope="row">&lt;script&gt;</th><td class="num">&lt;b&gt;</td><td>A&amp;B</td>'
        '<td class="num"><span class="muted" title="Not enough data">—</span></td></tr>\n'
        '<tr><th scope="row">Medic 11</th><td class="num">1,234</td><td>AEMS</td><td class="num">12.2 %</td></tr>')
    assert Table("t", "T", [("Name", "text"), ("Count", "int")], []).body_html() == (
        '<tr><td colspan="2" class="empty">Nothing in this period.</td></tr>')
