// MedPort's small client script: live-stream status and confirmations. No inline script anywhere
// (the Content-Security-Policy forbids it), so behaviour hangs on data attributes here.
(function () {
  "use strict";

  function setLive(state, text) {
    var box = document.getElementById("live-status");
    if (!box) return;
    box.setAttribute("data-state", state);
    box.querySelector(".live-text").textContent = text;
  }

  document.addEventListener("htmx:sseOpen", function () {
    setLive("open", "Live: updates appear as they happen.");
  });
  document.addEventListener("htmx:sseError", function () {
    setLive("lost", "Live updates lost — reconnecting; the page catches up when it is back.");
  });
  document.addEventListener("htmx:sseClose", function () {
    setLive("lost", "Live updates stopped. Reload the page to resume.");
  });

  // The page's one event stream.  The browser itself reconnects a dropped stream and
  // sends Last-Event-ID, so the server replays what the page missed.  When the browser
  // gives up on a stream (an error answer), htmx opens a new one: it carries the last id
  // seen as ?last_event_id= (in place of the one the page was rendered with) so that
  // reconnect catches up too.  A stream that says the
  // session ended reloads the page, which leads to the sign-in page.
  var SIGNALS = ["trip-updated", "bid-updated", "unit-updated", "account-updated",
                 "config-updated", "registry-updated", "alert"];
  var lastEventId = "";
  if (window.htmx) {
    window.htmx.createEventSource = function (url) {
      var target = url;
      if (lastEventId) {
        target = url.replace(/([?&])last_event_id=[^&]*&?/, "$1").replace(/[?&]$/, "");
        target += (target.indexOf("?") < 0 ? "?" : "&") + "last_event_id=" + encodeURIComponent(lastEventId);
      }
      var source = new EventSource(target, { withCredentials: true });
      SIGNALS.forEach(function (name) {
        source.addEventListener(name, function (event) {
          if (event.lastEventId && /^[0-9]+$/.test(event.lastEventId)) lastEventId = event.lastEventId;
        });
      });
      // The center (where live signals are kept) cannot be read: the stream says so, and
      // asks every panel to refresh itself now and then until it is back.
      source.addEventListener("live-status", function (event) {
        if (event.data === "center-unreachable") {
          setLive("stale", "Live updates delayed: the center's database cannot be reached. " +
                  "This page refreshes itself every 20 seconds.");
        } else {
          setLive("open", "Live: updates appear as they happen.");
        }
      });
      source.addEventListener("session-ended", function () {
        source.close();
        setLive("lost", "Your session ended. Sign in again to continue.");
        window.location.reload();
      });
      listenForAlerts(source);
      return source;
    };
  }

  // Alerts on any open page: the stream's "alert" signal says the user has a new alert; the page
  // asks its own feed (the user's alerts after the last one seen) and, for each new unread one,
  // plays the kind's tone (unless muted here), shows a desktop notification (if the user allowed
  // them with the button on the alerts page) and counts it in the tab's title.  A page without
  // live panels opens the stream for its alerts alone.
  var alerts = { feed: null, tones: "", latest: null, busy: false, again: false, title: document.title };
  var MUTED_KEY = "medport.alerts.muted";

  function alertsMuted() {
    try { return window.localStorage.getItem(MUTED_KEY) === "1"; } catch (e) { return false; }
  }

  function setUnread(count) {
    document.title = (count > 0 ? "(" + count + ") " : "") + alerts.title;
    var links = document.querySelectorAll("nav a[href$='/alerts/']");
    for (var i = 0; i < links.length; i++) {
      links[i].textContent = count > 0 ? "Alerts (" + count + ")" : "Alerts";
    }
  }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function openAlert(alert) {
    // Mark it read, then go to the item (the link goes there even if the mark fails).
    window.fetch(alert.open, { method: "POST", credentials: "same-origin", redirect: "manual",
                               headers: { "X-CSRFToken": csrfToken() } })
      .catch(function () { return null; })
      .then(function () { window.location.assign(alert.link || "/alerts/"); });
  }

  function playTone(kind) {
    if (alertsMuted() || !alerts.tones) return;
    var audio = new window.Audio(alerts.tones + encodeURIComponent(kind) + ".wav");
    var played = audio.play();
    if (played && played.catch) played.catch(function () { /* the browser refused sound */ });
  }

  function notifyDesktop(alert) {
    if (!("Notification" in window) || window.Notification.permission !== "granted") return;
    var note = new window.Notification("MedPort: " + alert.title, {
      body: alert.reference ? "Open " + alert.reference : "Open MedPort", tag: alert.public_id });
    note.onclick = function () { window.focus(); openAlert(alert); };
  }

  function fetchAlerts() {
    if (!alerts.feed) return;
    if (alerts.busy) { alerts.again = true; return; }
    alerts.busy = true;
    var first = alerts.latest === null;
    var url = alerts.feed + (first ? "" : "?after=" + alerts.latest);
    window.fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) return;
        if (first) {
          alerts.latest = data.latest;  // what was there when the page opened is not announced
        }
        (data.alerts || []).forEach(function (alert) {
          if (alert.id > alerts.latest) alerts.latest = alert.id;
          if (!alert.read) { playTone(alert.kind); notifyDesktop(alert); }
        });
        setUnread(data.unread);
      })
      .catch(function () { /* the next signal or reconnect asks again */ })
      .then(function () {
        alerts.busy = false;
        if (alerts.again) { alerts.again = false; fetchAlerts(); }
      });
  }

  function listenForAlerts(source) {
    source.addEventListener("alert", fetchAlerts);
    source.addEventListener("open", function () { if (alerts.latest !== null) fetchAlerts(); });
  }

  function setUpAlertControls() {
    var mute = document.querySelector("[data-alerts-mute]");
    if (mute) {
      var show = function () {
        var on = alertsMuted();
        mute.setAttribute("aria-pressed", on ? "true" : "false");
        mute.textContent = on ? "Alert sounds: off (turn on)" : "Alert sounds: on (mute)";
      };
      mute.hidden = false;
      show();
      mute.addEventListener("click", function () {
        try { window.localStorage.setItem(MUTED_KEY, alertsMuted() ? "0" : "1"); } catch (e) { /* kept off */ }
        show();
      });
    }
    var ask = document.querySelector("[data-alerts-permission]");
    var state = document.querySelector("[data-alerts-permission-state]");
    if (ask && state) {
      var describe = function () {
        if (!("Notification" in window)) {
          state.textContent = "This browser cannot show desktop alerts.";
          ask.hidden = true;
          return;
        }
        var permission = window.Notification.permission;
        ask.hidden = permission !== "default";
        state.textContent = permission === "granted" ? "Desktop alerts are on in this browser."
          : permission === "denied" ? "Desktop alerts are blocked in this browser's site settings."
          : "Desktop alerts are off in this browser.";
      };
      describe();
      ask.addEventListener("click", function () {
        var asked = window.Notification.requestPermission(describe);
        if (asked && asked.then) asked.then(describe);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    alerts.feed = document.body.getAttribute("data-alerts-feed");
    alerts.tones = document.body.getAttribute("data-alerts-tones") || "";
    setUpAlertControls();
    if (!alerts.feed) return;
    fetchAlerts();
    var stream = document.body.getAttribute("data-alerts-stream");
    if (stream && !document.querySelector("[sse-connect]") && window.EventSource) {
      var source = new window.EventSource(stream, { withCredentials: true });
      listenForAlerts(source);
      source.addEventListener("session-ended", function () { source.close(); });
    }
  });

  // Clocks move: every <time data-relative> says how far its instant is from now ("in 6 min",
  // "3 min ago", or the bare "3 min" of an age column), rewritten every 15 seconds and after
  // each live refresh, in the wording the server renders (dashboard/templating.py).
  function duration(seconds) {
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 48) return hours + " h " + (minutes < 10 ? "0" : "") + minutes + " min";
    return Math.floor(hours / 24) + " d";
  }

  function updateClocks(root) {
    var now = Date.now();
    var clocks = (root || document).querySelectorAll("time[data-relative]");
    for (var i = 0; i < clocks.length; i++) {
      var clock = clocks[i];
      var at = Date.parse(clock.getAttribute("datetime"));
      if (isNaN(at)) continue;
      var seconds = Math.trunc((now - at) / 1000);
      var text = seconds < 0 ? "in " + duration(-seconds) : duration(seconds);
      if (seconds >= 0 && clock.getAttribute("data-relative") === "ago") text += " ago";
      if (clock.textContent !== text) clock.textContent = text;
    }
    // A late badge rendered hidden until its instant (a window boundary) shows from then on.
    var due = (root || document).querySelectorAll("[data-late-from][hidden]");
    for (var j = 0; j < due.length; j++) {
      var from = Date.parse(due[j].getAttribute("data-late-from"));
      if (!isNaN(from) && now >= from) due[j].removeAttribute("hidden");
    }
  }

  document.addEventListener("DOMContentLoaded", function () { updateClocks(); });
  document.addEventListener("htmx:afterSettle", function (event) { updateClocks(event.target); });
  window.setInterval(updateClocks, 15000);

  // A live refresh never takes a form from under the person filling it in.  A panel refreshed by
  // the stream (or its timer) whose form someone is using -- focus in one of its fields, or a
  // field changed from what the page showed -- keeps its content: the refresh is held, the panel
  // says newer information is waiting, and it is shown as soon as the form is sent, put back as
  // it was or left untouched (or at once with the panel's "Show it now", which drops the change).
  // Forms marked hx-preserve (a bid being typed, a hand-back reason) survive a refresh anyway and
  // never hold one.  The panel's own answer to a user's action is never held.
  var HELD = "data-refresh-held";

  function changed(field) {
    var type = (field.type || "").toLowerCase();
    if (type === "hidden" || type === "submit" || type === "button" || type === "reset") return false;
    if (type === "checkbox" || type === "radio") return field.checked !== field.defaultChecked;
    if (field.tagName === "SELECT") {
      for (var i = 0; i < field.options.length; i++) {
        if (field.options[i].selected !== field.options[i].defaultSelected) return true;
      }
      return false;
    }
    return field.value !== field.defaultValue;
  }

  function formInUse(panel) {
    var fields = panel.querySelectorAll("input, select, textarea");
    var active = document.activeElement;
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.closest("[hx-preserve], [data-hx-preserve]")) continue;
      if (field === active || changed(field)) return true;
    }
    return false;
  }

  function livePanel(target, detail) {
    var trigger = target.getAttribute && target.getAttribute("hx-trigger");
    var config = detail.requestConfig || {};
    return !!trigger && /sse:|every /.test(trigger) && config.elt === target && config.verb === "get";
  }

  function holdNote(panel) {
    if (panel.querySelector(":scope > .refresh-held")) return;
    var note = document.createElement("p");
    note.className = "flash flash-info refresh-held";
    note.setAttribute("role", "status");
    note.appendChild(document.createTextNode("Newer information is waiting. It appears when you send or " +
                                             "clear this form. "));
    var now = document.createElement("button");
    now.type = "button";
    now.className = "link-button refresh-now";
    now.textContent = "Show it now";
    note.appendChild(now);
    panel.insertBefore(note, panel.firstChild);
  }

  function refresh(panel, force) {
    panel.removeAttribute(HELD);
    if (force) panel.setAttribute("data-refresh-forced", "");
    if (window.htmx) {
      window.htmx.ajax("GET", panel.getAttribute("hx-get"), { source: panel, target: panel, swap: "innerHTML" });
    }
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (!target || !livePanel(target, event.detail)) return;
    if (target.hasAttribute("data-refresh-forced")) {
      target.removeAttribute("data-refresh-forced");
      return;
    }
    if (!formInUse(target)) return;
    event.detail.shouldSwap = false;
    target.setAttribute(HELD, "");
    holdNote(target);
  });

  // A held panel is refreshed once its form is no longer in use (focus moved elsewhere and
  // nothing left changed, or the field put back as the page showed it).
  function releaseHeld() {
    var held = document.querySelectorAll("[" + HELD + "]");
    for (var i = 0; i < held.length; i++) {
      if (!formInUse(held[i])) refresh(held[i]);
    }
  }
  document.addEventListener("focusout", function () { window.setTimeout(releaseHeld, 0); });
  document.addEventListener("change", releaseHeld);
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".refresh-now");
    var panel = button && button.closest("[" + HELD + "]");
    if (panel) refresh(panel, true);
  });

  // A form with data-confirm asks before it submits (used for award and cancel).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
})();
