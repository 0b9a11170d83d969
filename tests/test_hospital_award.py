"""Hospital staff awarding a bid: the award, races between users, threads and the auto-award, and
the refusals."""
import threading

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.center import AuditLog
from dashboard.models.ems import TransportBid
from dashboard.services import deadlines, trips
from tests.helpers import (
    ALT_NURSE,
    STALE,
    award_form,
    bid_on,
    counts,
    history_actions,
    hospital_outbox_types,
    load,
    post_form,
    text,
    version_of,
)

# --- awarding --------------------------------------------------------------------------------

def test_award_a_live_bid(app, nurse, deliver):
    public_id = post_form(nurse, app)
    slow = bid_on(app, public_id, "AEMS", 40)
    fast = bid_on(app, public_id, "CLL", 15)
    deliver()
    response = award_form(nurse, public_id, fast, 1)
    assert response.status_code == 302
    trip = load(app, public_id)
    assert trip.status == "awarded" and trip.version == 2 and trip.award_source == "hospital"
    assert trip.awarded_agency_name == "Centre LifeLink" and trip.awarded_eta_minutes == 15
    assert history_actions(app, public_id) == ["posted", "awarded"]
    assert hospital_outbox_types(app, public_id) == ["trip.posted", "trip.awarded"]
    deliver()
    with app.app_context():
        statuses = dict(db.session.execute(sa.select(TransportBid.public_id, TransportBid.status).where(
            TransportBid.public_id.in_([slow, fast]))).all())
        assert statuses == {fast: "accepted", slow: "declined"}
        assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "trip.awarded",
                                                           AuditLog.entity_id == public_id)) is not None
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    assert "awarded to Centre LifeLink" in page and "<strong>Awarded</strong>" in page
    assert "Award<span" not in page  # no more award_form buttons


def test_two_users_award_at_once_exactly_one_wins(app, client, auth, demo, deliver):
    auth.login(ALT_NURSE)
    other = app.test_client()
    assert other.post("/login", data={"email": ALT_NURSE, "password": "medport-demo"}).status_code == 302
    public_id = post_form(client, app)
    first = bid_on(app, public_id, "AEMS", 30)
    second = bid_on(app, public_id, "CLL", 20)
    deliver()
    # Both pages were loaded with version 1.
    for browser in (client, other):
        assert 'name="version" value="1"' in text(browser.get(f"/hospital/requests/{public_id}/bids"))
    assert award_form(client, public_id, first, 1).status_code == 302
    losing = award_form(other, public_id, second, 1)
    assert losing.status_code == 409
    assert "was already awarded to Altoona EMS; nothing was saved." in text(losing)
    trip = load(app, public_id)
    assert trip.status == "awarded" and trip.awarded_agency_name == "Altoona EMS"
    assert history_actions(app, public_id).count("awarded") == 1
    assert hospital_outbox_types(app, public_id).count("trip.awarded") == 1


def test_a_user_loses_cleanly_to_the_auto_award(app, nurse, deliver):
    public_id = post_form(nurse, app)
    mine = bid_on(app, public_id, "AEMS", 30)
    auto = bid_on(app, public_id, "CLL", 20)
    deliver()
    version = version_of(app, public_id)
    with app.app_context():  # the auto-award acts first
        trip = trips.get_by_public_id(public_id)
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == auto))
        trips.award(trip, deadlines.bid_for_award(bid), source="auto", actor=Actor(None, None, "MedPort auto-award"))
        db.session.commit()
    response = award_form(nurse, public_id, mine, version)
    assert response.status_code == 409 and "was already awarded to Centre LifeLink" in text(response)
    trip = load(app, public_id)
    assert trip.award_source == "auto" and trip.awarded_agency_name == "Centre LifeLink"


def test_two_sessions_racing_compare_and_set(app, nurse, deliver):
    """Two sessions read the same open trip; both award_form it; the second finds it changed."""
    public_id = post_form(nurse, app)
    bids = [bid_on(app, public_id, "AEMS", 30), bid_on(app, public_id, "CLL", 20)]
    deliver()

    def offer(bid_public_id):
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))
        return deadlines.bid_for_award(bid)

    with app.app_context():
        first = trips.get_by_public_id(public_id)
        with app.app_context():  # a second session, reading the same version
            second = trips.get_by_public_id(public_id)
            assert first is not second and second.version == first.version == 1
            trips.award(second, offer(bids[1]), source="auto", expected_version=1, actor=Actor(None, None, "MedPort auto-award"))
            db.session.commit()
        with pytest.raises(trips.TransitionRefused) as refused:
            trips.award(first, offer(bids[0]), expected_version=1, actor=Actor(None, None, "Charge Nurse (ALT)"))
        db.session.rollback()
    assert refused.value.status == 409 and STALE in refused.value.message
    trip = load(app, public_id)
    assert trip.award_source == "auto" and trip.version == 2
    assert history_actions(app, public_id).count("awarded") == 1


def test_two_awards_in_parallel_threads(app, nurse, deliver):
    """A real race: two threads award_form the same trip at the same moment."""
    public_id = post_form(nurse, app)
    bids = [bid_on(app, public_id, "AEMS", 30), bid_on(app, public_id, "CLL", 20)]
    deliver()
    barrier = threading.Barrier(2, timeout=20)
    outcomes = []

    def contender(bid_public_id):
        with app.app_context():
            try:
                trip = trips.get_by_public_id(public_id)
                bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))
                offer = deadlines.bid_for_award(bid)
                db.session.commit()  # end the reads: both now hold nothing
                barrier.wait()
                trips.award(trip, offer, expected_version=1, actor=Actor(None, None, "Race"))
                db.session.commit()
                outcomes.append("won")
            except trips.TransitionRefused:
                db.session.rollback()
                outcomes.append("refused")
            except Exception as exc:
                db.session.rollback()
                outcomes.append(type(exc).__name__)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=contender, args=(b,)) for b in bids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["refused", "won"], outcomes
    assert history_actions(app, public_id).count("awarded") == 1


def test_award_refusals(app, nurse, deliver):
    public_id = post_form(nurse, app)
    other_id = post_form(nurse, app)
    live = bid_on(app, public_id, "AEMS", 30)
    withdrawn = bid_on(app, public_id, "CLL", 20)
    foreign = bid_on(app, other_id, "ACCT", 10)
    with app.app_context():
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == withdrawn))
        bid.status = "withdrawn"
        db.session.commit()
    deliver()
    before = counts(app)
    assert award_form(nurse, public_id, foreign, 1).status_code == 404
    assert award_form(nurse, public_id, "no-such-bid", 1).status_code == 404
    response = award_form(nurse, public_id, withdrawn, 1)
    assert response.status_code == 409 and "no longer live (it was withdrawn)" in text(response)
    for version in ("abc", "", "-1", "1.0", "99999999999"):
        response = award_form(nurse, public_id, live, version)
        assert response.status_code == 400 and "This form was altered" in text(response), version
    assert nurse.post(f"/hospital/requests/{public_id}/award", data={"version": "1"}).status_code == 400
    assert award_form(nurse, public_id, live, 7).status_code == 409  # a stale page
    assert counts(app) == before and load(app, public_id).status == "open"
    assert nurse.get(f"/hospital/requests/{public_id}/award").status_code == 405
    # Awarded already: a second award_form with the current version is refused too.
    assert award_form(nurse, public_id, live, 1).status_code == 302
    second = bid_on(app, other_id, "CLL", 12)
    assert award_form(nurse, other_id, second, 1).status_code == 302
    response = award_form(nurse, public_id, live, 2)
    assert response.status_code == 409 and "was already awarded to Altoona EMS" in text(response)
