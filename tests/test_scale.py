"""The bulk generator: consistent rows across the silos, every state, 2-5 bids per trip."""
from datetime import timedelta

import pytest
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


def _region_counts():
    """Rows of every registry and region table, and the trips and bids still live."""
    from dashboard.models.center import Agency, Hospital
    from dashboard.models.ems import EmsAgency, Unit
    from dashboard.models.hospital import HospitalFacility

    counts = {model.__tablename__: db.session.scalar(sa.select(sa.func.count()).select_from(model))
              for model in (Hospital, Agency, HospitalFacility, EmsAgency, Unit)}
    counts["live trips"] = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)).where(
        TransportRequest.status.not_in(("completed", "cancelled"))))
    counts["live bids"] = db.session.scalar(sa.select(sa.func.count(TransportBid.id)).where(
        TransportBid.status == "live"))
    return counts


def test_history_over_the_existing_region_adds_closed_trips_only(app, runner, demo):
    """``--existing-region``: closed trips over the demo region, none in the last 24 hours nor
    on the days of its requests still running."""
    from dashboard.models.base import utcnow
    from dashboard.models.center import Hospital
    from dashboard.models.ems import Unit
    from dashboard.models.vocabulary import LEVEL_RANK
    from dashboard.seed.scale import PATIENT_REF

    with app.app_context():
        before = _region_counts()
        demo_trips = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)))
        units = {u.id: (u.agency_id, u.level) for u in db.session.scalars(sa.select(Unit))}
        hospitals = set(db.session.scalars(sa.select(Hospital.id)))
    result = runner.invoke(args=["medport", "seed-scale", "--trips", "400", "--years", "0.5",
                                 "--existing-region", "--no-rollup"])
    assert result.exit_code == 0, result.output
    assert "added 400 trips" in result.output
    with app.app_context():
        assert _region_counts() == before  # no organisation, facility or unit; nothing live
        assert db.session.scalar(sa.select(sa.func.count(TransportRequest.id))) == demo_trips + 400
        added = db.session.scalars(sa.select(TransportRequest).where(TransportRequest.patient_ref == PATIENT_REF)).all()
        assert len(added) == 400
        assert {t.status for t in added} == {"completed", "cancelled"}
        assert {t.hospital_id for t in added} == hospitals  # 400 trips reach all six
        day_ago = utcnow() - timedelta(hours=24)
        oldest_running = db.session.scalar(sa.select(sa.func.min(TransportRequest.created_at)).where(
            TransportRequest.status.not_in(("completed", "cancelled"))))
        assert oldest_running is not None  # the demo has requests in every state
        day_ago = min(day_ago, oldest_running - timedelta(hours=24))
        for trip in added:
            moments = [m for m in (trip.created_at, trip.awarded_at, trip.en_route_at, trip.at_pickup_at,
                                   trip.transporting_at, trip.completed_at, trip.cancelled_at) if m is not None]
            assert max(moments) < day_ago, (trip.reference, max(moments))
        ids = [t.id for t in added]
        bids = db.session.scalars(sa.select(TransportBid).where(TransportBid.trip_id.in_(ids))).all()
        assert {b.status for b in bids} <= {"accepted", "declined", "closed"}
        level_of = {t.id: t.level_of_care for t in added}
        for bid in bids:  # every bid by an existing unit of its agency, able to serve the level
            agency_id, level = units[bid.unit_id]
            assert agency_id == bid.agency_id
            assert LEVEL_RANK[level] >= LEVEL_RANK[level_of[bid.trip_id]]
        completed = {t.id for t in added if t.status == "completed"}
        assert completed and set(db.session.scalars(
            sa.select(EmsRoute.trip_id).where(EmsRoute.trip_id.in_(ids)))) == completed
        events = db.session.scalar(sa.select(sa.func.count(TransportRequestEvent.id)).where(
            TransportRequestEvent.trip_id.in_(ids)))
        assert events >= 2 * len(added)


def test_history_over_the_existing_region_is_refused_with_live_trips_or_without_a_region(app, runner):
    live = runner.invoke(args=["medport", "seed-scale", "--trips", "10", "--existing-region", "--live", "3"])
    assert live.exit_code == 2 and "--live must be 0" in live.output
    empty = runner.invoke(args=["medport", "seed-scale", "--trips", "10", "--existing-region", "--no-rollup"])
    assert empty.exit_code == 1 and "seed a region first" in empty.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(TransportRequest.id))) == 0


def _generated_rows():
    """What a generation wrote, without its random public ids and references, in id order."""
    trips = db.session.execute(sa.select(
        TransportRequest.id, TransportRequest.hospital_id, TransportRequest.status, TransportRequest.level_of_care,
        TransportRequest.urgency, TransportRequest.origin_facility_id, TransportRequest.destination_facility_id,
        TransportRequest.created_at, TransportRequest.window_start, TransportRequest.completed_at,
        TransportRequest.cancelled_at, TransportRequest.awarded_bid_id, TransportRequest.awarded_unit_id,
        TransportRequest.awarded_unit_label, TransportRequest.awarded_agency_name, TransportRequest.notes,
        TransportRequest.cardiac_monitor).where(
        TransportRequest.patient_ref == "P-SCALE1").order_by(TransportRequest.id)).all()
    ids = [t.id for t in trips]
    bids = db.session.execute(sa.select(
        TransportBid.id, TransportBid.trip_id, TransportBid.agency_id, TransportBid.unit_id, TransportBid.status,
        TransportBid.eta_minutes, TransportBid.created_at, TransportBid.decided_at).where(
        TransportBid.trip_id.in_(ids)).order_by(TransportBid.id)).all()
    events = db.session.execute(sa.select(
        TransportRequestEvent.trip_id, TransportRequestEvent.action, TransportRequestEvent.from_status,
        TransportRequestEvent.to_status, TransportRequestEvent.at).where(
        TransportRequestEvent.trip_id.in_(ids)).order_by(TransportRequestEvent.id)).all()
    routes = db.session.execute(sa.select(
        EmsRoute.trip_id, EmsRoute.unit_id, EmsRoute.status, EmsRoute.service_date, EmsRoute.window_start).where(
        EmsRoute.trip_id.in_(ids)).order_by(EmsRoute.id)).all()
    return {"trips": trips, "bids": bids, "events": events, "routes": routes}


def _remove_generated(ids):
    db.session.execute(sa.delete(TransportRequestEvent).where(TransportRequestEvent.trip_id.in_(ids)))
    db.session.execute(sa.delete(TransportRequest).where(TransportRequest.id.in_(ids)))
    db.session.commit()
    db.session.execute(sa.delete(TransportBid).where(TransportBid.trip_id.in_(ids)))
    db.session.execute(sa.delete(EmsRoute).where(EmsRoute.trip_id.in_(ids)))
    db.session.commit()


def test_copy_and_insert_write_the_same_history(backend, request):
    """On PostgreSQL the generator writes with COPY; forced to ``executemany`` (the SQLite way)
    the same seed and moment give the same rows."""
    if backend != "postgres":
        pytest.skip("COPY is PostgreSQL's")
    from dashboard.models.base import utcnow
    from dashboard.seed import scale

    app = request.getfixturevalue("app")
    request.getfixturevalue("demo")
    now = utcnow()
    written = {}
    with app.app_context():
        for copy in (True, False):
            counts = scale.generate(300, years=0.2, now=now, existing_region=True, copy=copy)
            assert counts["trips"] == 300
            written[copy] = _generated_rows()
            _remove_generated([t.id for t in written[copy]["trips"]])
    assert len(written[True]["trips"]) == 300
    assert {t.status for t in written[True]["trips"]} == {"completed", "cancelled"}
    for table in ("trips", "bids", "events", "routes"):
        assert written[True][table] == written[False][table], table
