// The live job page: follows the job's event stream (/dashboard/jobs/<id>/events, the same
// stream as the API's, authenticated by the session cookie) and refreshes the status card on
// each event; once the job ends the page reloads to show its results. If the stream cannot be
// opened (e.g. the account holds too many), the card is polled instead.
(function () {
  "use strict";

  const card = document.getElementById("job-status");
  if (!card || !card.dataset.eventsUrl) return;
  const liveUrl = card.dataset.liveUrl;
  let ended = false;

  // One fetch at a time: the replay of a job's past events when the stream opens arrives in
  // a burst, and the card only needs the latest state.
  let fetching = null;
  let stale = false;
  function refresh() {
    if (fetching) { stale = true; return; }
    // The fragment answers HX-Refresh once the job has ended, which reloads the page.
    fetching = htmx.ajax("GET", liveUrl, { target: "#job-status", swap: "outerHTML" }).finally(() => {
      fetching = null;
      if (stale) { stale = false; refresh(); }
    });
  }

  function end() {
    if (ended) return;
    ended = true;
    source.close();
    window.location.reload();
  }

  const source = new EventSource(card.dataset.eventsUrl);
  source.addEventListener("stage", refresh);
  for (const name of ["completed", "failed", "cancelled"]) source.addEventListener(name, end);
  // A stream that reached its maximum lifetime ends with `timeout`: the browser reconnects by
  // itself, sending Last-Event-ID, so nothing is missed.
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED && !ended) {
      ended = true;
      setInterval(refresh, 2000);
    }
  });
})();
