"""``/healthz`` and the center's health page: each silo's state and its outbox backlog."""
import pytest

from dashboard.extensions import db
from dashboard.models.outbox import OUTBOX_BY_SILO
from tests.helpers import COORDINATOR, post_trip, row_of, signed_in, silo_stopped


def backlog(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    return {silo: entry["outbox"] for silo, entry in response.get_json()["silos"].items()}


def park(silo, entity_id):
    db.session.add(OUTBOX_BY_SILO[silo](type="trip.changed", entity_type="trip", entity_id=entity_id,
                                        payload={}, status="parked", attempts=15, last_error="OperationalError"))
    db.session.commit()


def test_healthz_counts_each_silos_pending_and_parked_events(app, demo, deliver, client):
    deliver()
    before = backlog(client)
    assert set(before) == {"center", "hospital", "ems"}
    assert all(set(counts) == {"pending", "parked"} for counts in before.values())
    with app.app_context():
        post_trip("ALT")  # one pending hospital event
        park("ems", "t-parked")
    after = backlog(client)
    assert after["hospital"] == dict(before["hospital"], pending=before["hospital"]["pending"] + 1)
    assert after["ems"] == dict(before["ems"], parked=before["ems"]["parked"] + 1)
    assert after["center"] == before["center"]
    deliver()
    assert backlog(client)["hospital"]["pending"] == before["hospital"]["pending"]


@pytest.mark.parametrize("silo", ["center", "hospital", "ems"])
def test_healthz_answers_with_a_silo_stopped(app, demo, backend, silo):
    """The silo's database really stopped (PostgreSQL): 503 JSON naming it, its backlog unknown."""
    if backend != "postgres":
        pytest.skip("stopping one silo's database is done on PostgreSQL")
    coordinator = signed_in(app, COORDINATOR) if silo != "center" else None
    with silo_stopped(app, silo):
        response = app.test_client().get("/healthz")
        assert response.status_code == 503 and response.mimetype == "application/json"
        body = response.get_json()
        assert body["status"] == "degraded" and body["down"] == [silo]
        assert body["silos"][silo] == {"status": "down", "latency_ms": None, "outbox": None}
        for other in set(body["silos"]) - {silo}:
            assert body["silos"][other]["status"] == "up"
            assert set(body["silos"][other]["outbox"]) == {"pending", "parked"}
        if coordinator is not None:
            page = coordinator.get("/center/health")
            assert page.status_code == 200
            row = row_of(page.get_data(as_text=True), {"hospital": "Hospital", "ems": "EMS"}[silo] + "</th>")
            assert "Down" in row and row.count("unknown") == 2
    assert app.test_client().get("/healthz").status_code == 200
