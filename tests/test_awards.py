"""Awarding a bid: one function (``services.awards.award_bid``) for the hospital and for the
center on its behalf, with every check in it; each side keeps its own wording."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, Hospital, User
from dashboard.models.ems import TransportBid, Unit
from dashboard.models.hospital import HospitalFacility
from dashboard.models.vocabulary import LEVEL_RANK
from dashboard.services import awards, bidding, intervention, trip_posting, trips
from dashboard.services.trips import TransitionRefused

ALT_NURSE = "nurse@altoona.medport.test"


def _post(level="ALS"):
    """An open request of Altoona's at ``level``, posted through the service (app context)."""
    alt = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
    origin = db.session.scalar(sa.select(HospitalFacility.id).where(HospitalFacility.hospital_id == alt.id))
    now = utcnow()
    fields = dict(origin_facility_id=origin, pickup_location="ED bay 3", destination_address="Home",
                  level_of_care=level, mobility="stretcher", urgency="routine",
                  window_start=now + timedelta(hours=9), window_end=now + timedelta(hours=10),
                  patient_ref="", age_group="adult", weight_kg=70, bid_deadline=now + timedelta(hours=1))
    nurse = db.session.scalar(sa.select(User.id).where(User.email == ALT_NURSE))
    trip = trip_posting.post(alt.id, alt.short_code, fields, actor=Actor(nurse, None, "Test"))
    db.session.commit()
    return trip


def _bid(trip, agency_code="AEMS"):
    """A live bid of the agency, with its first unit that may take the request."""
    agency = db.session.scalar(sa.select(Agency).where(Agency.short_code == agency_code))
    for unit in db.session.scalars(sa.select(Unit).where(Unit.agency_id == agency.id).order_by(Unit.id)):
        if LEVEL_RANK[unit.level] < LEVEL_RANK[trip.level_of_care]:
            continue
        bid = bidding.place(trip, agency.id, agency.name, agency.level_list, unit.id, 20, "", actor=Actor(None))
        db.session.commit()
        return bid
    raise AssertionError(f"{agency_code} has no unit for this request")


def _downgrade(bid):
    """The bid's unit re-registered a level lower (BLS) since it bid."""
    db.session.get(Unit, bid.unit_id).level = "BLS"
    db.session.commit()


@pytest.mark.parametrize("by", ["hospital", "center"])
def test_a_unit_below_the_level_of_care_is_refused_on_both_sides(app, demo, by):
    with app.app_context():
        trip = _post("ALS")
        bid = _bid(trip)
        _downgrade(bid)
        with pytest.raises(TransitionRefused) as refused:
            awards.award_bid(trip, bid.public_id, trip.version, by=by, actor=Actor(None, None, "Test"))
        assert refused.value.status == 400
        assert refused.value.message == "The bid's unit is BLS; this request needs ALS or higher."
        db.session.rollback()
        assert trips.get_by_public_id(trip.public_id).status == "open"


def test_the_hospital_page_answers_the_level_refusal(app, client, auth, demo):
    with app.app_context():
        trip = _post("ALS")
        bid = _bid(trip)
        _downgrade(bid)
        public_id, bid_id, version = trip.public_id, bid.public_id, trip.version
    assert auth.login(ALT_NURSE).status_code == 302
    response = client.post(f"/hospital/requests/{public_id}/award", data={"bid": bid_id, "version": str(version)})
    assert response.status_code == 400
    assert "The bid&#39;s unit is BLS; this request needs ALS or higher." in response.get_data(as_text=True)


def test_each_side_keeps_its_wording(app, demo):
    with app.app_context():
        trip = _post("BLS")
        bid = _bid(trip)
        db.session.get(TransportBid, bid.id).status = "withdrawn"
        db.session.commit()
        with pytest.raises(TransitionRefused) as hospital:
            awards.award_bid(trip, bid.public_id, trip.version, by="hospital", actor=Actor(None, None, "Test"))
        with pytest.raises(TransitionRefused) as center:
            intervention.award_bid(trip, bid.public_id, trip.version, actor=Actor(None, None, "Test (transport center)"))
        assert hospital.value.message == ("That bid is no longer live (it was withdrawn). "
                                          "Choose another bid; nothing was saved.")
        assert center.value.message == "That bid is no longer live (withdrawn, declined or closed)."
        assert hospital.value.status == center.value.status == 409
        for side in ("hospital", "center"):
            with pytest.raises(TransitionRefused) as missing:
                awards.award_bid(trip, "no-such-bid", trip.version, by=side, actor=Actor(None, None, "Test"))
            assert missing.value.status == 404 and missing.value.message == "That bid is not on this request."
        # A stale page: the center is told first; the hospital at the compare-and-set.
        live = _bid(trip, "CLL")
        with pytest.raises(TransitionRefused) as stale:
            intervention.award_bid(trip, live.public_id, trip.version - 1, actor=Actor(None, None, "Test"))
        assert stale.value.message == trips.STALE_MESSAGE
        with pytest.raises(ValueError):
            awards.award_bid(trip, live.public_id, trip.version, by="ems", actor=Actor(None, None, "Test"))


def test_the_center_awards_through_the_same_function(app, demo):
    with app.app_context():
        trip = _post("BLS")
        bid = _bid(trip)
        awarded = intervention.award_bid(trip, bid.public_id, trip.version,
                                         actor=Actor(None, None, "Coordinator (transport center)"))
        db.session.commit()
        assert (awarded.status, awarded.award_source, awarded.awarded_bid_id) == ("awarded", "center", bid.id)
        other = _post("BLS")
        with pytest.raises(TransitionRefused) as taken:
            awards.award_bid(awarded, bid.public_id, awarded.version, by="hospital", actor=Actor(None, None, "Test"))
        assert taken.value.message.endswith(f"was already awarded to {awarded.awarded_agency_name}; "
                                            "nothing was saved.")
        assert other.status == "open"
