// The crew's phone page (/crew/): taps that survive dead zones, and a page that forgets the shift.
//
// Every tap (a step or an undo) is first stored on the phone (localStorage, key
// "medport.crew.queue") with its own idempotency key and the time it was tapped, then sent to
// the server in order, one at a time, as soon as there is coverage.  A tap leaves the queue
// only once the server has answered it (recorded, or refused with a message, which is shown);
// a send that got no answer is sent again with the same key, and the server treats it as the
// same tap.  Meanwhile the page moves on by itself: the next step's button (or the next trip)
// shows at once.  The service worker (/crew/sw.js) keeps the page and the unit's trips for a
// reload without coverage, until the shift's end.  Signing out clears all of it.
(function () {
  "use strict";

  var QUEUE = "medport.crew.queue";
  var EXPIRES = "medport.crew.expires";
  var CACHE_PREFIX = "medport-crew";
  var STEPS = ["en_route", "at_pickup", "transporting", "at_destination", "back_in_service"];
  var STATUS_AFTER = {en_route: "En route", at_pickup: "At pickup", transporting: "Transporting",
                      at_destination: "At destination", back_in_service: "Completed"};
  var STATUS_BEFORE = {en_route: "Planned", at_pickup: "En route", transporting: "At pickup",
                       at_destination: "Transporting", back_in_service: "At destination"};

  function root() { return document.getElementById("crew"); }

  function load() {
    try {
      var value = JSON.parse(window.localStorage.getItem(QUEUE));
      return Array.isArray(value) ? value : [];
    } catch (e) {
      return [];
    }
  }

  function save(queue) {
    window.localStorage.setItem(QUEUE, JSON.stringify(queue));
  }

  function newKey() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
    } catch (e) {
      return "";
    }
  }

  function say(text) {
    var box = document.getElementById("crew-network");
    if (box && box.textContent !== text) box.textContent = text;
  }

  function notice(text) {
    var box = document.getElementById("crew-notices");
    if (!box) return;
    var p = document.createElement("p");
    p.className = "panel-error crew-conflict";
    p.textContent = text;
    box.appendChild(p);
  }

  function pendingText(queue) {
    if (!queue.length) return "";
    var n = queue.length + (queue.length === 1 ? " tap" : " taps");
    return navigator.onLine ? n + " being sent…"
      : "No coverage: " + n + " kept on this phone, sent when the network is back.";
  }

  // --- the page moves on by itself -------------------------------------------------------

  function card(trip) {
    return document.querySelector('.crew-trip[data-trip="' + trip + '"]');
  }

  function show(form, on) {
    if (form) form.hidden = !on;
  }

  function apply(tap) {
    var li = card(tap.trip);
    if (!li) return;
    var steps = li.querySelectorAll("form.crew-step");
    var undos = li.querySelectorAll("form.crew-undo");
    var status = li.querySelector(".crew-status");
    var index = STEPS.indexOf(tap.step);
    Array.prototype.forEach.call(steps, function (f) { show(f, false); });
    Array.prototype.forEach.call(undos, function (f) { show(f, false); f.removeAttribute("data-until"); });
    if (tap.act === "advance") {
      show(li.querySelector('form.crew-step[data-step="' + STEPS[index + 1] + '"]'), true);
      var undo = li.querySelector('form.crew-undo[data-step="' + tap.step + '"]');
      var seconds = Number(root() && root().getAttribute("data-undo-seconds")) || 120;
      if (undo) {
        undo.setAttribute("data-until", new Date(Date.parse(tap.tapped_at) + seconds * 1000).toISOString());
        show(undo, true);
      }
      if (status) status.textContent = STATUS_AFTER[tap.step];
      if (tap.step === "back_in_service") {
        li.classList.remove("crew-current");
        li.classList.add("crew-done");
        var next = li.nextElementSibling;
        while (next && !next.classList.contains("crew-trip")) next = next.nextElementSibling;
        if (next) next.classList.add("crew-current");
      }
    } else {
      show(li.querySelector('form.crew-step[data-step="' + tap.step + '"]'), true);
      if (status) status.textContent = STATUS_BEFORE[tap.step];
      if (tap.step === "back_in_service") {
        document.querySelectorAll(".crew-trip.crew-current").forEach(function (c) { c.classList.remove("crew-current"); });
        li.classList.remove("crew-done");
        li.classList.add("crew-current");
      }
    }
  }

  function expireUndos() {
    var now = Date.now();
    document.querySelectorAll("form.crew-undo[data-until]").forEach(function (f) {
      if (Date.parse(f.getAttribute("data-until")) <= now) {
        f.hidden = true;
        f.removeAttribute("data-until");
      }
    });
  }

  // --- sending, in order, once --------------------------------------------------------------

  var sending = false;

  function refresh() {
    var panel = document.getElementById("crew-trips");
    if (panel && window.htmx) window.htmx.trigger(panel, "crew-refresh");
  }

  function remember() {
    // Keep the service worker's copy of the page current (for a reload without coverage).
    if (navigator.serviceWorker && navigator.serviceWorker.controller && navigator.onLine) {
      fetch(window.location.pathname, {credentials: "same-origin"}).catch(function () {});
    }
  }

  function flush() {
    var queue = load();
    say(pendingText(queue));
    if (sending || !queue.length) return;
    var url = root() ? root().getAttribute("data-taps-url") : null;
    if (!url) return;
    sending = true;
    var tap = queue[0];
    fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken()},
      body: JSON.stringify(tap)
    }).then(function (response) {
      var json = (response.headers.get("Content-Type") || "").indexOf("application/json") === 0;
      if (!json || response.status >= 500) throw new Error("no answer: " + response.status);
      return response.json().then(function (body) { return [response.status, body]; });
    }).then(function (answer) {
      save(load().filter(function (t) { return t.key !== tap.key; }));
      if (answer[0] !== 200) notice(answer[1].message || "The server refused this tap.");
      sending = false;
      if (load().length) {
        flush();
      } else {
        say("");
        refresh();
      }
    }).catch(function () {
      sending = false;
      say(navigator.onLine ? pendingText(load()).replace("being sent…", "waiting; sending again shortly.")
                           : pendingText(load()));
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target.closest ? event.target.closest("form.crew-tap") : null;
    if (!form || !root()) return;
    event.preventDefault();
    var tap = {
      key: newKey(),
      trip: form.elements.trip.value,
      act: form.elements.act.value,
      step: form.elements.step.value,
      tapped_at: new Date().toISOString()
    };
    var queue = load();
    queue.push(tap);
    save(queue);
    apply(tap);
    flush();
  });

  // A live refresh must not undo what the phone already shows of taps not yet answered.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "crew-trips" && load().length) event.detail.shouldSwap = false;
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail && event.detail.target && event.detail.target.id === "crew-trips") {
      expireUndos();
      remember();
    }
  });

  // --- the shift's end and signing out: nothing of the shift stays on the phone --------------

  function clearTrips() {
    var jobs = [];
    if (window.caches) {
      jobs.push(window.caches.keys().then(function (names) {
        return Promise.all(names.filter(function (n) { return n.indexOf(CACHE_PREFIX) === 0; })
          .map(function (n) { return window.caches.delete(n); }));
      }));
    }
    return Promise.all(jobs);
  }

  function clearAll() {
    try {
      window.localStorage.removeItem(QUEUE);
      window.localStorage.removeItem(EXPIRES);
      window.sessionStorage.clear();
    } catch (e) { /* storage may be off */ }
    var jobs = [clearTrips()];
    if (navigator.serviceWorker && navigator.serviceWorker.getRegistrations) {
      jobs.push(navigator.serviceWorker.getRegistrations().then(function (regs) {
        return Promise.all(regs.map(function (r) { return r.unregister(); }));
      }));
    }
    if (window.indexedDB && window.indexedDB.databases) {
      jobs.push(window.indexedDB.databases().then(function (dbs) {
        dbs.forEach(function (d) { if (d.name) window.indexedDB.deleteDatabase(d.name); });
      }));
    }
    return Promise.all(jobs).catch(function () {});
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || !form.getAttribute || !/\/logout$/.test(form.getAttribute("action") || "")) return;
    if (form.getAttribute("data-cleared") === "1") return;
    var waiting = load().length;
    if (waiting && !window.confirm(waiting + " tap(s) have not reached the server yet. Sign out and lose them?")) {
      event.preventDefault();
      return;
    }
    event.preventDefault();
    clearAll().then(function () {
      form.setAttribute("data-cleared", "1");
      form.submit();
    });
  }, true);

  function checkExpiry() {
    var box = root();
    var ends = box ? Date.parse(box.getAttribute("data-shift-ends")) : NaN;
    if (!isNaN(ends)) window.localStorage.setItem(EXPIRES, String(ends));
    var stored = Number(window.localStorage.getItem(EXPIRES));
    if (stored && Date.now() >= stored) {
      clearTrips();
      window.localStorage.removeItem(EXPIRES);
      var list = document.getElementById("crew-trips");
      if (list) list.textContent = "Your shift has ended: the trips kept on this phone are cleared. Reload to start a new shift.";
    }
  }

  function start() {
    if (!root()) return;
    checkExpiry();
    load().forEach(apply);  // a page read from the phone's copy shows the taps it has not sent
    expireUndos();
    if (navigator.serviceWorker) {
      navigator.serviceWorker.register(root().getAttribute("data-sw-url") || "/crew/sw.js", {scope: "/crew/"})
        .catch(function () {});
    }
    window.addEventListener("online", flush);
    window.addEventListener("offline", function () { say(pendingText(load()) || "No coverage: taps are kept on this phone."); });
    window.setInterval(function () { expireUndos(); checkExpiry(); flush(); }, 5000);
    if (!navigator.onLine) say("No coverage: taps are kept on this phone.");
    flush();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}());
