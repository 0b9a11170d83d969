"""Organisation administrators: a hospital or EMS user marked ``org_admin`` by the center runs their
own organisation's crew accounts (an agency's), alert defaults and webhooks, never another's; the
center administrator keeps all of it.

In the demo, Altoona Regional's charge nurse and Altoona EMS's dispatcher are their organisations'
administrators; every other hospital and EMS user is not.
"""
import re

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from dashboard.extensions import db
from dashboard.models.center import AlertDelivery, AlertSetting, AuditLog, User, WebhookEndpoint
from dashboard.models.hospital import TransportRequest
from dashboard.services import webhooks
from dashboard.services.deliveries.sender import Sender
from tests.helpers import Receiver, agency, hospital, place_bid, post_trip, signed_in

ALT_ADMIN = "nurse@altoona.medport.test"
MNV_NURSE = "nurse@mountnittany.medport.test"
AEMS_ADMIN = "dispatch@altoonaems.medport.test"
BCA_DISPATCH = "dispatch@blaircounty.medport.test"
ADMIN = "admin@medport.test"
NEW_PASSWORD = "a-crew-password-2027"


@pytest.fixture
def receiver(app):
    """A webhook receiver on loopback (plain http allowed there, as in the delivery tests)."""
    app.config.update(MEDPORT_WEBHOOK_ALLOW_LOOPBACK_HTTP=True, MEDPORT_WEBHOOK_TIMEOUT_SECONDS=1,
                      MEDPORT_BASE_URL="https://medport.test")
    server = Receiver()
    yield server
    server.close()


def user(email):
    return db.session.scalar(sa.select(User).where(User.email == email))


def public_id_of(app, email):
    with app.app_context():
        return user(email).public_id


def temporary_password(response):
    match = re.search(r"<code>([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})</code>", response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:500]
    return match.group(1)


def sign_in_with(app, email, password):
    client = app.test_client()
    return client, client.post("/login", data={"email": email, "password": password})


# --- the mark, set by the center --------------------------------------------------------------

def test_the_center_admin_marks_an_organisation_admin_audited_and_listed(app, demo):
    admin = signed_in(app, ADMIN)
    with app.app_context():
        bca = agency("BCA")
        bca_id, target = bca.id, user(BCA_DISPATCH).public_id
        coordinator = user("coordinator@medport.test").public_id
    form = {"email": BCA_DISPATCH, "display_name": "Dispatcher (BCA)", "role": "ems", "hospital": "",
            "agency": str(bca_id), "active": "y", "org_admin": "y"}
    assert admin.post(f"/center/users/{target}", data=form).status_code == 302
    with app.app_context():
        assert user(BCA_DISPATCH).org_admin is True
        entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "user.updated",
                                                            AuditLog.entity_id == target))
        assert entry.before == {"org_admin": False} and entry.after == {"org_admin": True}
    listing = admin.get("/center/users?q=blaircounty").get_data(as_text=True)
    assert listing.count("data-org-admin") == 1  # the dispatcher, not the crew member
    assert signed_in(app, BCA_DISPATCH).get("/ems/crew-accounts").status_code == 200
    # A center user cannot be an organisation's administrator.
    refused = admin.post(f"/center/users/{coordinator}", data={
        "email": "coordinator@medport.test", "display_name": "Casey Coordinator", "role": "coordinator",
        "hospital": "", "agency": "", "active": "y", "org_admin": "y"})
    assert refused.status_code == 400
    assert "Only hospital and EMS users can be" in refused.get_data(as_text=True)
    with app.app_context():
        assert user("coordinator@medport.test").org_admin is False
    # Unmarked, the pages refuse at once (the mark is read from the center on every request).
    form.pop("org_admin")
    assert admin.post(f"/center/users/{target}", data=form).status_code == 302
    assert signed_in(app, BCA_DISPATCH).get("/ems/crew-accounts").status_code == 403


def test_the_navigation_shows_the_organisation_pages_to_their_admins_alone(app, demo):
    agency_admin = signed_in(app, AEMS_ADMIN).get("/ems/").get_data(as_text=True)
    assert 'href="/ems/crew-accounts"' in agency_admin and 'href="/alerts/webhooks"' in agency_admin
    assert 'href="/alerts/defaults/mine"' in agency_admin
    hospital_admin = signed_in(app, ALT_ADMIN).get("/hospital/").get_data(as_text=True)
    assert 'href="/alerts/webhooks"' in hospital_admin and "/ems/crew-accounts" not in hospital_admin
    for email, home in ((BCA_DISPATCH, "/ems/"), (MNV_NURSE, "/hospital/")):
        page = signed_in(app, email).get(home).get_data(as_text=True)
        assert "/alerts/webhooks" not in page and "/alerts/defaults/mine" not in page
        assert "/ems/crew-accounts" not in page


# --- crew accounts ----------------------------------------------------------------------------

def test_an_agency_admin_runs_its_crew_accounts_and_the_crew_member_signs_in(app, demo):
    dispatcher = signed_in(app, AEMS_ADMIN)
    page = dispatcher.get("/ems/crew-accounts").get_data(as_text=True)
    assert "crew@altoonaems.medport.test" in page and "crew2@altoonaems.medport.test" in page
    assert "crew@blaircounty.medport.test" not in page  # another agency's crew

    made = dispatcher.post("/ems/crew-accounts", data={"email": "Medic.Three@AltoonaEMS.medport.test",
                                                        "display_name": "Pat Medic"})
    assert made.status_code == 201
    password = temporary_password(made)
    with app.app_context():
        crew = user("medic.three@altoonaems.medport.test")
        aems_id = agency("AEMS").id
        assert (crew.role, crew.agency_id, crew.hospital_id, crew.must_change_password) == \
            ("crew", aems_id, None, True)
        crew_id = crew.public_id
        created = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "user.created",
                                                              AuditLog.entity_id == crew_id))
        assert created.user_email == AEMS_ADMIN and password not in str(created.after)
        assert "password_hash" not in created.after
    duplicate = dispatcher.post("/ems/crew-accounts", data={"email": "medic.three@altoonaems.medport.test",
                                                             "display_name": "Again"})
    assert duplicate.status_code == 400 and "Another account already uses this email" in \
        duplicate.get_data(as_text=True)
    bad = dispatcher.post("/ems/crew-accounts", data={"email": "not an email", "display_name": ""})
    assert bad.status_code == 400 and "Enter a valid email address." in bad.get_data(as_text=True)

    # The crew member signs in, chooses a password, and reaches the phone page.
    phone, signed = sign_in_with(app, "medic.three@altoonaems.medport.test", password)
    assert signed.status_code == 302 and signed.headers["Location"].endswith("/account/password")
    changed = phone.post("/account/password", data={"current_password": password, "new_password": NEW_PASSWORD,
                                                    "confirm": NEW_PASSWORD})
    assert changed.status_code in (302, 303)
    assert phone.get("/crew/").status_code == 200

    # Deactivated: the session ends at once and signing in is refused; reactivated: back in.
    assert dispatcher.post(f"/ems/crew-accounts/{crew_id}/active", data={"active": "0"}).status_code == 303
    gone = phone.get("/crew/")
    assert gone.status_code == 302 and gone.headers["Location"].startswith("/login")
    assert sign_in_with(app, "medic.three@altoonaems.medport.test", NEW_PASSWORD)[1].status_code != 302
    assert "Deactivated" in dispatcher.get("/ems/crew-accounts").get_data(as_text=True)
    assert dispatcher.post(f"/ems/crew-accounts/{crew_id}/active", data={"active": "1"}).status_code == 303
    phone, signed = sign_in_with(app, "medic.three@altoonaems.medport.test", NEW_PASSWORD)
    assert signed.status_code == 302 and phone.get("/crew/").status_code == 200
    assert dispatcher.post(f"/ems/crew-accounts/{crew_id}/active", data={"active": "maybe"}).status_code == 400

    # A password reset: a new temporary password, the old one and the old session end.
    reset = dispatcher.post(f"/ems/crew-accounts/{crew_id}/reset-password")
    assert reset.status_code == 200
    temporary = temporary_password(reset)
    assert phone.get("/crew/").status_code == 302
    assert sign_in_with(app, "medic.three@altoonaems.medport.test", NEW_PASSWORD)[1].status_code != 302
    assert sign_in_with(app, "medic.three@altoonaems.medport.test", temporary)[1].status_code == 302
    with app.app_context():
        actions = list(db.session.scalars(sa.select(AuditLog.action).where(AuditLog.entity_id == crew_id)
                                          .order_by(AuditLog.id)))
    assert [a for a in actions if a.startswith("user.")] == [
        "user.created", "user.password_changed", "user.deactivated", "user.reactivated", "user.password_reset"]


def test_an_agency_admin_cannot_touch_another_agencys_users_or_its_non_crew_users(app, demo):
    dispatcher = signed_in(app, AEMS_ADMIN)
    other_crew = public_id_of(app, "crew@blaircounty.medport.test")
    other_dispatcher = public_id_of(app, BCA_DISPATCH)
    nurse = public_id_of(app, ALT_ADMIN)
    itself = public_id_of(app, AEMS_ADMIN)
    for target in (other_crew, other_dispatcher, nurse, "no-such-user"):
        assert dispatcher.post(f"/ems/crew-accounts/{target}/active", data={"active": "0"}).status_code == 404
        assert dispatcher.post(f"/ems/crew-accounts/{target}/reset-password").status_code == 404
    # Its own agency's dispatcher account (itself) is the center's to run, not a crew account.
    assert dispatcher.post(f"/ems/crew-accounts/{itself}/active", data={"active": "0"}).status_code == 403
    assert dispatcher.post(f"/ems/crew-accounts/{itself}/reset-password").status_code == 403
    with app.app_context():
        assert user("crew@blaircounty.medport.test").active and user(BCA_DISPATCH).active
        assert not user("crew@blaircounty.medport.test").must_change_password
    # Not an organisation administrator, or not an EMS user: 403.
    assert signed_in(app, BCA_DISPATCH).get("/ems/crew-accounts").status_code == 403
    assert signed_in(app, BCA_DISPATCH).post(f"/ems/crew-accounts/{other_crew}/active",
                                             data={"active": "0"}).status_code == 403
    assert signed_in(app, ALT_ADMIN).get("/ems/crew-accounts").status_code == 403
    assert signed_in(app, "crew@altoonaems.medport.test").get("/ems/crew-accounts").status_code == 403
    assert signed_in(app, ADMIN).get("/ems/crew-accounts").status_code == 403  # the center's page is /center/users


# --- alert defaults ---------------------------------------------------------------------------

def test_an_organisation_admin_sets_its_own_alert_defaults_only(app, demo):
    nurse = signed_in(app, ALT_ADMIN)
    with app.app_context():
        alt, mnv, aems = hospital("ALT").id, hospital("MNV").id, agency("AEMS").id
    assert nurse.get("/alerts/defaults/mine").status_code == 200
    assert nurse.get(f"/alerts/defaults/hospital/{alt}").status_code == 200
    for path in (f"/alerts/defaults/hospital/{mnv}", f"/alerts/defaults/agency/{aems}", "/alerts/defaults/center/0"):
        assert nurse.get(path).status_code == 404, path
        assert nurse.post(path, data={"enabled": ["hospital.first_bid"]}).status_code == 404, path
    assert nurse.get("/alerts/defaults").status_code == 403  # the list of every organisation's
    saved = nurse.post("/alerts/defaults/mine", data={"enabled": ["hospital.first_bid"]})
    assert saved.status_code == 302
    with app.app_context():
        rows = {r.kind: r.enabled for r in db.session.scalars(
            sa.select(AlertSetting).where(AlertSetting.scope == f"hospital:{alt}"))}
        assert rows["hospital.first_bid"] is True and rows["hospital.unfilled"] is False
        assert not db.session.scalar(sa.select(AlertSetting.id).where(AlertSetting.scope == f"hospital:{mnv}"))
    assert nurse.post("/alerts/defaults/mine", data={"enabled": ["ems.new_request"]}).status_code == 400
    assert signed_in(app, MNV_NURSE).get("/alerts/defaults/mine").status_code == 403
    assert signed_in(app, AEMS_ADMIN).get(f"/alerts/defaults/agency/{aems}").status_code == 200
    admin = signed_in(app, ADMIN)
    assert admin.get(f"/alerts/defaults/hospital/{mnv}").status_code == 200
    assert admin.get("/alerts/defaults/mine").status_code == 403


# --- webhooks ---------------------------------------------------------------------------------

def _register_page(client, organisation, url, kinds, token):
    return client.post("/alerts/webhooks", data={"organisation": organisation, "url": url, "kinds": kinds,
                                                 "submission_id": token})


def test_an_organisation_admin_registers_lists_and_removes_its_own_webhooks_only(app, demo, receiver):
    with app.app_context():
        alt, mnv = f"hospital:{hospital('ALT').id}", f"hospital:{hospital('MNV').id}"
        admin_user = user(ADMIN)
        theirs = webhooks.register(mnv, "https://mnv.example.org/hook", ["hospital.first_bid"], admin_user)
        db.session.commit()
        theirs_id = theirs.public_id
    nurse = signed_in(app, ALT_ADMIN)
    page = nurse.get("/alerts/webhooks").get_data(as_text=True)
    assert "mnv.example.org" not in page and "Mount Nittany" not in page
    forged = _register_page(nurse, mnv, "https://alt.example.org/hook", ["hospital.first_bid"], "b" * 32)
    assert forged.status_code == 400
    made = _register_page(nurse, alt, "https://alt.example.org/hook", ["hospital.first_bid"], "c" * 32)
    body = made.get_data(as_text=True)
    assert made.status_code == 200 and "whsec_" in body and "alt.example.org" in body
    assert "mnv.example.org" not in body
    assert "whsec_" not in nurse.get("/alerts/webhooks").get_data(as_text=True)  # the secret is shown once
    with app.app_context():
        ours = db.session.scalar(sa.select(WebhookEndpoint).where(WebhookEndpoint.scope == alt))
        ours_id = ours.public_id
        assert ours.created_by_user_id == user(ALT_ADMIN).id
    assert nurse.post(f"/alerts/webhooks/{theirs_id}/remove").status_code == 404
    assert signed_in(app, AEMS_ADMIN).post(f"/alerts/webhooks/{ours_id}/remove").status_code == 404
    assert signed_in(app, MNV_NURSE).get("/alerts/webhooks").status_code == 403
    admin_page = signed_in(app, ADMIN).get("/alerts/webhooks").get_data(as_text=True)
    assert "mnv.example.org" in admin_page and "alt.example.org" in admin_page
    assert nurse.post(f"/alerts/webhooks/{ours_id}/remove").status_code == 302
    with app.app_context():
        assert db.session.scalar(sa.select(WebhookEndpoint.active).where(WebhookEndpoint.public_id == theirs_id))
        assert not db.session.scalar(sa.select(WebhookEndpoint.active).where(WebhookEndpoint.public_id == ours_id))
        assert db.session.scalar(sa.select(AuditLog.user_email).where(
            AuditLog.action == "webhook.removed", AuditLog.entity_id == ours_id)) == ALT_ADMIN


def test_a_hospital_admins_webhook_receives_only_its_hospitals_events(app, demo, deliver, receiver):
    app.config["MEDPORT_DELIVERY_MAX_ATTEMPTS"] = 1
    other = Receiver()
    try:
        with app.app_context():
            alt, mnv = f"hospital:{hospital('ALT').id}", f"hospital:{hospital('MNV').id}"
            webhooks.register(mnv, other.url, ["hospital.first_bid"], user(ADMIN), allow_loopback_http=True)
            db.session.commit()
        nurse = signed_in(app, ALT_ADMIN)
        made = _register_page(nurse, alt, receiver.url, ["hospital.first_bid"], "d" * 32)
        assert made.status_code == 200
        secret = re.search(r"(whsec_[A-Za-z0-9+/=]+)", made.get_data(as_text=True)).group(1)
        with app.app_context():
            ours = post_trip("ALT", level="BLS")
            theirs = post_trip("MNV", level="BLS")
            place_bid(ours, "AEMS", 20)
            place_bid(theirs, "CLL", 25)
            ours_ref = db.session.get(TransportRequest, ours).reference
            theirs_ref = db.session.get(TransportRequest, theirs).reference
            patient_ref = db.session.get(TransportRequest, ours).patient_ref
        deliver()
        receiver.answers = [500]  # Altoona's is parked at once (one attempt), Mount Nittany's sent
        assert Sender(app).run_once() == {"parked": 1, "sent": 1}
        (headers, body), = receiver.requests
        payload = Webhook(secret).verify(body, headers)
        assert payload["type"] == "hospital.first_bid" and payload["data"]["reference"] == ours_ref
        assert theirs_ref not in body and patient_ref not in body
        assert len(other.requests) == 1 and ours_ref not in other.requests[0][1]
        with app.app_context():
            ours_delivery, theirs_delivery = (
                db.session.scalar(sa.select(AlertDelivery.public_id).where(AlertDelivery.status == status))
                for status in ("parked", "sent"))

        # The deliveries page: Altoona's webhook posts only, with the dead letter and its replay.
        page = nurse.get("/alerts/deliveries").get_data(as_text=True)
        assert f'data-delivery="{ours_delivery}" data-status="parked"' in page and "Replay" in page
        assert theirs_delivery not in page and other.url not in page
        assert "email pending" not in page
        assert nurse.get("/alerts/deliveries?channel=email").status_code == 400
        parked = nurse.get("/alerts/deliveries?status=parked").get_data(as_text=True)
        assert ours_delivery in parked and "webhook parked: 1" in parked
        assert nurse.post(f"/alerts/deliveries/{theirs_delivery}/replay").status_code == 404
        assert signed_in(app, AEMS_ADMIN).post(f"/alerts/deliveries/{ours_delivery}/replay").status_code == 404
        assert signed_in(app, MNV_NURSE).get("/alerts/deliveries").status_code == 403
        assert nurse.post(f"/alerts/deliveries/{ours_delivery}/replay").status_code == 302
        assert Sender(app).run_once() == {"sent": 1}
        assert len(receiver.requests) == 2 and len(other.requests) == 1
        # The center still sees every delivery.
        center = signed_in(app, "coordinator@medport.test").get("/alerts/deliveries").get_data(as_text=True)
        assert ours_delivery in center and theirs_delivery in center
    finally:
        other.close()
