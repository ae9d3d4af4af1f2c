// A broadcast's live progress: polls its JSON endpoint (one GROUP BY on the server) every
// couple of seconds until the broadcast is completed or cancelled, and updates the counts.
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("broadcast-panel-config").textContent);
  const panel = document.getElementById("broadcast-progress");
  const bar = document.getElementById("broadcast-bar");
  const reasons = document.getElementById("broadcast-skip-reasons");

  function show(progress) {
    panel.querySelectorAll("[data-count]").forEach(function (element) {
      const value = progress[element.dataset.count];
      element.textContent = value === null || value === undefined ? "—" : String(value);
    });
    bar.max = progress.recipients || Math.max(progress.made, 1);
    bar.value = progress.made;
    reasons.replaceChildren();
    const entries = Object.entries(progress.skippedByReason);
    for (const [reason, count] of entries) {
      const item = document.createElement("li");
      item.textContent = reason + ": " + count;
      reasons.appendChild(item);
    }
    if (!entries.length) {
      const item = document.createElement("li");
      item.className = "none";
      item.textContent = "none";
      reasons.appendChild(item);
    }
    panel.dataset.status = progress.status;
    if (progress.done) {
      const form = document.getElementById("broadcast-cancel-form");
      if (form) form.remove();
    }
  }

  function poll() {
    fetch(config.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("progress: HTTP " + response.status);
        return response.json();
      })
      .then(function (progress) {
        show(progress);
        if (!progress.done) window.setTimeout(poll, config.intervalMs);
      })
      .catch(function () {
        window.setTimeout(poll, config.intervalMs * 2);
      });
  }

  show(config.progress);
  if (!config.progress.done) window.setTimeout(poll, config.intervalMs);
})();
