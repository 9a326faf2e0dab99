// Statistics charts (back office). Reads the numbers from /stats/data.json; the tables on the
// page hold the same numbers for screen readers and for anyone without JavaScript.
(function () {
  "use strict";
  var yearsCanvas = document.getElementById("chart-years");
  if (!yearsCanvas || typeof window.Chart === "undefined") return;
  var COLORS = { removed: "#2e7d32", partly_removed: "#9ccc65", still_up: "#c62828", on_hold: "#757575", requested: "#1565c0", ongoing: "#90a4ae" };

  function stacked(canvas, labels, rows, data) {
    return new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: data.outcomes.map(function (k) {
          // a bar never grows wider than this, so one year of data draws one slim bar, not a wall
          return { label: data.labels[k], backgroundColor: COLORS[k], maxBarThickness: 48,
                   data: rows.map(function (r) { return r[k]; }) };
        })
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,   // the figure's CSS height rules
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { tooltip: { callbacks: { footer: function (items) {
          var r = rows[items[0].dataIndex]; return data.labels.requests + ": " + r.requests;
        } } } }
      }
    });
  }

  fetch(yearsCanvas.dataset.source, { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (resp) { if (!resp.ok) throw new Error(resp.status); return resp.json(); })
    .then(function (data) {
      if (!data.years.length) {            // nothing to draw: no empty 300 px frame
        document.querySelectorAll("figure.chart").forEach(function (f) { f.hidden = true; });
        document.body.dataset.chartsReady = "1";
        return;
      }
      window.kesuCharts = [
        stacked(yearsCanvas, data.years.map(function (r) { return String(r.year); }), data.years, data)
      ];
      var cat = document.getElementById("chart-categories");
      if (cat) {
        window.kesuCharts.push(stacked(cat, data.by_category.map(function (r) { return r.label || r.category; }), data.by_category, data));
      }
      document.body.dataset.chartsReady = "1";
    })
    .catch(function () { document.body.dataset.chartsReady = "error"; });
})();
