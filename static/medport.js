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
                 "config-updated", "registry-updated"];
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
      return source;
    };
  }

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
