"""Hospital staff tracking requests: the dashboard's tabs, sorting, search and paging, and the
request page."""
import re
from datetime import timedelta

import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import (
    HospitalFacility,
    TransportRequest,
)
from dashboard.services import trip_posting, trips
from tests.helpers import (
    award_form,
    bid_on,
    hospital_id,
    load,
    post_form,
    text,
    version_of,
)

# --- dashboard -------------------------------------------------------------------------------

def test_dashboard_tabs_follow_the_lifecycle(app, nurse, deliver):
    open_id = post_form(nurse, app, pickup_location="ICU bed 7")
    bid_on(app, open_id, "AEMS", 25)
    bid_on(app, open_id, "CLL", 12)
    deliver()
    open_ref = load(app, open_id).reference
    panel = text(nurse.get("/hospital/requests/panel"))
    row = re.search(rf"{open_ref}.*?</tr>", panel, re.S).group(0)
    assert re.search(r'<td class="num">2</td>\s*<td class="num">12 min</td>', row)
    assert "<html" not in panel and 'aria-current="page">Open' in panel

    awarded_id = post_form(nurse, app)
    bid_id = bid_on(app, awarded_id, "ACCT", 18)
    assert award_form(nurse, awarded_id, bid_id, version_of(app, awarded_id)).status_code == 302
    active = text(nurse.get("/hospital/?tab=active"))
    assert load(app, awarded_id).reference in active and "Allegheny Critical Care Transport" in active
    assert "18 min" in active and 'aria-current="page">Awarded / in progress' in active

    done_id = post_form(nurse, app)
    done_bid = bid_on(app, done_id, "CMT", 30)
    award_form(nurse, done_id, done_bid, version_of(app, done_id))
    with app.app_context():
        trip = trips.get_by_public_id(done_id)
        for step in trips.CREW_STEPS:
            assert trips.apply_crew_step(trip, step, utcnow(), trip.awarded_agency_id, actor=Actor(None, None, "Medic 62"))
        db.session.commit()
    completed = text(nurse.get("/hospital/?tab=completed"))
    assert load(app, done_id).reference in completed

    cancelled_id = post_form(nurse, app)
    nurse.post(f"/hospital/requests/{cancelled_id}/cancel",
               data={"reason": "not_needed", "version": "1"})
    cancelled = text(nurse.get("/hospital/?tab=cancelled"))
    assert load(app, cancelled_id).reference in cancelled and "Transport no longer needed" in cancelled
    # Each trip shows in its own tab only.
    assert load(app, cancelled_id).reference not in text(nurse.get("/hospital/"))


def test_dashboard_sorts_searches_and_pages(app, nurse):
    alt = hospital_id(app, "ALT")
    with app.app_context():
        origin = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == alt))
        now = utcnow()
        for i in range(27):
            trip_posting.post(alt, "ALT", dict(
                origin_facility_id=origin.id, pickup_location=f"Room {i}", destination_address="Home",
                level_of_care="BLS", mobility="wheelchair", urgency=("emergent" if i == 26 else "routine"),
                window_start=now + timedelta(hours=2, minutes=i), window_end=now + timedelta(hours=4),
                patient_ref="", age_group="adult", weight_kg=70, bid_deadline=now + timedelta(hours=1),
            ),
                              actor=Actor(1, None, "Test"))
        db.session.commit()
        references = sorted(db.session.scalars(sa.select(TransportRequest.reference).where(
            TransportRequest.hospital_id == alt, TransportRequest.status == "open")))
    first = text(nurse.get("/hospital/"))
    assert first.count('<tr>') + first.count('<tr class="at-risk">') == 26  # 25 rows and the header
    assert "Showing 1–25 of 27 requests · page 1 of 2" in first and 'rel="next"' in first
    # Default sort for open requests: emergent first.
    assert re.search(r"<tbody>\s*<tr[^>]*>\s*<td[^>]*><a[^>]*>([A-Z0-9-]+)</a>", first)
    assert "Emergent" in re.search(r"<tbody>.*?</tr>", first, re.S).group(0)
    second = text(nurse.get("/hospital/?page=2"))
    assert "Showing 26–27 of 27 requests · page 2 of 2" in second and 'rel="prev"' in second
    by_reference = text(nurse.get("/hospital/?sort=reference"))
    shown = re.findall(r'/hospital/requests/[0-9a-f-]{36}">([A-Z0-9-]+)</a>', by_reference)
    assert shown == references[:25]
    assert 'aria-sort="ascending"' in by_reference and 'href="/hospital/?sort=-reference"' in by_reference
    descending = text(nurse.get("/hospital/?sort=-reference"))
    assert re.findall(r'/hospital/requests/[0-9a-f-]{36}">([A-Z0-9-]+)</a>', descending)[0] == references[-1]
    found = text(nurse.get("/hospital/?q=" + references[3].lower()))
    assert re.findall(r'/hospital/requests/[0-9a-f-]{36}">([A-Z0-9-]+)</a>', found) == [references[3]]
    assert "1 request matching" in found
    assert "No open request matches" in text(nurse.get("/hospital/?q=%25_nothing"))
    for odd in ("page=abc", "page=-3", "page=99999999", "tab=secret", "q=" + "x" * 500, "page=%C2%B2"):
        assert nurse.get("/hospital/?" + odd).status_code == 200, odd
    for path in ("/hospital/?sort=drop+table", "/hospital/requests/panel?sort=-nonsense"):
        refused = nurse.get(path)
        assert refused.status_code == 400 and "Sort by one of: reference" in text(refused), path
    # The live panel keeps the view in its own URL.
    page = text(nurse.get("/hospital/?tab=open&sort=-reference&page=2&q=ALT"))
    assert 'hx-get="/hospital/requests/panel?sort=-reference&amp;page=2&amp;q=ALT"' in page
    assert 'hx-trigger="load, sse:trip-updated, sse:bid-updated"' in page
    panel = text(nurse.get("/hospital/requests/panel?sort=-reference&page=2&q=ALT"))
    assert "page 2 of 2" in panel and "<main" not in panel


def test_unfilled_requests_are_marked_and_may_be_reposted(app, nurse, deliver):
    public_id = post_form(nurse, app)
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id)
                           .values(bid_deadline=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    row = re.search(rf"{load(app, public_id).reference}.*?</tr>", text(nurse.get("/hospital/requests/panel")),
                    re.S).group(0)
    assert "Unfilled" in row
    deliver()  # the deadline timer flags it
    assert load(app, public_id).unfilled_at is not None
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    assert "Unfilled" in page and f"/hospital/requests/new?repost={public_id}" in page
    assert "Bidding deadline passed unfilled" in page


# --- request page ------------------------------------------------------------------------------

def test_request_page_shows_details_bids_best_first_and_timeline(app, nurse, deliver):
    public_id = post_form(nurse, app)
    withdrawn = bid_on(app, public_id, "AEMS", 40, note="Crew nearby")
    bid_on(app, public_id, "CLL", 15)
    with app.app_context():  # a withdrawn bid is not shown
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == withdrawn))
        bid.status = "withdrawn"
        db.session.commit()
    bid_on(app, public_id, "ACCT", 22)
    deliver()
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    for fact in ("4 West, room 412", "Johnstown Memorial Hospital", "ALS", "Older adult (65+)", "82 kg",
                 "Contact", "2.5 L/min", "Cardiac monitor", "Fall risk", "Daughter meets the crew"):
        assert fact in page, fact
    assert 'hx-trigger="load, sse:trip-updated, sse:bid-updated"' in page
    bids = text(nurse.get(f"/hospital/requests/{public_id}/bids"))
    assert "<main" not in bids
    names = re.findall(r"<td>(Centre LifeLink|Allegheny Critical Care Transport|Altoona EMS)", bids)
    assert names == ["Centre LifeLink", "Allegheny Critical Care Transport"]
    assert re.search(r'class="best-bid">\s*<td>Centre LifeLink', bids)
    assert bids.count('name="version" value="1"') == 2 and "data-confirm=" in bids
    timeline = text(nurse.get(f"/hospital/requests/{public_id}/timeline"))
    assert "Posted" in timeline and "by Charge Nurse (ALT)" in timeline and "<main" not in timeline
    summary = text(nurse.get(f"/hospital/requests/{public_id}/summary"))
    assert "best ETA 15 min" in summary and "<main" not in summary
