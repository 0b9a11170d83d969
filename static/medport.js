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
