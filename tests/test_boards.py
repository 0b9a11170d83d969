"""The open-request boards (the hospital's requests, the EMS board, the regional board): sorted by
deadline, pickup time, urgency or at risk first, a page at a time, in SQL; the sort and page kept
in the live panel's URL; a sort a board does not offer refused with a message."""
import re
from datetime import timedelta
from html import unescape

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, Hospital
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import HospitalFacility, TransportRequest
from dashboard.models.vocabulary import URGENCY_RANK
from dashboard.services import bidding, boards, configuration, hospital_reads, oversight, trip_posting, trips
from tests.helpers import signed_in

NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"  # Altoona EMS: BLS, ALS, CCT
COORDINATOR = "coordinator@medport.test"
SORTS = ["risk", "urgency", "deadline", "window", "-deadline", "-window"]
REFERENCE = re.compile(r'/requests/[0-9a-f-]{36}"[^>]*>([A-Z0-9-]+)</a>')


def post(app, code="ALT", urgency="routine", level="BLS", window_in=180, deadline_in=60, created_ago=1,
         invite_mode="all", after_minutes=None, **values):
    """A request of hospital ``code`` posted through the service, then set as asked; its id."""
    now = utcnow()
    with app.app_context():
        hospital = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == code))
        origin = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == hospital.id))
        trip = trip_posting.post(hospital.id, code, dict(
            origin_facility_id=origin.id, pickup_location="4 West", destination_address="Home",
            level_of_care=level, mobility="stretcher", urgency=urgency,
            window_start=now + timedelta(minutes=window_in - 60), window_end=now + timedelta(minutes=window_in),
            patient_ref="", age_group="adult", weight_kg=80, bid_deadline=now + timedelta(minutes=deadline_in),
            invite_mode=invite_mode, invite_all_after_minutes=after_minutes),
                                 actor=Actor(1, None, "Test nurse"))
        trip.created_at = now - timedelta(minutes=created_ago)
        for key, value in values.items():
            setattr(trip, key, value)
        db.session.commit()
        return trip.id


def busy_region(app, count=60):
    """``count`` more open requests at Altoona, of every urgency, with deadlines and windows
    in orders of their own (so each sort gives a different order), some of them at risk."""
    for i in range(count):
        post(app, urgency=("routine", "urgent", "emergent")[i % 3 if i % 7 else 0],
             window_in=120 + (i * 37) % 600, deadline_in=20 + (i * 53) % 300 if i % 11 else -5,
             created_ago=(i * 13) % 30, bid_count=(1 if i % 5 == 0 else 0))


def python_order(trips_, sort, at_risk_ids):
    """The order a sort means, computed in Python over every row (what SQL must agree with):
    the first key (reversed by a leading ``-``), then the rest ascending, then the id (descending
    when reversed)."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    first = {"risk": lambda t: t.id not in at_risk_ids, "urgency": lambda t: URGENCY_RANK[t.urgency],
             "deadline": lambda t: t.bid_deadline, "window": lambda t: t.window_start}[key]
    rest = {"risk": lambda t: (URGENCY_RANK[t.urgency], t.bid_deadline),
            "urgency": lambda t: (t.window_start,), "deadline": lambda t: (), "window": lambda t: ()}[key]
    ordered = sorted(trips_, key=lambda t: (*rest(t), -t.id if descending else t.id))
    return [t.reference for t in sorted(ordered, key=first, reverse=descending)]  # stable


def at_risk_ids(now):
    settings = configuration.get_all()
    agencies = oversight.registry_names()[1]
    return {t.id for t in db.session.scalars(sa.select(TransportRequest))
            if oversight.risk_marks(t, now, settings, agencies)}


def shown(html):
    return REFERENCE.findall(html)


# --- the at-risk rule in SQL --------------------------------------------------------------

def test_the_sql_at_risk_rule_marks_what_risk_marks_marks(app, demo):
    busy_region(app, 30)
    now = utcnow()
    post(app, created_ago=40, deadline_in=-10)                             # unfilled
    post(app, created_ago=40, deadline_in=-10, bid_count=2)                # awaiting award
    post(app, created_ago=25)                                              # no bids
    post(app, window_in=10, bid_count=1)                                   # pickup window ends soon
    post(app, window_in=-5, bid_count=1, deadline_in=-30)                  # window passed
    post(app, status="awarded", window_in=100, bid_count=1,               # awarded, window started
         awarded_agency_id=1, window_start=now - timedelta(minutes=1))
    post(app, status="en_route", window_in=-1, bid_count=1)                # not at pickup in time
    post(app, status="completed", urgency="emergent", completed_at=now)    # closed: never at risk
    with app.app_context():
        gone = db.session.scalar(sa.select(Agency).where(Agency.short_code == "HCR"))
        gone.active, gone_id = False, gone.id
        db.session.commit()
    post(app, status="awarded", window_in=600, bid_count=1, awarded_agency_id=gone_id)  # reassign
    with app.app_context():
        settings = configuration.get_all()
        agencies = oversight.registry_names()[1]
        assert not agencies[gone_id].active
        expected = at_risk_ids(now)
        condition = oversight.risk_condition(now, settings, oversight.deactivated_agency_ids(agencies))
        found = set(db.session.scalars(sa.select(TransportRequest.id).where(condition)))
        total = db.session.scalar(sa.select(sa.func.count()).select_from(TransportRequest))
    assert found == expected
    assert 10 < len(found) < total  # both kinds are there
    # The regional board counts and filters with it: "N at risk", and "at risk only".
    with app.app_context():
        from dashboard.models.vocabulary import ACTIVE_STATUSES

        watched = {t.id for t in db.session.scalars(sa.select(TransportRequest).where(
            TransportRequest.status.in_(("open", *ACTIVE_STATUSES))))}
        board = oversight.board(oversight.BoardFilters(), now=now)
        assert board["counts"]["at_risk"] == len(expected & watched)
        risky = oversight.board(oversight.BoardFilters(risk_only=True), now=now)
        shown_ids = {row.trip.id for rows in risky["groups"].values() for row in rows}
        assert shown_ids == expected & watched and all(row.marks for rows in risky["groups"].values()
                                                       for row in rows)


def test_the_sql_invitation_rule_is_agency_may_serve(app, demo):
    later = post(app, invite_mode="preferred_then_all", after_minutes=30, created_ago=5)
    widened = post(app, invite_mode="preferred_then_all", after_minutes=30, created_ago=31)
    preferred = post(app, invite_mode="preferred", created_ago=50)
    post(app, level="CCT")
    now = utcnow()
    with app.app_context():
        for agency in oversight.registry_names()[1].values():
            live = set(db.session.scalars(sa.select(TransportBid.trip_id).where(
                TransportBid.agency_id == agency.id, TransportBid.status == "live")))
            levels = bidding.servable_levels(agency.level_list)
            expected = {t.id for t in db.session.scalars(sa.select(TransportRequest).where(
                TransportRequest.status == "open"))
                if t.level_of_care in levels and (t.bid_deadline > now or t.id in live)
                and trips.agency_may_serve(t, agency.id, agency.level_list, now)}
            listed = {t.id for t in bidding.open_requests(agency.id, agency.level_list, now=now)}
            assert listed == expected, agency.short_code
            rows, page = bidding.open_requests_page(agency.id, agency.level_list, "deadline", 1, None, now=now)
            assert page.total == len(expected) and {t.id for t in rows} <= expected
        cll = db.session.scalar(sa.select(Agency).where(Agency.short_code == "CLL"))  # not preferred by ALT
        listed = {t.id for t in bidding.open_requests(cll.id, cll.level_list, now=now)}
    assert widened in listed and later not in listed and preferred not in listed


def test_statements_built_once_read_each_calls_time_and_values(app, demo, monkeypatch):
    """The boards' statements are built once a process (``services/statements.py``) and run
    with each call's values: at two times (and back), for two hospitals and two agencies, each
    read finds what the same rule written with that call's values finds."""
    now = utcnow()
    later = now + timedelta(hours=2)
    closing = post(app, deadline_in=30)  # taking bids now, past its deadline later
    opening = post(app, window_in=600, bidding_opens_at=now + timedelta(hours=1),
                   bid_deadline=now + timedelta(minutes=90))  # upcoming now, open (unfilled) later
    clock = [now]
    monkeypatch.setattr(hospital_reads, "utcnow", lambda: clock[0])
    T = TransportRequest
    with app.app_context():
        for moment in (now, later, now):
            clock[0] = moment
            for code in ("ALT", "JMH"):
                hospital_id = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == code))
                counts = hospital_reads.tab_counts(hospital_id, now=moment)
                for tab in ("open", "upcoming", "active", "cancelled"):
                    written = [T.hospital_id == hospital_id, hospital_reads.tab_filter(tab, moment)]
                    assert counts[tab] == db.session.scalar(sa.select(sa.func.count()).where(*written)), (code, tab)
                    listed = hospital_reads.requests_page(hospital_id, tab, "window", "", 1, 500).rows
                    expected = db.session.scalars(sa.select(T.id).where(*written).order_by(T.window_start, T.id))
                    assert [t.id for t in listed] == list(expected), (code, tab)
            upcoming = {t.id for t in hospital_reads.requests_page(_altoona(), "upcoming", "window", "", 1, 500).rows}
            taking = {t.id for t in hospital_reads.requests_page(_altoona(), "open", "window", "", 1, 500).rows}
            assert (opening in upcoming, opening in taking) == ((True, False) if moment == now else (False, True))
            for short_code in ("AEMS", "HCR"):
                agency = db.session.scalar(sa.select(Agency).where(Agency.short_code == short_code))
                rows, page = bidding.open_requests_page(agency.id, agency.level_list, "deadline", 1, None, now=moment)
                expected = sorted(bidding.open_requests(agency.id, agency.level_list, now=moment),
                                  key=lambda t: (t.bid_deadline, t.id))
                assert page.total == len(expected), short_code
                assert [t.id for t in rows] == [t.id for t in expected][:boards.PAGE_SIZE], short_code
                assert (closing in {t.id for t in rows}) == (moment == now), short_code


# --- the three boards ---------------------------------------------------------------------

BOARDS = {
    # name: (who, page, panel, rows per page, the board's requests)
    "hospital": (NURSE, "/hospital/", "/hospital/requests/panel", 25,
                 lambda: [t for t in db.session.scalars(sa.select(TransportRequest).where(
                     TransportRequest.status == "open", TransportRequest.hospital_id == _altoona()))]),
    "ems": (DISPATCH, "/ems/", "/ems/board/panel", boards.PAGE_SIZE,
            lambda: bidding.open_requests(_aems().id, _aems().level_list)),
    "center": (COORDINATOR, "/center/?state=open", "/center/board/panel?state=open", boards.PAGE_SIZE,
               lambda: list(db.session.scalars(sa.select(TransportRequest).where(
                   TransportRequest.status == "open")))),
}


def _altoona():
    return db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "ALT"))


def _aems():
    return db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))


def _with(path, **args):
    joiner = "&" if "?" in path else "?"
    return path + joiner + "&".join(f"{key}={value}" for key, value in args.items())


@pytest.mark.parametrize("board", list(BOARDS))
def test_each_board_sorts_and_pages_in_sql(app, demo, board):
    busy_region(app)
    who, page_path, panel_path, size, requests_of = BOARDS[board]
    client = signed_in(app, who)
    orders = set()
    for sort in SORTS:
        first = client.get(_with(page_path, sort=sort))
        assert first.status_code == 200, sort
        html = first.get_data(as_text=True)
        with app.app_context():
            now = utcnow()
            expected = python_order(requests_of(), sort, at_risk_ids(now))
        assert len(expected) > size  # more than one page
        assert shown(html) == expected[:size], sort
        total = len(expected)
        assert f"Showing 1–{size} of {total:,} request" in unescape(html)
        second = client.get(_with(panel_path, sort=sort, page=2)).get_data(as_text=True)
        assert shown(second) == expected[size:2 * size], sort
        assert f"Showing {size + 1}–{min(total, 2 * size)} of {total:,}" in unescape(second)
        orders.add(tuple(expected[:size]))
    assert len(orders) == len(SORTS)  # every sort orders the rows its own way


@pytest.mark.parametrize("board", list(BOARDS))
def test_the_live_panel_keeps_the_sort_and_page(app, demo, board):
    busy_region(app)
    who, page_path, _panel_path, _size, _requests = BOARDS[board]
    html = signed_in(app, who).get(_with(page_path, sort="deadline", page=2)).get_data(as_text=True)
    panels = [unescape(url) for url in re.findall(r'hx-get="([^"]*/panel[^"]*)"', html)]
    assert any("sort=deadline" in url and "page=2" in url for url in panels), panels
    # A new sort starts at the first page; the pager keeps the sort.
    assert re.search(r'href="[^"]*sort=window"[^>]*data-sort="window"', html)
    assert re.search(r'href="[^"]*sort=deadline[^"]*" rel="prev"', html)
    assert not re.search(r'href="[^"]*sort=window[^"]*page=', unescape(html))


@pytest.mark.parametrize("board", list(BOARDS))
def test_bad_sort_and_page_values(app, demo, board):
    busy_region(app)
    who, page_path, panel_path, size, _requests = BOARDS[board]
    client = signed_in(app, who)
    for path in (page_path, panel_path):
        for bad in ("bogus", "-", "--deadline", "deadline;drop", "Deadline", "reference" if board != "hospital" else "x"):
            response = client.get(_with(path, sort=bad), headers={"HX-Request": "true"} if "panel" in path else {})
            body = unescape(response.get_data(as_text=True))
            assert response.status_code == 400, (path, bad)
            assert "cannot be sorted that way" in body and "deadline (bidding closes)" in body, (path, bad)
        for odd in ("abc", "0", "-2", "1e3", "²", "99999999999"):
            response = client.get(_with(path, page=odd))
            assert response.status_code == 200, (path, odd)
            assert "Showing 1–" in unescape(response.get_data(as_text=True)), (path, odd)
        # A page past the last shows the last.
        last = unescape(client.get(_with(path, page=500)).get_data(as_text=True))
        assert re.search(r"Showing [0-9,]+–([0-9,]+) of \1 request", last), path


def test_the_sort_parameters_parse_as_documented():
    assert boards.sort_from(None, "risk") == "risk" and boards.sort_from("  ", "risk") == "risk"
    assert boards.sort_from("-window", "risk") == "-window"
    with pytest.raises(boards.BoardQueryRefused) as refused:
        boards.sort_from("created", "risk")
    assert refused.value.status == 400 and "window (pickup time)" in refused.value.message
    assert [boards.page_from(v) for v in ("3", "", None, "0", "x", "100000", "100001", " 7 ")] == \
        [3, 1, 1, 1, 1, 100000, 1, 7]
    page = boards.page_of(9, 120)
    assert (page.number, page.pages, page.first, page.last, page.has_next) == (3, 3, 101, 120, False)
    empty = boards.page_of(1, 0)
    assert (empty.first, empty.last, empty.pages, empty.has_previous) == (0, 0, 1, False)
