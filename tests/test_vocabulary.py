"""The one vocabulary (``dashboard.models.vocabulary``) and the one LIKE helper
(``dashboard.services.text_search``): every status the databases accept has the words the
screens show, the "unfilled" rule in Python equals its SQL twin, and a search takes ``%``,
``_`` and ``\\`` literally, on SQLite and PostgreSQL alike."""
import itertools
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.models import vocabulary
from dashboard.models.base import utcnow
from dashboard.models.ems import TransportBid, Unit
from dashboard.models.hospital import HospitalFacility, TransportRequest
from dashboard.services import hospital_reads, route_steps, trips
from dashboard.services.text_search import escape_like, like_contains, like_prefix


def _allowed(model):
    """The statuses a table's ``status_known`` check constraint accepts."""
    for constraint in model.__table__.constraints:
        if isinstance(constraint, sa.CheckConstraint) and str(constraint.name).endswith("status_known"):
            return set(re.findall(r"'([a-z_]+)'", str(constraint.sqltext)))
    raise AssertionError(f"{model.__name__} has no status_known constraint")


@pytest.mark.parametrize(("model", "labels"), [
    (TransportRequest, vocabulary.TRIP_STATUS_LABELS),
    (Unit, vocabulary.UNIT_STATUSES),
    (TransportBid, vocabulary.BID_OUTCOMES),
])
def test_every_status_the_database_accepts_has_a_label(model, labels):
    assert set(labels) == _allowed(model)
    assert all(isinstance(text, str) and text.strip() for text in labels.values())


def test_the_status_lists_follow_their_labels():
    assert vocabulary.TRIP_STATUSES == tuple(vocabulary.TRIP_STATUS_LABELS)
    assert vocabulary.BID_STATUSES == tuple(vocabulary.BID_OUTCOMES)
    assert set(vocabulary.ACTIVE_STATUSES) < set(vocabulary.TRIP_STATUSES)
    assert set(vocabulary.IN_PROGRESS_ROUTE_STATUSES) < set(vocabulary.ROUTE_STATUS_LABELS)


def test_every_stop_status_and_crew_step_has_its_words():
    assert set(route_steps.ROUTE_ORDER) <= set(vocabulary.ROUTE_STATUS_LABELS)
    assert tuple(vocabulary.CREW_STEP_LABELS) == tuple(trips.CREW_STEPS)


def test_levels_of_care_are_ranked_and_labelled():
    assert vocabulary.LEVELS == ("BLS", "ALS", "CCT")
    assert [vocabulary.LEVEL_RANK[level] for level in vocabulary.LEVELS] == [0, 1, 2]
    assert set(vocabulary.LEVEL_LABELS) == set(vocabulary.LEVELS)
    assert vocabulary.servable_levels(["ALS"]) == ["BLS", "ALS"]
    assert vocabulary.servable_levels([]) == []


def test_the_screens_get_the_labels_from_the_vocabulary(app):
    assert app.jinja_env.globals["STATUS_LABELS"] is vocabulary.TRIP_STATUS_LABELS
    assert app.jinja_env.globals["DISPATCH_STATES"] is vocabulary.DISPATCH_STATES
    assert app.jinja_env.globals["UNIT_STATUSES"] is vocabulary.UNIT_STATUSES


def test_an_unknown_dispatch_state_is_refused():
    with pytest.raises(ValueError, match="unknown dispatch states"):
        vocabulary.dispatch_condition(TransportRequest, ("bidding", "late"))


def _facility(name):
    facility = HospitalFacility(hospital_id=1, name=name)
    db.session.add(facility)
    db.session.flush()
    return facility


def _trips_in_every_state(now):
    """Requests covering every status and, for ``open``, every combination the rule reads:
    will-call (released or not), opening (none, passed, ahead), deadline (passed, ahead), bids."""
    facility = _facility("Vocabulary General")
    base = dict(
        hospital_id=1, origin_facility_id=facility.id, pickup_location="4 West",
        destination_facility_id=facility.id, level_of_care="BLS", mobility="stretcher", urgency="routine",
        window_start=now + timedelta(hours=6), window_end=now + timedelta(hours=7),
        patient_ref="P-0", age_group="adult", weight_kg=80, created_by_user_id=1,
    )
    hour = timedelta(hours=1)
    rows = []
    grid = itertools.product((False, True), (None, now - hour), (None, now - hour, now + hour),
                             (now - hour, now + hour), (0, 2))
    for will_call, released, opens, deadline, bids in grid:
        rows.append(dict(status="open", will_call=will_call, released_at=released, bidding_opens_at=opens,
                         bid_deadline=deadline, bid_count=bids))
    for status in vocabulary.TRIP_STATUSES[1:]:
        rows.append(dict(status=status, bid_deadline=now - hour, bid_count=1))
    made = []
    for number, row in enumerate(rows):
        trip = TransportRequest(reference=f"VOC-{number:03d}", **base, **row)
        db.session.add(trip)
        made.append(trip)
    db.session.flush()
    return made


@pytest.mark.parametrize("state", list(vocabulary.DISPATCH_STATES))
def test_the_dispatch_rule_equals_its_sql_twin(app, state):
    with app.app_context():
        now = utcnow().replace(microsecond=0)
        made = _trips_in_every_state(now)
        expected = {t.id for t in made if vocabulary.trip_dispatch_state(t, now) == state}
        found = set(db.session.scalars(sa.select(TransportRequest.id).where(
            vocabulary.dispatch_condition(TransportRequest, state, now))))
        assert expected, f"no request is {state}: the set of requests misses a case"
        assert found == expected
        # Built once with the time as a parameter, as a statement kept between requests is.
        kept = sa.select(TransportRequest.id).where(
            vocabulary.dispatch_condition(TransportRequest, state, sa.bindparam("now")))
        assert set(db.session.scalars(kept, {"now": now})) == expected
        later = {t.id for t in made if vocabulary.trip_dispatch_state(t, now + timedelta(hours=2)) == state}
        assert set(db.session.scalars(kept, {"now": now + timedelta(hours=2)})) == later
        db.session.rollback()


def test_every_open_request_is_in_exactly_one_dispatch_state(app):
    with app.app_context():
        now = utcnow().replace(microsecond=0)
        made = _trips_in_every_state(now)
        everyone = set(db.session.scalars(sa.select(TransportRequest.id).where(
            vocabulary.dispatch_condition(TransportRequest, vocabulary.DISPATCH_STATES, now))))
        assert everyone == {t.id for t in made if t.status == "open"}
        opened = set(db.session.scalars(sa.select(TransportRequest.id).where(
            vocabulary.dispatch_condition(TransportRequest, vocabulary.BIDDING_OPENED, now))))
        assert opened == {t.id for t in made
                          if vocabulary.trip_dispatch_state(t, now) in ("bidding", "awaiting_award", "unfilled")}
        db.session.rollback()


def test_escape_like_escapes_wildcards_and_the_escape_character():
    assert escape_like("50%_a\\b") == "50\\%\\_a\\\\b"


def test_a_search_takes_wildcards_literally(app):
    names = ["50% wing", "500 wing", "a_b ward", "axb ward", "back\\slash", "backslash", "Upper CASE"]
    with app.app_context():
        ids = {name: _facility(name).id for name in names}

        def contains(text):
            rows = db.session.scalars(sa.select(HospitalFacility.name).where(
                HospitalFacility.id.in_(ids.values()), like_contains(HospitalFacility.name, text)))
            return set(rows)

        def starts(text):
            rows = db.session.scalars(sa.select(HospitalFacility.name).where(
                HospitalFacility.id.in_(ids.values()), like_prefix(HospitalFacility.name, text)))
            return set(rows)

        assert contains("0%") == {"50% wing"}
        assert contains("a_b") == {"a_b ward"}
        assert contains("k\\s") == {"back\\slash"}
        assert contains(" upper case ") == {"Upper CASE"}
        assert contains("%") == {"50% wing"}
        assert starts("5") == {"50% wing", "500 wing"}
        assert starts("50%") == {"50% wing"}
        assert starts("_") == set()
        db.session.rollback()


def test_the_hospital_search_takes_wildcards_literally(app):
    with app.app_context():
        now = utcnow().replace(microsecond=0)
        made = _trips_in_every_state(now)
        made[0].reference, made[1].reference = "ALT-10%", "ALT-100"
        made[2].patient_ref = "P_7"
        db.session.flush()

        def found(q):
            return set(db.session.scalars(sa.select(TransportRequest.reference).where(
                hospital_reads._search_filter(q))))

        assert found("10%") == {"ALT-10%"}
        assert found("alt-10") == {"ALT-10%", "ALT-100"}
        assert found("p_7") == {made[2].reference}
        db.session.rollback()
