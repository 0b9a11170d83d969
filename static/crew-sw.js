// The crew page's service worker (served as /crew/sw.js, scope /crew/).
//
// It keeps, in one cache, the crew page, the unit's trips panel and the static files the page
// needs, and nothing else: no other page, no other role's data, no request but a GET of those
// paths.  Online, every such request goes to the network and the answer replaces the copy;
// without coverage the copy is answered.  A copy of the page or the trips carries the shift's
// end (X-Crew-Shift-Ends, milliseconds since the epoch): past it, the copy is deleted, not shown.
"use strict";

var CACHE = "medport-crew-v1";
var PAGES = ["/crew/", "/crew/panel"];
var SHELL = ["/static/medport.css", "/static/crew.css", "/static/medport.js", "/static/crew.js", "/static/favicon.svg",
             "/static/vendor/htmx-2.0.11.min.js", "/static/vendor/htmx-ext-sse-2.2.4.min.js",
             "/crew/manifest.webmanifest"];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) {
    return cache.addAll(SHELL).then(function () {
      return fetch("/crew/", {credentials: "same-origin"}).then(function (response) {
        if (keepable(response) && response.headers.get("X-Crew-Shift-Ends")) return cache.put("/crew/", response);
        return undefined;
      }).catch(function () {});
    });
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (n) { return n.indexOf("medport-crew") === 0 && n !== CACHE; })
      .map(function (n) { return caches.delete(n); }));
  }).then(function () { return self.clients.claim(); }));
});

function keepable(response) {
  // Only the crew's own page with its shift: not a redirect to sign in, not an error, not empty.
  return response && response.ok && response.status === 200 && !response.redirected &&
    (response.type === "basic" || response.type === "default");
}

function expired(response) {
  var ends = Number(response.headers.get("X-Crew-Shift-Ends"));
  return ends && Date.now() >= ends;
}

function offlineAnswer(text) {
  return new Response("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>MedPort crew</title>" +
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head><body><main><p>" + text +
    "</p></main></body></html>", {status: 503, headers: {"Content-Type": "text/html; charset=utf-8"}});
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  var page = PAGES.indexOf(url.pathname) !== -1 && !url.search;
  var shell = SHELL.indexOf(url.pathname) !== -1;
  if (!page && !shell) return;  // everything else goes to the network, untouched and unkept
  event.respondWith(fetch(request).then(function (response) {
    if (keepable(response) && (shell || response.headers.get("X-Crew-Shift-Ends"))) {
      var copy = response.clone();
      caches.open(CACHE).then(function (cache) { return cache.put(url.pathname, copy); });
    }
    return response;
  }).catch(function () {
    return caches.open(CACHE).then(function (cache) {
      return cache.match(url.pathname).then(function (kept) {
        if (!kept) return page ? offlineAnswer("No coverage, and nothing of your shift is kept on this phone.")
                               : Response.error();
        if (page && expired(kept)) {
          return cache.delete(url.pathname).then(function () {
            return offlineAnswer("Your shift has ended: the trips kept on this phone are cleared.");
          });
        }
        return kept;
      });
    });
  }));
});
