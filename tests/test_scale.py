"""The bulk generator: consistent rows across the silos, every state, 2-5 bids per trip."""
import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.models.ems import EmsRoute, TransportBid
from dashboard.models.hospital import TransportRequest, TransportRequestEvent


def test_seed_scale_fills_every_silo_consistently(app, runner):
    result = runner.invoke(args=["medport", "seed-scale", "--trips", "1500"])
    assert result.exit_code == 0, result.output
    assert "added 1500 trips" in result.output
    with app.app_context():
        trips = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)))
        assert trips == 1500
        per_trip = db.session.execute(
            sa.select(sa.func.min(sa.text("n")), sa.func.max(sa.text("n"))).select_from(
                sa.select(sa.func.count(TransportBid.id).label("n")).group_by(TransportBid.trip_id).subquery())
        ).one()
        assert per_trip == (2, 5)
        trip_ids = set(db.session.scalars(sa.select(TransportRequest.id)))
        assert set(db.session.scalars(sa.select(TransportBid.trip_id).distinct())) == trip_ids
        statuses = set(db.session.scalars(sa.select(TransportRequest.status).distinct()))
        assert {"completed", "cancelled"} <= statuses
        # Every awarded trip's winning bid is accepted and it has a route.
        awarded = db.session.execute(
            sa.select(TransportRequest.id, TransportRequest.awarded_bid_id)
            .where(TransportRequest.awarded_bid_id.is_not(None))).all()
        accepted = dict(db.session.execute(
            sa.select(TransportBid.trip_id, TransportBid.id).where(TransportBid.status == "accepted")).all())
        assert awarded and all(accepted[t] == b for t, b in awarded)
        routed = set(db.session.scalars(sa.select(EmsRoute.trip_id)))
        assert {t for t, _ in awarded} == routed
        assert db.session.scalar(sa.select(sa.func.count(TransportRequestEvent.id))) >= trips
    # A second run adds to the first (ids and sequences move on).
    again = runner.invoke(args=["medport", "seed-scale", "--trips", "10"])
    assert again.exit_code == 0, again.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(TransportRequest.id))) == 1510
        trip = TransportRequest(reference="AFTER-SCALE", hospital_id=1, origin_facility_id=1,
                                pickup_location="x", level_of_care="BLS", mobility="stretcher",
                                urgency="routine", window_start=sa.func.now(), window_end=sa.func.now(),
                                patient_ref="P-X", age_group="adult", weight_kg=70,
                                bid_deadline=sa.func.now(), created_by_user_id=1)
        db.session.add(trip)
        db.session.commit()  # the sequence is past the generated ids
        assert trip.id > 1510
