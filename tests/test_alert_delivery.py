"""Alerts by email (a real SMTP server, aiosmtpd, on a loopback port) and by webhook (a real HTTP
receiver on loopback): recipients, content, coalescing, digest, retries, outages, dead letters."""
import json
import threading
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.serving import free_port
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import AlertDelivery, User, WebhookEndpoint
from dashboard.models.hospital import TransportRequest
from dashboard.services import configuration, webhooks
from dashboard.services.alerts import kinds as alert_kinds
from dashboard.services.alerts import settings as alert_settings
from dashboard.services.deliveries import mail as delivery_mail
from dashboard.services.deliveries import records as delivery_records
from dashboard.services.deliveries.mail import smtp_settings
from dashboard.services.deliveries.sender import Sender
from tests.helpers import Receiver, agency, post_trip, signed_in

AEMS = "dispatch@altoonaems.medport.test"
BCA = "dispatch@blaircounty.medport.test"


class Inbox:
    """What the SMTP server received: ``[(recipients, message, login)]``."""

    def __init__(self):
        self.messages = []
        self.logins = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=default_policy)
        with self.arrived:
            self.messages.append((list(envelope.rcpt_tos), message, session.login_data))
            self.arrived.notify_all()
        return "250 OK"

    def to(self, address):
        return [m for rcpt, m, _login in self.messages if address in rcpt]


class SmtpServer:
    """aiosmtpd on a loopback port that can be stopped and started again on the same port."""

    def __init__(self, authenticate=False):
        self.port = free_port()
        self.inbox = Inbox()
        self.authenticate = authenticate
        self.controller = None

    def _auth(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"medport" and auth_data.password == b"s3cret"
        if ok:
            self.inbox.logins.append(auth_data.login)
        return AuthResult(success=ok)

    def start(self):
        options = {"authenticator": self._auth, "auth_require_tls": False} if self.authenticate else {}
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(app):
    server = SmtpServer()
    server.start()
    app.config.update(MEDPORT_SMTP_URL=f"smtp://127.0.0.1:{server.port}", MEDPORT_SMTP_TIMEOUT_SECONDS=5,
                      MEDPORT_MAIL_FROM="MedPort <alerts@medport.test>", MEDPORT_BASE_URL="https://medport.test")
    yield server
    server.stop()


def wants_email(email, kinds, digest=False):
    user = db.session.scalar(sa.select(User).where(User.email == email))
    group = alert_kinds.group_of(user.role)
    enabled = [k for k, _label in alert_kinds.KINDS[group]]
    alert_settings.save_settings(alert_settings.user_scope(user.id), group, enabled, email_kinds=kinds,
                                 digest=digest, user_id=user.id)
    db.session.commit()


def trip_facts(trip_id):
    trip = db.session.get(TransportRequest, trip_id)
    return trip.reference, trip.public_id, trip.patient_ref


# --- email --------------------------------------------------------------------------------------


def test_emails_go_to_those_who_chose_them_coalesced_per_minute(app, demo, deliver, smtp):
    with app.app_context():
        wants_email(AEMS, ["ems.new_request"])
        first = [post_trip("ALT", level="BLS") for _ in range(3)]
        trip = db.session.get(TransportRequest, first[0])
        trip.notes = "Confidential clinical note XYZZY"
        db.session.commit()
        facts = [trip_facts(t) for t in first]
    deliver()
    sender = Sender(app)
    start = utcnow()
    assert sender.run_once(start) == {"sent": 1}
    (message,) = smtp.inbox.to(AEMS)
    assert [rcpt for rcpt, _m, _l in smtp.inbox.messages] == [[AEMS]]  # nobody else chose email
    text = message.get_content()
    assert message["Subject"] == "MedPort: 3 alerts" and message["From"] == "MedPort <alerts@medport.test>"
    for reference, public_id, patient_ref in facts:
        assert reference in text and f"https://medport.test/ems/requests/{public_id}" in text
        assert patient_ref not in text and patient_ref not in message["Subject"]
    assert "Level of care: BLS. Urgency: Routine. Pickup window: " in text
    assert "XYZZY" not in text and "4 West" not in text  # neither notes nor the pickup room

    with app.app_context():
        later = post_trip("ALT", level="BLS")
    deliver()
    assert sender.run_once(start + timedelta(seconds=20)) == {}  # within the minute: it waits
    assert sender.run_once(start + timedelta(seconds=61)) == {"sent": 1}
    second = smtp.inbox.to(AEMS)[1]
    with app.app_context():
        reference = trip_facts(later)[0]
    assert second["Subject"].startswith("MedPort: New BLS, routine request") and reference in second["Subject"]
    with app.app_context():
        rows = db.session.scalars(sa.select(AlertDelivery).where(AlertDelivery.channel == "email")).all()
        assert [(r.status, r.items, r.target) for r in rows] == [("sent", 3, AEMS), ("sent", 1, AEMS)]


def test_with_the_smtp_server_down_emails_wait_and_arrive_once_it_is_back(app, demo, deliver, smtp):
    app.config["MEDPORT_DELIVERY_MAX_ATTEMPTS"] = 2
    with app.app_context():
        wants_email(AEMS, ["ems.new_request"])
        post_trip("ALT", level="BLS")
    deliver()
    smtp.stop()
    sender = Sender(app)
    start = utcnow()
    for minute in range(5):  # more tries than would park a failing delivery: an outage never does
        sender.run_once(start + timedelta(minutes=minute))
    with app.app_context():
        (row,) = db.session.scalars(sa.select(AlertDelivery)).all()
        assert row.status == "retrying" and row.attempts == 5 and "cannot reach the SMTP server" in row.last_error
    assert smtp.inbox.messages == []
    smtp.start()
    assert sender.run_once(start + timedelta(minutes=6)) == {"sent": 1}
    assert sender.run_once(start + timedelta(minutes=8)) == {}
    assert len(smtp.inbox.to(AEMS)) == 1


def test_a_digest_gathers_an_hour_of_alerts(app, demo, deliver, smtp):
    with app.app_context():
        wants_email(AEMS, ["ems.new_request"], digest=True)
        post_trip("ALT", level="BLS")
        post_trip("ALT", level="ALS")
    deliver()
    sender = Sender(app)
    start = utcnow()
    assert sender.run_once(start + timedelta(minutes=5)) == {}
    assert sender.run_once(start + timedelta(minutes=61)) == {"sent": 1}
    (message,) = smtp.inbox.to(AEMS)
    assert message["Subject"] == "MedPort digest: 2 alerts"


def test_the_escalation_ladder_emails_the_admin_whatever_their_settings(app, demo, deliver, smtp):
    with app.app_context():
        configuration.set_value("escalation_ladder", "admin@10", None)
        db.session.commit()
        trip_id = post_trip("ALT", level="BLS", deadline_minutes=5)
    deliver()
    relay, sender = Relay(app), Sender(app)
    start = utcnow()
    relay.run_once(start + timedelta(minutes=6))
    sender.run_once(start + timedelta(minutes=6))
    assert smtp.inbox.messages == []  # the first alert: nobody asked for email
    relay.run_once(start + timedelta(minutes=11))
    sender.run_once(start + timedelta(minutes=11))
    (message,) = smtp.inbox.to("admin@medport.test")  # the demo's ladders too, in one message
    with app.app_context():
        reference = trip_facts(trip_id)[0]
    assert f"- Escalation level 1: {reference} unfilled" in message.get_content()
    assert smtp.inbox.to("coordinator@medport.test") == []


def test_login_from_the_url_and_its_settings(app, demo, deliver):
    server = SmtpServer(authenticate=True)
    server.start()
    try:
        app.config.update(MEDPORT_SMTP_URL=f"smtp://medport:s3cret@127.0.0.1:{server.port}")
        with app.app_context():
            delivery_mail.send_email(app.config, AEMS, "Subject", "Body")
        assert server.inbox.logins == [b"medport"] and len(server.inbox.to(AEMS)) == 1
        app.config.update(MEDPORT_SMTP_URL=f"smtp://medport:wrong@127.0.0.1:{server.port}")
        with app.app_context(), pytest.raises(delivery_records.DeliveryFailed) as failed:
            delivery_mail.send_email(app.config, AEMS, "Subject", "Body")
        assert not failed.value.unreachable and "login refused" in str(failed.value)
    finally:
        server.stop()
    assert smtp_settings("smtps://a%40b:p%3Aw@mail.example.org") == {
        "host": "mail.example.org", "port": 465, "tls": True, "starttls": False, "user": "a@b", "password": "p:w"}
    assert smtp_settings("smtp://mail.example.org:587?starttls=1")["starttls"] is True
    with pytest.raises(ValueError):
        smtp_settings("http://mail.example.org")


# --- webhooks -----------------------------------------------------------------------------------


@pytest.fixture
def receiver(app):
    app.config.update(MEDPORT_WEBHOOK_ALLOW_LOOPBACK_HTTP=True, MEDPORT_WEBHOOK_TIMEOUT_SECONDS=1,
                      MEDPORT_BASE_URL="https://medport.test")
    server = Receiver()
    yield server
    server.close()


def register(app, code, url, kinds):
    with app.app_context():
        admin = db.session.scalar(sa.select(User).where(User.email == "admin@medport.test"))
        endpoint = webhooks.register(f"agency:{agency(code).id}", url, kinds, admin, allow_loopback_http=True)
        db.session.commit()
        return endpoint.secret


def test_a_webhook_post_is_signed_and_carries_only_what_the_organisation_sees(app, demo, deliver, receiver):
    secret = register(app, "AEMS", receiver.url, ["ems.new_request"])
    register(app, "BCA", receiver.url + "/bca", ["ems.new_request"])
    with app.app_context():
        trip_id = post_trip("ALT", level="CCT")  # BCA has no CCT: it is not told
        reference, public_id, patient_ref = trip_facts(trip_id)
    deliver()
    assert Sender(app).run_once() == {"sent": 1}
    (headers, body), = receiver.requests
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "ems.new_request" and payload["id"] == headers["webhook-id"]
    data = payload["data"]
    assert data["reference"] == reference and data["level_of_care"] == "CCT" and data["urgency"] == "routine"
    assert data["link"] == f"https://medport.test/ems/requests/{public_id}" and data["window_start"]
    assert patient_ref not in body and "4 West" not in body
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):  # a body changed in transit fails the check
        Webhook(secret).verify(body.replace(reference, "ALT-000000-XXXX"), headers)


def test_webhooks_retry_on_500_and_timeouts_then_park_and_replay(app, demo, deliver, receiver):
    app.config["MEDPORT_DELIVERY_MAX_ATTEMPTS"] = 3
    register(app, "AEMS", receiver.url, ["ems.new_request"])
    receiver.answers = [500, "stall"]
    with app.app_context():
        post_trip("ALT", level="BLS")
    deliver()
    sender, start = Sender(app), utcnow()
    assert sender.run_once(start) == {"retrying": 1}
    assert sender.run_once(start + timedelta(seconds=5)) == {}  # backing off
    assert sender.run_once(start + timedelta(seconds=11)) == {"retrying": 1}  # timed out
    with app.app_context():
        row = db.session.scalar(sa.select(AlertDelivery))
        assert row.attempts == 2 and "cannot reach the endpoint" in row.last_error
    receiver.answers = [500]
    assert sender.run_once(start + timedelta(minutes=1)) == {"parked": 1}
    assert sender.run_once(start + timedelta(hours=1)) == {}  # parked: not tried again
    ids = {headers["webhook-id"] for headers, _body in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1  # one message, tried three times

    coordinator = signed_in(app, "coordinator@medport.test")
    page = coordinator.get("/alerts/deliveries?status=parked").get_data(as_text=True)
    with app.app_context():
        public_id = db.session.scalar(sa.select(AlertDelivery.public_id))
    assert f'data-delivery="{public_id}" data-status="parked"' in page and "Replay" in page
    assert coordinator.get("/alerts/deliveries?status=lost").status_code == 400
    assert signed_in(app, BCA).post(f"/alerts/deliveries/{public_id}/replay").status_code == 403
    assert coordinator.post(f"/alerts/deliveries/{public_id}/replay").status_code == 302
    assert coordinator.post(f"/alerts/deliveries/{public_id}/replay").status_code == 404  # no longer parked
    assert Sender(app).run_once() == {"sent": 1}
    assert len(receiver.requests) == 4


def test_registering_an_endpoint_checks_its_address_and_kinds(app, demo, receiver):
    admin = signed_in(app, "admin@medport.test")
    with app.app_context():
        scope = f"agency:{agency('AEMS').id}"
    form = {"organisation": scope, "url": "http://dispatch.example.org/hook", "kinds": ["ems.new_request"]}
    refused = admin.post("/alerts/webhooks", data=form)
    assert refused.status_code == 400 and "must use https://" in refused.get_data(as_text=True)
    wrong_kind = admin.post("/alerts/webhooks", data=dict(form, url="https://dispatch.example.org/hook",
                                                          kinds=["hospital.first_bid"]))
    assert wrong_kind.status_code == 400
    token = "a" * 32
    made = admin.post("/alerts/webhooks", data=dict(form, url="https://dispatch.example.org/hook",
                                                    submission_id=token))
    assert made.status_code == 200 and "whsec_" in made.get_data(as_text=True)
    again = admin.post("/alerts/webhooks", data=dict(form, url="https://dispatch.example.org/hook",
                                                     submission_id=token))
    assert again.status_code == 303  # the same form sent twice registers one endpoint
    with app.app_context():
        endpoint = db.session.scalar(sa.select(WebhookEndpoint))
        assert endpoint.scope == scope and endpoint.secret.startswith("whsec_")
        public_id = endpoint.public_id
    assert signed_in(app, "coordinator@medport.test").get("/alerts/webhooks").status_code == 403
    assert admin.post(f"/alerts/webhooks/{public_id}/remove").status_code == 302
    with app.app_context():
        assert db.session.scalar(sa.select(WebhookEndpoint.active)) is False
    app.config["MEDPORT_WEBHOOK_ALLOW_LOOPBACK_HTTP"] = False
    loopback = admin.post("/alerts/webhooks", data=dict(form, url=receiver.url))
    assert loopback.status_code == 400


def test_settings_page_takes_email_and_digest(app, demo):
    client = signed_in(app, AEMS)
    saved = client.post("/alerts/settings", data={"enabled": ["ems.new_request", "ems.bid_awarded"],
                                                 "email": ["ems.bid_awarded", "ems.trip_changed"],
                                                 "digest": "y"})
    assert saved.status_code == 302
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == AEMS))
        choices = alert_settings.choices_for(user)
        assert choices["ems.bid_awarded"].email and not choices["ems.new_request"].email
        assert not choices["ems.trip_changed"].email  # off, so not by email either
        assert choices[alert_kinds.DIGEST].enabled
    page = client.get("/alerts/settings").get_data(as_text=True)
    assert 'name="digest" type="checkbox" value="y" checked' in page or 'checked' in page
    assert json.loads(client.get("/alerts/feed").get_data(as_text=True))["unread"] == 0
