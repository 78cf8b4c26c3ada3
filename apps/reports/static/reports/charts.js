/* Concord's dashboard charts: every <canvas data-chart="kind" data-source="id"> is drawn
   with Chart.js (served by the project) from the JSON in <script id="id">. Kinds:
   "hourly" (counts as bars, rates as a line on a 0-100% axis, time on the x axis with its
   time zone), "doughnut" (label source mix), "accuracy" (bars with their 95% interval). */
(function () {
  "use strict";
  if (typeof Chart === "undefined") return;
  var palette = ["#3558d4", "#e67e22", "#1e8e3e", "#8e44ad", "#c0392b", "#16a085"];
  Chart.defaults.font.family = "system-ui, sans-serif";
  Chart.defaults.animation = false;

  function shortTime(iso, zone) {
    // "2026-12-04T15:00:00+00:00" -> "15:00"; the axis title carries the zone.
    return iso.length > 10 ? iso.slice(11, 16) : iso;
  }

  function hourly(canvas, data) {
    var datasets = [];
    var i = 0;
    Object.keys(data.series || {}).forEach(function (name) {
      datasets.push({ type: "bar", label: name, data: data.series[name], yAxisID: "y",
        backgroundColor: palette[i++ % palette.length] });
    });
    Object.keys(data.rates || {}).forEach(function (name) {
      datasets.push({ type: "line", label: name, yAxisID: "rate", spanGaps: true,
        borderColor: palette[i % palette.length], backgroundColor: palette[i++ % palette.length],
        data: data.rates[name].map(function (v) { return v === null ? null : 100 * v; }) });
    });
    var hasRates = Object.keys(data.rates || {}).length > 0;
    var scales = {
      x: { title: { display: true, text: data.time_zone ? "hour (" + data.time_zone + ")" : "day" },
           ticks: { maxRotation: 0, autoSkip: true } },
      y: { beginAtZero: true, title: { display: true, text: "count" }, ticks: { precision: 0 } }
    };
    if (hasRates) {
      scales.rate = { position: "right", min: 0, max: 100, grid: { drawOnChartArea: false },
                      title: { display: true, text: "rate (%)" } };
    }
    return new Chart(canvas, {
      data: { labels: data.labels.map(function (h) { return shortTime(h, data.time_zone); }),
              datasets: datasets },
      options: { responsive: true, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
                 scales: scales }
    });
  }

  function doughnut(canvas, data) {
    return new Chart(canvas, {
      type: "doughnut",
      data: { labels: data.labels, datasets: [{ data: data.values, backgroundColor: palette }] },
      options: { responsive: true, maintainAspectRatio: false }
    });
  }

  function accuracy(canvas, data) {
    var pct = function (v) { return v === null ? null : 100 * v; };
    return new Chart(canvas, {
      data: {
        labels: data.labels,
        datasets: [
          { type: "bar", label: "gold accuracy (%)", data: data.values.map(pct), backgroundColor: palette[0] },
          { type: "line", label: "95% low", data: data.low.map(pct), showLine: false, borderColor: palette[4], backgroundColor: palette[4], pointStyle: "line", pointRadius: 8 },
          { type: "line", label: "95% high", data: data.high.map(pct), showLine: false, borderColor: palette[2], backgroundColor: palette[2], pointStyle: "line", pointRadius: 8 }
        ]
      },
      options: { responsive: true, maintainAspectRatio: false,
                 scales: { y: { min: 0, max: 100, title: { display: true, text: "gold accuracy (%)" } },
                           x: { title: { display: true, text: "worker" } } } }
    });
  }

  var kinds = { hourly: hourly, doughnut: doughnut, accuracy: accuracy };
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var source = document.getElementById(canvas.dataset.source);
    var draw = kinds[canvas.dataset.chart];
    if (!source || !draw) return;
    var chart = draw(canvas, JSON.parse(source.textContent));
    canvas.dataset.drawn = chart ? "1" : "";
  });
})();
