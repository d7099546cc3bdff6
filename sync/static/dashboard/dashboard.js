/* Draws every <canvas data-chart="name"> from the JSON the page carries in #dashboard-charts.
   Chart.js is loaded from our own static files before this script: the page works offline. */
(function () {
  "use strict";
  const source = document.getElementById("dashboard-charts");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  const specs = JSON.parse(source.textContent);

  function options(spec) {
    const value = {beginAtZero: true, stacked: Boolean(spec.stacked), title: {display: true, text: spec.unit}};
    if (spec.max) {
      value.suggestedMax = spec.max;
    }
    const category = {stacked: Boolean(spec.stacked), ticks: {autoSkip: true, maxRotation: 0}};
    return {
      animation: false, // the final frame at once: for people in a hurry, for tests and screenshots
      maintainAspectRatio: false,
      indexAxis: spec.horizontal ? "y" : "x",
      scales: spec.horizontal ? {x: value, y: category} : {x: category, y: value},
      plugins: {legend: {display: spec.datasets.length > 1}},
    };
  }

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    const spec = specs[canvas.dataset.chart];
    if (!spec) {
      return;
    }
    const datasets = spec.datasets.map(function (d) {
      return {label: d.label, data: d.data, backgroundColor: d.color, borderColor: d.color};
    });
    new Chart(canvas, {type: "bar", data: {labels: spec.labels, datasets: datasets}, options: options(spec)});
  });
})();
