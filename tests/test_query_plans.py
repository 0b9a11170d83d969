"""The dashboards read the trips table through indexes: EXPLAIN finds no sequential scan of it.

PostgreSQL only (on SQLite the test skips).  The region gets years of history
from the bulk generator (``flask medport seed-scale``'s code), 3,000 trips, then
ANALYZE (its last step); a nurse of a generated hospital, a dispatcher of a generated agency
and the demo coordinator fetch every dashboard page and partial while a
listener keeps each SELECT that reads ``transport_requests`` with its
parameters.  Each is then EXPLAINed on its silo with the planner as
configured (``enable_seqscan`` left on): at this size a sequential scan is
what the planner picks when no index fits the query (a query an index fits
gets an index or bitmap scan from a few hundred rows up), so a ``Seq Scan on
transport_requests`` fails the test and names the page and the statement.

One check is SQLite's own: the agency's live bids are read through their index.
"""
import json
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from dashboard.extensions import db
from dashboard.models.center import Agency, Hospital
from dashboard.seed import scale
from dashboard.services import accounts

TRIPS = 3000
LIVE = 120
PASSWORD = "plans-password-1"
NURSE, DISPATCHER, COORDINATOR = "nurse@plans.test", "dispatch@plans.test", "coordinator@medport.test"
TABLE = "transport_requests"


def pages(trip):
    """``{user: [path]}``: the dashboard pages and partials, ``trip`` as the one request shown."""
    return {
        NURSE: ["/hospital/", "/hospital/requests/panel?tab=active", "/hospital/requests/panel?tab=completed",
                "/hospital/requests/panel?tab=cancelled", "/hospital/requests/panel?tab=cancelled&page=3",
                "/hospital/requests/panel?q=S", "/hospital/?sort=risk", "/hospital/requests/panel?sort=deadline",
                f"/hospital/requests/{trip}",
                f"/hospital/requests/{trip}/summary", f"/hospital/requests/{trip}/bids",
                f"/hospital/requests/{trip}/timeline"],
        DISPATCHER: ["/ems/", "/ems/board/panel?level=BLS&urgency=routine&within=8", "/ems/?sort=window",
                     "/ems/board/panel?sort=risk&page=2", "/ems/trips",
                     "/ems/trips/panel?tab=completed", f"/ems/requests/{trip}", "/ems/units", "/ems/history",
                     "/ems/routes"],
        COORDINATOR: ["/center/", "/center/board/panel?state=closed", "/center/board/panel?risk=y",
                      "/center/?state=open&sort=window", "/center/board/panel?sort=deadline&page=2",
                      f"/center/requests/{trip}", f"/center/requests/{trip}/panel", "/center/units"],
    }


def _scans(node, found):
    """Every (node type, relation) of a JSON plan."""
    found.append((node["Node Type"], node.get("Relation Name")))
    for child in node.get("Plans", ()):
        _scans(child, found)
    return found


def _region(app):
    """History, users of a generated hospital and agency; returns a live request's public id."""
    from dashboard.models.hospital import TransportRequest

    with app.app_context():
        scale.generate(TRIPS, live=LIVE)
        hospital_id = db.session.scalar(sa.select(Hospital.id).where(Hospital.region == "Scale").order_by(Hospital.id))
        agency_id = db.session.scalar(sa.select(Agency.id).where(
            Agency.service_area == "Scale", Agency.levels == "BLS,ALS,CCT").order_by(Agency.id))
        accounts.create_user(NURSE, "Plans Nurse", "hospital", PASSWORD, hospital_id=hospital_id)
        accounts.create_user(DISPATCHER, "Plans Dispatcher", "ems", PASSWORD, agency_id=agency_id)
        db.session.commit()
        trip = db.session.scalar(
            sa.select(TransportRequest.public_id).where(TransportRequest.hospital_id == hospital_id,
                                                        TransportRequest.status == "open")
            .order_by(TransportRequest.bid_count.desc(), TransportRequest.id))
        if trip is None:  # the hospital has no open request now: show its newest one
            trip = db.session.scalar(sa.select(TransportRequest.public_id).where(
                TransportRequest.hospital_id == hospital_id).order_by(TransportRequest.created_at.desc()))
    return trip


def _captured_reads(app, trip):
    """``[(user, path, engine, statement, parameters)]`` of the SELECTs that read the trips table."""
    reads = []
    request_thread = threading.get_ident()
    with app.app_context():
        engines = list(db.engines.values())
    for email, paths in pages(trip).items():
        client = app.test_client()
        password = PASSWORD if email != COORDINATOR else "medport-demo"
        assert client.post("/login", data={"email": email, "password": password}).status_code == 302
        for path in paths:
            def keep(conn, cursor, statement, parameters, context, executemany, path=path, email=email):
                if (threading.get_ident() == request_thread and statement.lstrip().upper().startswith("SELECT")
                        and TABLE in statement):
                    reads.append((email, path, conn.engine, statement, parameters))

            for engine in engines:
                event.listen(engine, "before_cursor_execute", keep)
            try:
                response = client.get(path)
            finally:
                for engine in engines:
                    event.remove(engine, "before_cursor_execute", keep)
            assert response.status_code == 200, (email, path, response.status_code)
    return reads


def test_dashboard_queries_use_an_index_on_the_trips_table(backend, request):
    if backend != "postgres":
        pytest.skip("query plans are checked on PostgreSQL")
    app = request.getfixturevalue("app")
    request.getfixturevalue("demo")
    trip = _region(app)
    reads = _captured_reads(app, trip)
    assert {path for _email, path, *_rest in reads} >= {"/hospital/", "/ems/", "/center/"}

    scanned, explained = [], set()
    with app.app_context():
        connections = {engine: engine.connect() for engine in db.engines.values()}
    try:
        for email, path, engine, statement, parameters in reads:
            if (engine, statement, repr(parameters)) in explained:
                continue  # the same read on another page
            explained.add((engine, statement, repr(parameters)))
            cursor = connections[engine].connection.dbapi_connection.cursor()
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            plan = cursor.fetchone()[0]
            if isinstance(plan, str):
                plan = json.loads(plan)
            if ("Seq Scan", TABLE) in _scans(plan[0]["Plan"], []):
                where = " ".join(statement.split()).partition(" FROM ")[2]
                scanned.append(f"{email} {path}: ... FROM {where[:500]}")
    finally:
        for conn in connections.values():
            conn.close()
    assert not scanned, "sequential scan of transport_requests:\n" + "\n".join(scanned)


def test_an_agencys_live_bids_are_read_by_index_on_sqlite(backend, request):
    """The EMS board's "bid on" marks read the agency's live bids.  SQLite cannot use the partial
    index of live bids for a status given as a parameter; without ``ix_transport_bids_agency_status``
    it read every bid the agency ever placed (PostgreSQL uses the partial index)."""
    if backend != "sqlite":
        pytest.skip("the plan checked here is SQLite's")
    app = request.getfixturevalue("app")
    with app.app_context(), db.engines["ems"].connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT trip_id FROM transport_bids WHERE agency_id = ? AND status = ?",
            (1, "live")))
    assert "ix_transport_bids_agency_status (agency_id=? AND status=?)" in plan, plan


@pytest.mark.parametrize(("column", "index"), [("hospital_id", "ix_transport_requests_hospital_created"),
                                               ("awarded_agency_id", "ix_transport_requests_agency_created")])
def test_analytics_read_a_period_of_one_organisation_by_index_on_sqlite(backend, request, column, index):
    """A hospital's or an agency's analytics over the days computed live: SQLite (no statistics)
    would otherwise read all the organisation's requests by its equality index."""
    if backend != "sqlite":
        pytest.skip("the plan checked here is SQLite's")
    app = request.getfixturevalue("app")
    with app.app_context(), db.engines["hospital"].connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN SELECT awarded_eta_minutes FROM transport_requests WHERE created_at >= ? "
            f"AND created_at < ? AND {column} = ? AND at_pickup_at IS NOT NULL", ("2026-12-01", "2026-12-02", 1)))
    assert f"{index} ({column}=? AND created_at>? AND created_at<?)" in plan, plan


def test_an_agencys_bids_on_one_request_are_read_by_index_on_sqlite(backend, request):
    """The EMS request page's bids of the agency, newest first: SQLite would take the agency's
    index for the order and read every bid the agency ever placed."""
    if backend != "sqlite":
        pytest.skip("the plan checked here is SQLite's")
    app = request.getfixturevalue("app")
    with app.app_context(), db.engines["ems"].connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM transport_bids WHERE trip_id = ? AND agency_id = ? "
            "AND status != ? ORDER BY created_at DESC", (1, 1, "withdrawn")))
    assert "ix_transport_bids_trip_agency_created (trip_id=? AND agency_id=?)" in plan, plan
