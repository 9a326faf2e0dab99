// Patrol charts (back office). Reads /patrol/data.json; the tables on the page hold the same
// numbers for screen readers and for anyone without JavaScript.
(function () {
  "use strict";
  var daysCanvas = document.getElementById("chart-patrol-days");
  if (!daysCanvas || typeof window.Chart === "undefined") return;
  var COLORS = { pages: "#1565c0", media: "#6a1b9a", matches: "#c62828", errors: "#ef6c00", blocked: "#757575" };

  function chart(canvas, data, keys, type) {
    return new window.Chart(canvas, {
      type: type,
      data: {
        labels: data.days.map(function (r) { return r.day; }),
        datasets: keys.map(function (k) {
          // slim bars and visible points even with one day of data
          return { label: data.labels[k], backgroundColor: COLORS[k], borderColor: COLORS[k], maxBarThickness: 32,
                   pointRadius: 3, data: data.days.map(function (r) { return r[k]; }) };
        })
      },
      options: { responsive: true, maintainAspectRatio: false, animation: false,   // the figure's CSS height rules
                 scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }
    });
  }

  fetch(daysCanvas.dataset.source, { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (resp) { if (!resp.ok) throw new Error(resp.status); return resp.json(); })
    .then(function (data) {
      if (!data.days.length) {             // nothing patrolled yet: no empty frames
        document.querySelectorAll("figure.chart").forEach(function (f) { f.hidden = true; });
        document.body.dataset.chartsReady = "1";
        return;
      }
      window.kesuCharts = [chart(daysCanvas, data, ["pages", "media", "matches"], "bar")];
      var problems = document.getElementById("chart-patrol-problems");
      if (problems) window.kesuCharts.push(chart(problems, data, ["errors", "blocked"], "line"));
      document.body.dataset.chartsReady = "1";
    })
    .catch(function () { document.body.dataset.chartsReady = "error"; });
})();
