"""Upcoming requests cost the boards a bounded count: the EMS board shows how many (up to
"50+") and fetches the list only when its fold opens (``/ems/board/upcoming``); the hospital's
tabs are counted in one statement, the Upcoming and Cancelled tabs up to "99+"."""
import re

import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.models.center import Agency
from dashboard.models.hospital import TransportRequest
from dashboard.services import hospital_reads, scheduling
from tests.helpers import AEMS, ALT_NURSE, HCR, hospital, post_ahead, signed_in, text

HX = {"HX-Request": "true"}


def agency(code):
    return db.session.scalar(sa.select(Agency).where(Agency.short_code == code))


def board_count(client):
    """The number (or "50+") the EMS board shows beside Upcoming."""
    found = re.search(r'<span id="upcoming-count" class="count">([^<]*)</span>', text(client.get("/ems/")))
    assert found, "the board shows no upcoming count"
    return found.group(1)


def hospital_upcoming_tab(client):
    found = re.search(r'Upcoming <span class="count">([^<]*)</span>', text(client.get("/hospital/")))
    assert found, "the dashboard shows no Upcoming tab count"
    return found.group(1)


def test_the_upcoming_panel_lists_what_the_agency_serves_and_no_patient_data(app, demo):
    with app.app_context():
        bls = db.session.get(TransportRequest, post_ahead("BLS", days=5))
        cct = db.session.get(TransportRequest, post_ahead("CCT", days=6))
        bls_ref, cct_ref, patient_ref, pickup = bls.reference, cct.reference, bls.patient_ref, bls.pickup_location
    aems, hcr = signed_in(app, AEMS), signed_in(app, HCR)  # AEMS serves CCT; HCR BLS only

    board = text(aems.get("/ems/"))
    assert bls_ref not in board and cct_ref not in board  # the board counts them, lists neither
    assert 'hx-trigger="toggle once"' in board and 'href="/ems/board/upcoming"' in board  # no-JS link

    panel = text(aems.get("/ems/board/upcoming", headers=HX))
    assert bls_ref in panel and cct_ref in panel and "<html" not in panel
    assert panel.index(bls_ref) < panel.index(cct_ref)  # soonest opening first
    assert patient_ref not in panel and pickup not in panel
    assert bls_ref in text(aems.get("/ems/board/upcoming?level=BLS", headers=HX))
    assert cct_ref not in text(aems.get("/ems/board/upcoming?level=BLS", headers=HX))
    assert aems.get("/ems/board/upcoming?level=XYZ", headers=HX).status_code == 400

    hcr_panel = text(hcr.get("/ems/board/upcoming", headers=HX))
    assert bls_ref in hcr_panel and cct_ref not in hcr_panel
    assert hcr.get("/ems/board/upcoming?level=CCT", headers=HX).status_code == 400

    # Without htmx (the no-JS link) it is a page of its own, with the same rows.
    page = text(hcr.get("/ems/board/upcoming"))
    assert "<html" in page and "Upcoming requests" in page and bls_ref in page and cct_ref not in page


def test_the_upcoming_panel_is_for_ems_users_only(app, demo):
    assert signed_in(app, ALT_NURSE).get("/ems/board/upcoming").status_code == 403
    assert signed_in(app, "coordinator@medport.test").get("/ems/board/upcoming", headers=HX).status_code == 403
    anonymous = app.test_client().get("/ems/board/upcoming")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]


def test_the_ems_board_counts_upcoming_requests_exactly_up_to_50_then_50_plus(app, demo):
    with app.app_context():
        hcr = agency("HCR")
        already = scheduling.upcoming_count(hcr.id, hcr.level_list, 50)
        assert already < 50
        for day in range(50 - already):
            post_ahead("BLS", days=4 + day % 20)
        assert scheduling.upcoming_count(hcr.id, hcr.level_list, 50) == 50
        assert scheduling.upcoming_count(hcr.id, hcr.level_list, 10) == 11  # stops past the cap
    client = signed_in(app, HCR)
    assert board_count(client) == "50"
    with app.app_context():
        post_ahead("BLS", days=30)
    assert board_count(client) == "50+"
    # The live refresh of the board's table brings the count along (out of band).
    panel = text(client.get("/ems/board/panel", headers=HX))
    assert '<span id="upcoming-count" class="count" hx-swap-oob="true">50+</span>' in panel
    # The panel lists the 50 soonest.
    listed = text(client.get("/ems/board/upcoming", headers=HX))
    assert listed.count('<span class="badge">Upcoming</span>') == 50 and "(the first 50;" in listed


def test_the_hospital_tabs_count_upcoming_exactly_up_to_99_then_99_plus(app, demo):
    nurse = signed_in(app, ALT_NURSE)
    with app.app_context():
        alt = hospital("ALT").id
        before = hospital_reads.tab_counts(alt)
        assert before["upcoming"] < 99
        for day in range(99 - before["upcoming"]):
            post_ahead("BLS", days=4 + day % 30)
        counts = hospital_reads.tab_counts(alt)
        assert counts == dict(before, upcoming=99)  # the other tabs are untouched
    assert hospital_upcoming_tab(nurse) == "99"
    with app.app_context():
        post_ahead("BLS", days=40)
        assert hospital_reads.tab_counts(alt)["upcoming"] == 100  # read up to the cap and one more
    assert hospital_upcoming_tab(nurse) == "99+"


def test_the_cancelled_tab_counts_up_to_99_then_99_plus_and_its_list_counts_every_row(app, demo):
    """Years of cancelled requests are counted apart and capped (the statement over the day's
    rows never reads them); the cancelled tab itself still says how many it holds."""
    nurse = signed_in(app, ALT_NURSE)
    with app.app_context():
        alt = hospital("ALT").id
        before = hospital_reads.tab_counts(alt)
        for day in range(101 - before["cancelled"]):
            post_ahead("BLS", days=4 + day % 30)
        db.session.execute(sa.update(TransportRequest).where(
            TransportRequest.hospital_id == alt, TransportRequest.status == "open",
            TransportRequest.bidding_opens_at.is_not(None)).values(status="cancelled",
                                                                   cancelled_at=sa.func.current_timestamp()))
        db.session.commit()
        total = db.session.scalar(sa.select(sa.func.count()).where(
            TransportRequest.hospital_id == alt, TransportRequest.status == "cancelled"))
        assert total > 100
        counts = hospital_reads.tab_counts(alt)
        assert counts["cancelled"] == 100  # read up to the cap and one more
    assert re.search(r'Cancelled <span class="count">99\+</span>', text(nurse.get("/hospital/")))
    listed = text(nurse.get("/hospital/requests/panel?tab=cancelled", headers=HX))
    assert f"of {total:,} requests" in listed


def test_the_one_statement_tab_counts_agree_with_each_tab(app, demo):
    """Each tab's count is the number of rows its list holds (the demo has requests in every
    state, a few booked ahead among them)."""
    with app.app_context():
        post_ahead("BLS", days=5)
        for code in ("ALT", "JMH"):
            hospital_id = hospital(code).id
            counts = hospital_reads.tab_counts(hospital_id)
            for tab, count in counts.items():
                rows = db.session.scalar(sa.select(sa.func.count()).where(
                    TransportRequest.hospital_id == hospital_id, hospital_reads.tab_filter(tab)))
                assert count == rows, (code, tab)  # the demo's upcoming and cancelled are under the cap
            assert counts["upcoming"] >= (1 if code == "ALT" else 0)
