"""The hospital's preferred agencies as a service: the rank logic, and each change recorded
(``preference.*`` outbox events, audited in the center like the silo's other changes)."""
import pytest
import sqlalchemy as sa

from dashboard.events.outbox import SYSTEM
from dashboard.extensions import db
from dashboard.models.center import Agency, AuditLog, Hospital, LiveSignal
from dashboard.models.hospital import HospitalAgencyPreference
from dashboard.models.outbox import HospitalOutboxEvent
from dashboard.services import preferences

ALT_NURSE = "nurse@altoona.medport.test"


@pytest.fixture
def nurse(client, auth, demo):
    """The Altoona charge nurse, signed in."""
    assert auth.login(ALT_NURSE).status_code == 302
    return client


def _ids(app):
    """(Altoona's hospital id, {agency short code: id})."""
    with app.app_context():
        alt = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "ALT"))
        agencies = dict(db.session.execute(sa.select(Agency.short_code, Agency.id)).all())
        return alt, agencies


def _entry(app, hospital_id, agency_id):
    with app.app_context():
        return db.session.scalar(sa.select(HospitalAgencyPreference.id).where(
            HospitalAgencyPreference.hospital_id == hospital_id, HospitalAgencyPreference.agency_id == agency_id))


def _audit(app, action):
    with app.app_context():
        rows = list(db.session.scalars(sa.select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def _order(app, hospital_id):
    with app.app_context():
        return [entry.agency_id for entry in preferences.rows(hospital_id)]


def test_each_change_is_audited_with_who_and_the_order_after_it(app, nurse, deliver):
    alt, agency = _ids(app)
    with app.app_context():
        cll_public = db.session.scalar(sa.select(Agency.public_id).where(Agency.id == agency["CLL"]))
    assert nurse.post("/hospital/preferences", data={"agency": cll_public, "notes": "Nights"}).status_code == 302
    cll = _entry(app, alt, agency["CLL"])
    assert nurse.post(f"/hospital/preferences/{cll}/move", data={"direction": "up"}).status_code == 302
    assert nurse.post(f"/hospital/preferences/{cll}/notes", data={"notes": "Nights and weekends"}).status_code == 302
    aems = _entry(app, alt, agency["AEMS"])
    assert nurse.post(f"/hospital/preferences/{aems}/remove").status_code == 302
    assert _order(app, alt) == [agency["BCA"], agency["CLL"], agency["ACCT"]]
    assert deliver() >= 4

    (added,) = _audit(app, "preference.added")
    assert (added.silo, added.entity_type, added.entity_id) == ("hospital", "preference", str(cll))
    assert added.user_email == ALT_NURSE and added.ip
    assert added.after["hospital_id"] == alt and added.after["agency_id"] == agency["CLL"]
    assert added.after["agency_name"] == "Centre LifeLink"
    assert added.after["rank"] == 4 and added.after["notes"] == "Nights"
    assert added.after["order"] == [agency["AEMS"], agency["BCA"], agency["ACCT"], agency["CLL"]]
    (moved,) = _audit(app, "preference.moved")
    assert moved.after["direction"] == "up" and moved.after["rank"] == 3
    assert moved.after["order"] == [agency["AEMS"], agency["BCA"], agency["CLL"], agency["ACCT"]]
    (changed,) = _audit(app, "preference.changed")
    assert changed.after["notes"] == "Nights and weekends" and changed.after["notes_before"] == "Nights"
    (removed,) = _audit(app, "preference.removed")
    assert removed.after["agency_id"] == agency["AEMS"] and removed.user_email == ALT_NURSE
    assert removed.after["order"] == [agency["BCA"], agency["CLL"], agency["ACCT"]]
    # The hospital's pages hear of it; no agency does (the list is the hospital's own).
    with app.app_context():
        signals = list(db.session.scalars(sa.select(LiveSignal).where(LiveSignal.name == "preference-updated")))
        assert len(signals) == 4
        assert all(s.hospital_id == alt and s.agency_ids == "" for s in signals)


def test_a_change_that_changes_nothing_records_nothing(app, nurse, deliver):
    alt, agency = _ids(app)
    first = _entry(app, alt, agency["AEMS"])
    with app.app_context():
        last = preferences.rows(alt)[-1].id
        notes = db.session.get(HospitalAgencyPreference, first).notes
        before = db.session.scalar(sa.select(sa.func.count(HospitalOutboxEvent.id)))
    assert nurse.post(f"/hospital/preferences/{first}/move", data={"direction": "up"}).status_code == 302
    assert nurse.post(f"/hospital/preferences/{last}/move", data={"direction": "down"}).status_code == 302
    response = nurse.post(f"/hospital/preferences/{first}/notes", data={"notes": notes})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(HospitalOutboxEvent.id))) == before
    deliver()
    assert _audit(app, "preference.moved") == [] and _audit(app, "preference.changed") == []


def test_the_service_keeps_ranks_whole_and_refuses_an_agency_listed_twice(app, demo):
    alt, agency = _ids(app)
    with app.app_context():
        listed = db.session.get(Agency, agency["BCA"])
        with pytest.raises(preferences.PreferenceRefused) as refused:
            preferences.add(alt, listed, "", SYSTEM)
        assert refused.value.status == 409 and refused.value.message == f"{listed.name} is already on your list."
        db.session.rollback()
        entry = preferences.get_for_hospital(_entry(app, alt, agency["AEMS"]), alt)
        with pytest.raises(preferences.PreferenceRefused) as refused:
            preferences.move(entry, "sideways", SYSTEM)
        assert refused.value.status == 400
        assert preferences.move(entry, "down", SYSTEM) is True
        db.session.commit()
        assert [e.rank for e in preferences.rows(alt)] == [1, 2, 3]
        assert preferences.rows(alt)[1].agency_id == agency["AEMS"]
        preferences.remove(preferences.rows(alt)[0], SYSTEM)
        db.session.commit()
        assert [e.rank for e in preferences.rows(alt)] == [1, 2]
        # Not found: absent, not a row id, or another hospital's.
        johnstown = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "JMH"))
        theirs = preferences.rows(johnstown)[0].id
        assert preferences.get_for_hospital(theirs, alt) is None
        assert preferences.get_for_hospital("abc", alt) is None
        assert preferences.get_for_hospital(999999, alt) is None
        # The system's changes are recorded without a user.
        events = list(db.session.scalars(sa.select(HospitalOutboxEvent).where(
            HospitalOutboxEvent.type.like("preference.%")).order_by(HospitalOutboxEvent.id)))
        assert [e.type for e in events] == ["preference.moved", "preference.removed"]
        assert all(e.actor_user_id is None for e in events)
