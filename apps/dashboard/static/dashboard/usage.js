// Usage charts from the page's embedded usage summary (apps.usage.selectors.usage_summary).
(function () {
  "use strict";
  const summary = JSON.parse(document.getElementById("usage-data").textContent);
  const blue = "#3b6fd8", amber = "#e59a2b";

  function bars(id, labels, requests, credits, horizontal) {
    new Chart(document.getElementById(id), {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: "Requests", data: requests, backgroundColor: blue },
          { label: "Credits", data: credits, backgroundColor: amber },
        ],
      },
      options: { indexAxis: horizontal ? "y" : "x", responsive: true, animation: false, scales: { y: { beginAtZero: true } } },
    });
  }

  bars("chart-daily", summary.daily.map((d) => d.date), summary.daily.map((d) => d.requests), summary.daily.map((d) => d.credits_used));
  bars("chart-models", summary.by_model.map((m) => m.model), summary.by_model.map((m) => m.requests), summary.by_model.map((m) => m.credits_used));
  bars("chart-endpoints", summary.by_endpoint.map((e) => e.endpoint), summary.by_endpoint.map((e) => e.requests), summary.by_endpoint.map((e) => e.credits_used), true);
  document.body.dataset.chartsReady = "true";
})();
