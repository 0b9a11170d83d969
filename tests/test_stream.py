"""The live stream ``GET /events``: signals scoped to the viewer, keep-alive, replay, session end."""
import sqlalchemy as sa

from dashboard.events.handlers import _agency_scope
from dashboard.events.hub import LOOKBACK, SignalHub, hub
from dashboard.events.outbox import SYSTEM, emit
from dashboard.events.routes import may_receive
from dashboard.extensions import db
from dashboard.models.center import Agency, Hospital, LiveSignal, User
from dashboard.models.hospital import TransportRequest
from tests.helpers import (
    COORDINATOR,
    DISPATCH_AEMS,
    NURSE_ALT,
    Stream,
    award,
    place_bid,
    post_trip,
    signed_in,
)

NURSE_MNV = "nurse@mountnittany.medport.test"
DISPATCH_CLL = "dispatch@centrelifelink.medport.test"


def public_id(trip_id):
    return db.session.get(TransportRequest, trip_id).public_id


def test_the_stream_needs_a_login(client):
    response = client.get("/events")
    assert response.status_code == 401


def test_a_posted_trip_reaches_the_hospital_and_the_agencies_that_may_serve_it(app, demo, deliver):
    deliver()
    app.config["MEDPORT_STREAM_MAX_SECONDS"] = 0.6
    streams = {email: Stream(signed_in(app, email))
               for email in (NURSE_ALT, NURSE_MNV, DISPATCH_AEMS, COORDINATOR)}
    for stream in streams.values():
        assert stream.response.status_code == 200
        assert stream.response.mimetype == "text/event-stream"
        assert stream.read().startswith("retry: 2000")
    with app.app_context():
        trip = post_trip("ALT", level="BLS")
        public = public_id(trip)
    deliver()
    expected = f"event: trip-updated\ndata: {public}\n\n"
    for email in (NURSE_ALT, DISPATCH_AEMS, COORDINATOR):
        assert streams[email].read_until(expected), email
        assert "\nid: " in "\n" + streams[email].text
    assert expected not in streams[NURSE_MNV].read_to_end()  # another hospital's trip


def test_a_preferred_only_trip_and_a_bid_reach_only_those_concerned(app, demo, deliver):
    deliver()
    app.config["MEDPORT_STREAM_MAX_SECONDS"] = 0.6
    streams = {email: Stream(signed_in(app, email)) for email in (NURSE_ALT, DISPATCH_AEMS, DISPATCH_CLL)}
    for stream in streams.values():
        stream.read()
    with app.app_context():
        trip = post_trip("ALT", invite_mode="preferred")  # ALT prefers AEMS, BCA, ACCT
        public = public_id(trip)
        bid = place_bid(trip, "AEMS", 15)
        from dashboard.models.ems import TransportBid

        bid_public = db.session.get(TransportBid, bid).public_id
    deliver()
    assert streams[DISPATCH_AEMS].read_until(f"data: {public}")
    assert streams[DISPATCH_AEMS].read_until(f"event: bid-updated\ndata: {bid_public}")
    assert streams[NURSE_ALT].read_until(f"event: bid-updated\ndata: {bid_public}")
    text = streams[DISPATCH_CLL].read_to_end()
    assert public not in text and bid_public not in text


def test_keep_alive_comments_while_idle_and_the_stream_ends_on_time(app, demo):
    app.config["MEDPORT_STREAM_MAX_SECONDS"] = 0.7
    stream = Stream(signed_in(app, NURSE_ALT))
    text = stream.read_to_end()
    assert stream.ended
    assert text.count(": keep-alive\n\n") >= 2  # every 0.2 s in the tests' configuration


def test_no_database_connection_is_held_while_streaming(app, demo):
    stream = Stream(signed_in(app, NURSE_ALT))
    stream.read()
    stream.read()  # suspended between reads, as between two signals
    with app.app_context():
        for engine in db.engines.values():
            assert engine.pool.checkedout() == 0
    stream.close()


def test_last_event_id_replays_what_was_missed_from_memory(app, demo, deliver):
    deliver()
    with app.app_context():
        first = public_id(post_trip("ALT"))
    deliver()
    with app.app_context():
        seen = db.session.scalar(sa.select(LiveSignal.id).where(LiveSignal.entity_id == first))
        missed = [public_id(post_trip("ALT")) for _ in range(2)]
    deliver()
    stream = Stream(signed_in(app, NURSE_ALT), headers={"Last-Event-ID": str(seen)})
    assert stream.read_until(f"data: {missed[1]}")
    assert stream.text.index(missed[0]) < stream.text.index(missed[1])
    assert f"data: {first}" not in stream.text
    stream.close()


def test_last_event_id_beyond_memory_replays_from_the_table(app, demo):
    with app.app_context():
        hospital_id = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "ALT"))
        db.session.add_all([LiveSignal(name="trip-updated", entity_id=f"trip-{n}", hospital_id=hospital_id)
                            for n in range(LOOKBACK + 30)])
        db.session.commit()
    hub.init_app(app)  # as a process starting now: its memory begins near the newest signals
    # The browser last saw signal 5.
    stream = Stream(signed_in(app, NURSE_ALT), query="?last_event_id=5")
    assert stream.read_until(f"data: trip-{LOOKBACK + 29}\n")
    assert "data: trip-4\n" not in stream.text and "id: 6\nevent: trip-updated\ndata: trip-5\n" in stream.text
    stream.close()


def test_a_gap_the_table_no_longer_holds_refreshes_every_panel(app, demo):
    with app.app_context():
        db.session.add_all([LiveSignal(name="trip-updated", entity_id=f"trip-{n}") for n in range(LOOKBACK + 30)])
        db.session.commit()
        db.session.execute(sa.delete(LiveSignal).where(LiveSignal.id <= 20))  # pruned
        db.session.commit()
    hub.init_app(app)
    stream = Stream(signed_in(app, NURSE_ALT), headers={"Last-Event-ID": "10"})
    assert stream.read_until("event: unit-updated\ndata: *\n\n")
    assert "event: trip-updated\ndata: *\n\n" in stream.text
    stream.close()


def _end_sessions(app, email):
    """Every session of the account ends (as a password reset does), and the relay hears of it."""
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == email))
        user.session_epoch += 1
        emit("center", "user.updated", "user", user.public_id,
             {"user_id": user.id, "public_id": user.public_id, "display_name": user.display_name,
              "role": user.role, "hospital_id": user.hospital_id, "agency_id": user.agency_id,
              "active": True}, actor=SYSTEM)
        db.session.commit()


def test_the_stream_ends_when_the_session_ends(app, demo, deliver):
    # The account's signal ends it, not a timer.
    app.config.update(MEDPORT_STREAM_KEEPALIVE_SECONDS=30, MEDPORT_STREAM_SESSION_CHECK_SECONDS=3600)
    stream = Stream(signed_in(app, DISPATCH_AEMS))
    stream.read()
    _end_sessions(app, DISPATCH_AEMS)
    deliver()
    assert stream.read_until("event: session-ended\n", max_reads=3)
    stream.read()
    assert stream.ended


def test_signing_out_ends_the_stream_at_the_next_session_check(app, demo):
    app.config["MEDPORT_STREAM_SESSION_CHECK_SECONDS"] = 0.3
    client = signed_in(app, NURSE_ALT)
    stream = Stream(client)
    stream.read()
    assert client.post("/logout").status_code == 302
    assert stream.read_until("event: session-ended\n", max_reads=5)
    stream.read()
    assert stream.ended


# --- who may know of what ------------------------------------------------------------------------


def test_may_receive_scopes_by_role_and_organisation():
    trip = (1, "trip-updated", "t", 3, ",2,5,", None)
    config = (2, "config-updated", "c", None, "*", None)
    account = (3, "account-updated", "u", None, "", 9)
    assert may_receive(("hospital", 3, None, 1), trip)
    assert not may_receive(("hospital", 4, None, 1), trip)
    assert may_receive(("ems", None, 5, 1), trip)
    assert not may_receive(("ems", None, 1, 1), trip)
    assert not may_receive(("ems", None, 15, 1), (1, "trip-updated", "t", 3, ",1,5,", None))  # 15 is not 5
    assert may_receive(("coordinator", None, None, 1), trip) and may_receive(("admin", None, None, 1), account)
    assert may_receive(("ems", None, 7, 1), config) and may_receive(("hospital", 8, None, 1), config)
    assert may_receive(("hospital", None, None, 9), account)
    assert not may_receive(("hospital", None, None, 8), account)


def test_agency_scope_of_a_trip_follows_its_invitation_and_level(app, demo):
    with app.app_context():
        codes = {a.id: a.short_code for a in db.session.scalars(sa.select(Agency))}

        def scope(invite_mode, level, **extra):
            trip = db.session.get(TransportRequest, post_trip("ALT", level=level, invite_mode=invite_mode))
            payload = dict(trip_id=trip.id, level_of_care=level, invite_mode=invite_mode,
                           invited_agency_ids=sorted(trip.invited_ids), **extra)

            class Event:
                type, entity_type, silo, created_at = "trip.posted", "trip", "hospital", trip.created_at

            ids = _agency_scope(Event, payload)
            return {codes[int(i)] for i in ids.strip(",").split(",") if i}

        assert scope("all", "BLS") == set(codes.values())
        assert scope("all", "CCT") == {"AEMS", "ACCT", "CMT"}
        assert scope("preferred", "BLS") == {"AEMS", "BCA", "ACCT"}
        assert scope("preferred_then_all", "BLS") == {"AEMS", "BCA", "ACCT"}  # within the first 10 min
        assert scope("preferred", "BLS", awarded_agency_id=next(i for i, c in codes.items() if c == "CLL")) \
            == {"AEMS", "BCA", "ACCT", "CLL"}


# --- the hub -----------------------------------------------------------------------------------


def test_the_hub_passes_on_a_signal_committed_late_with_a_lower_id(app):
    local = SignalHub()
    local.app = app
    with app.app_context():
        db.session.add(LiveSignal(id=10, name="trip-updated", entity_id="ten"))
        db.session.commit()
    start = local.position()
    with app.app_context():
        db.session.add(LiveSignal(id=12, name="trip-updated", entity_id="twelve"))
        db.session.commit()
    assert local.refresh() == 1
    with app.app_context():
        db.session.add(LiveSignal(id=11, name="trip-updated", entity_id="eleven"))  # a slower relay
        db.session.commit()
    assert local.refresh() == 1
    position, signals, complete = local.after(start)
    assert [s[2] for s in signals] == ["twelve", "eleven"] and complete
    assert local.wait(position, 0.01) == position  # nothing newer: times out
    assert [s[2] for s in local.since_id(10)] == ["eleven", "twelve"]
    with app.app_context():  # the table emptied (restored from a backup): ids start again
        db.session.execute(sa.delete(LiveSignal))
        db.session.add(LiveSignal(id=1, name="trip-updated", entity_id="one"))
        db.session.commit()
    assert local.refresh() == 1
    assert [s[2] for s in local.after(position)[1]] == ["one"]


def test_the_relay_wakes_the_hub(app, demo, deliver):
    start = hub.position()
    with app.app_context():
        trip = post_trip("ALT")
        awarded = public_id(trip)
        award_bid = place_bid(trip, "AEMS", 10)
    deliver()
    with app.app_context():
        award(trip, award_bid)
    deliver()
    position, signals, _ = hub.after(start)
    assert position > start
    names = [(s[1], s[2]) for s in signals]
    assert names.count(("trip-updated", awarded)) == 2  # posted, awarded
    assert {"bid-updated", "unit-updated"} <= {name for name, _ in names}


def test_a_live_page_opens_one_stream_that_replays_from_its_rendering(app, demo, deliver):
    deliver()
    client = signed_in(app, NURSE_ALT)
    page = client.get("/hospital/").get_data(as_text=True)
    assert page.count("sse-connect=") == 1
    main = page[page.index("<main"):page.index(">", page.index("<main"))]
    assert 'hx-ext="sse"' in main and 'id="live-status"' in page
    url = main.split('sse-connect="', 1)[1].split('"', 1)[0]
    assert url.startswith("/events?last_event_id=")
    with app.app_context():
        posted = public_id(post_trip("ALT"))  # after the page was rendered, before its stream opened
    deliver()
    stream = Stream(client, query=url[len("/events"):])
    assert stream.read_until(f"data: {posted}\n", max_reads=3)
    stream.close()


# --- fan-out: audiences ------------------------------------------------------------------------


def test_a_signal_wakes_only_the_audiences_it_may_concern_and_is_encoded_once_for_each(app):
    local = SignalHub()
    local.app = app
    start = local.position()
    encoded = []

    def encode(signal):
        encoded.append(signal[0])
        return f"{signal[2]};".encode()

    def of_hospital(hospital_id):
        return lambda signal, user: signal[5] == user if signal[5] is not None else signal[3] == hospital_id

    ours = local.join(("hospital", 3, None, None, None), 41, of_hospital(3), encode)
    assert local.join(("hospital", 3, None, None, None), 42, of_hospital(3), encode) is ours  # a colleague
    theirs = local.join(("hospital", 4, None, None, None), 51, of_hospital(4), encode)

    def arrive(*signals):
        before = (ours.arrived, theirs.arrived)
        with app.app_context():
            db.session.add_all([LiveSignal(id=i, name=name, entity_id=entity, hospital_id=hospital, user_id=user)
                                for i, name, entity, hospital, user in signals])
            db.session.commit()
        assert local.refresh() == len(signals)
        return [event.is_set() for event in before]

    assert arrive((10, "trip-updated", "ten", 3, None)) == [True, False]
    assert arrive((11, "alert", "for-51", None, 51)) == [False, True]  # addressed: its user's audience
    assert arrive((12, "alert", "for-nobody", None, 99)) == [False, False]
    position, batch = local.batch_for(ours, start)
    assert local.batch_for(ours, start)[1] is batch  # the colleague's stream shares it
    assert encoded == [10]
    assert [s[0] for s in batch.signals] == [10, 11, 12] and batch.newest == 12 and batch.complete
    assert position == local.position() and batch.data_for(41) == batch.data_for(42) == b"ten;"
    assert local.batch_for(theirs, start)[1].data_for(51) == b"for-51;"  # its user's text
    assert local.batch_for(theirs, start)[1].data_for(52) == b""  # a colleague's: not theirs
    assert encoded == [10, 11]  # each once
    local.wait_for(ours, position, 0.01)  # nothing newer for it: returns at the timeout
    local.leave(ours, 41)
    local.leave(ours, 42)
    assert local.join(("hospital", 3, None, None, None), 41, of_hospital(3), encode) is not ours


def test_streams_sharing_an_audience_each_get_only_what_their_user_may_see(app, demo):
    app.config["MEDPORT_STREAM_MAX_SECONDS"] = 1.0
    with app.app_context():
        nurse = db.session.scalar(sa.select(User).where(User.email == NURSE_ALT))
        nurse_id, hospital_id = nurse.id, nurse.hospital_id
        other_id = db.session.scalar(sa.select(User.id).where(User.email == NURSE_MNV))
    client = signed_in(app, NURSE_ALT)
    tabs = [Stream(client), Stream(client)]
    for tab in tabs:
        tab.read()
    with app.app_context():
        db.session.add_all([
            LiveSignal(name="trip-updated", entity_id="ours-before", hospital_id=hospital_id),
            LiveSignal(name="alert", entity_id="alert-for-another", user_id=other_id),
            LiveSignal(name="trip-updated", entity_id="ours-after", hospital_id=hospital_id),
            LiveSignal(name="alert", entity_id="alert-for-the-nurse", user_id=nurse_id),
            LiveSignal(name="trip-updated", entity_id="another-hospital", hospital_id=hospital_id + 1),
        ])
        db.session.commit()
    hub.refresh()
    for tab in tabs:
        assert tab.read_until("data: alert-for-the-nurse\n")
        text = tab.read_to_end()
        assert text.index("data: ours-before\n") < text.index("data: ours-after\n") \
            < text.index("data: alert-for-the-nurse\n")
        assert "alert-for-another" not in text and "another-hospital" not in text
        assert text.count("data: ours-after\n") == 1


def test_the_relay_wakes_the_streams_once_the_signal_is_committed_before_the_alerts(app, demo, deliver,
                                                                                     monkeypatch):
    from dashboard.events import handlers
    from dashboard.extensions import engine

    deliver()

    def committed(name):  # read on a connection of its own: what other processes see
        with app.app_context(), engine("center").connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(LiveSignal).where(LiveSignal.name == name))

    trips, alerts = committed("trip-updated"), committed("alert")
    order = []
    real_poke, real_alerts = hub.poke, handlers.produce_alerts

    def poke():
        order.append(("poke", committed("trip-updated") - trips, committed("alert") - alerts))
        real_poke()

    def produce_alerts(event):
        order.append(("alerts",))
        real_alerts(event)

    monkeypatch.setattr(hub, "poke", poke)
    monkeypatch.setattr(handlers, "produce_alerts", produce_alerts)
    with app.app_context():
        post_trip("ALT", level="BLS")  # alerts the dispatchers of the agencies that may bid
    deliver()
    assert order[:2] == [("poke", 1, 0), ("alerts",)]  # the request's signal did not wait for its alerts
    assert order[2][0] == "poke" and order[2][2] > 0  # the alerts' own signals, once committed
    assert len(order) == 3
