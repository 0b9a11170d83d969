// Analytics charts: drawn with the vendored Chart.js from the JSON data block the server
// rendered (<script type="application/json" id="analytics-charts">). The same numbers are in
// the tables next to each chart, so the page reads completely without this script.
(function () {
  "use strict";

  // Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
  var PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000"];

  function dataset(spec, ds, index) {
    var colour = PALETTE[index % PALETTE.length];
    return {
      label: ds.label,
      data: ds.data,
      backgroundColor: colour,
      borderColor: colour,
      borderWidth: spec.type === "line" ? 2 : 0,
      pointRadius: spec.type === "line" ? 3 : 0,
      spanGaps: true,
      tension: 0.2
    };
  }

  function draw(spec) {
    var canvas = document.getElementById("chart-" + spec.id);
    if (!canvas) return;
    new window.Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (ds, i) { return dataset(spec, ds, i); })
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { display: spec.datasets.length > 1 } },
        scales: {
          x: { stacked: spec.stacked },
          y: { stacked: spec.stacked, beginAtZero: true, title: { display: true, text: spec.y } }
        }
      }
    });
  }

  function drawAll() {
    var block = document.getElementById("analytics-charts");
    if (!block || !window.Chart) return;
    JSON.parse(block.textContent).forEach(draw);
  }

  // The contents bar opens the folded section it jumps to (before the browser scrolls to it),
  // and so does an address with a section's #fragment.
  function openSection(hash) {
    if (!hash || hash.length < 2) return;
    var target = document.getElementById(decodeURIComponent(hash.slice(1)));
    var details = target && target.querySelector(":scope > details");
    if (details) details.open = true;
  }

  function start() {
    drawAll();
    document.addEventListener("click", function (event) {
      var link = event.target.closest && event.target.closest(".analytics-nav a[href^='#']");
      if (link) openSection(link.getAttribute("href"));
    });
    window.addEventListener("hashchange", function () { openSection(window.location.hash); });
    openSection(window.location.hash);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
