"""Alerts in the browser: a new request plays its tone and raises a desktop notification for an
opted-in dispatcher with MedPort open, and neither for a user whose role or settings exclude it.

The page's sound and notifications are observed through spies installed before any script of
the page runs (``HTMLMediaElement.prototype.play`` and ``window.Notification``); the permission
is granted in the browser context, as a user's "Allow" would.
"""
import re

from .helpers import post_request, wait_live

NURSE = "nurse@altoona.medport.test"
OTHER_NURSE = "nurse@juniata.medport.test"
OPTED_IN = "dispatch@altoonaems.medport.test"
OPTED_OUT = "dispatch@blaircounty.medport.test"
LIVE = 15_000

SPIES = """
(() => {
  window.__tones = [];
  window.__notes = [];
  window.__asked = 0;
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    window.__tones.push(this.src);
    try { return play.call(this).catch(() => undefined); } catch (e) { return Promise.resolve(); }
  };
  const Real = window.Notification;
  if (!Real) return;
  function Spy(title, options) {
    window.__notes.push({ title: title, body: options && options.body });
    try { return new Real(title, options); } catch (e) { return {}; }
  }
  Object.defineProperty(Spy, "permission", { get: () => Real.permission });
  Spy.requestPermission = function (callback) {
    window.__asked += 1;
    return Real.requestPermission(callback);
  };
  window.Notification = Spy;
})();
"""


def spied(session, grant):
    if grant:
        session.context.grant_permissions(["notifications"], origin=session.server.url)
    session.page.add_init_script(SPIES)
    return session


def feed_after(page, after):
    return page.evaluate("async (after) => (await (await fetch('/alerts/feed?after=' + after)).json())", after)


def test_a_new_request_sounds_and_notifies_only_those_it_concerns(open_session, live_server):
    ems = spied(open_session(OPTED_IN), grant=True)
    other = spied(open_session(OPTED_OUT), grant=True)
    nurse_b = spied(open_session(OTHER_NURSE), grant=True)
    nurse = open_session(NURSE)

    # The opted-out dispatcher turns new-request alerts off on the settings page.
    other.goto("/alerts/settings")
    other.page.uncheck("input[name=enabled][value='ems.new_request']")
    other.page.click("button:has-text('Save')")
    other.page.wait_for_selector("text=Alert settings saved.")

    # The button asks for the permission; opening a page never does.
    ems.goto("/alerts/")
    ems.page.wait_for_selector("[data-alerts-mute]:not([hidden])")
    assert ems.page.evaluate("window.__asked") == 0
    assert "Desktop alerts are on" in ems.page.inner_text("[data-alerts-permission-state]")

    ems.goto("/ems/")
    wait_live(ems.page)
    other.goto("/ems/")
    wait_live(other.page)
    nurse_b.goto("/alerts/")  # a page without live panels: it opens the stream for its alerts
    for session in (ems, other, nurse_b):
        assert session.page.evaluate("window.__asked") == 0
    latest = {s: feed_after(s.page, 0)["latest"] for s in (ems, other, nurse_b)}

    reference, _public_id = post_request(nurse, level="BLS", note="Alert story")

    ems.page.wait_for_function("() => window.__notes.length > 0 && window.__tones.length > 0",
                               timeout=LIVE)
    tones = ems.page.evaluate("window.__tones")
    notes = ems.page.evaluate("window.__notes")
    assert any(t.endswith("/static/alerts/ems.new_request.wav") for t in tones), tones
    assert any(reference in n["title"] for n in notes), notes
    ems.page.wait_for_function("() => /^[(][0-9]+[)] /.test(document.title)", timeout=LIVE)
    assert ems.page.evaluate("fetch('/static/alerts/ems.new_request.wav', {cache: 'no-store'}).then(r => r.ok)")

    # Every recipient's alert was written in the one transaction the dispatcher's came from:
    # the others have none, heard nothing and saw nothing.
    for session in (other, nurse_b):
        assert feed_after(session.page, latest[session])["alerts"] == [], session.email
        assert session.page.evaluate("window.__tones") == [], session.email
        assert session.page.evaluate("window.__notes") == [], session.email
        assert not re.match(r"^\(\d+\) ", session.page.title())

    # Muted in this browser: the next alert is counted and notified, but silent.
    ems.goto("/alerts/")
    ems.page.click("[data-alerts-mute]")
    assert ems.page.get_attribute("[data-alerts-mute]", "aria-pressed") == "true"
    ems.goto("/ems/")
    wait_live(ems.page)
    second, _ = post_request(nurse, level="BLS", note="Second alert")
    ems.page.wait_for_function("(ref) => window.__notes.some(n => n.title.includes(ref))", arg=second,
                               timeout=LIVE)
    assert ems.page.evaluate("window.__tones") == []
    for session in (ems, other, nurse_b):
        assert session.errors == [], session.errors
