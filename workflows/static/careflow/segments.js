/* careflow segments: the segment's filter built with the query builder (query-builder.js)
 * over the segment fields, and its live count.
 *
 * The form's own JSON box (`id_filter`) is what is saved; with JavaScript it is hidden and the
 * builder writes it (the builder's "Advanced (JSON)" view edits the same text). Every edit asks
 * the server how many patients the filter chooses, at most one request per pause in typing
 * (debounced), and shows {"count": n} or the server's {"error": …}. No inline handlers.
 */
(function () {
  "use strict";

  const DEBOUNCE_MS = 300;

  document.addEventListener("DOMContentLoaded", () => {
    const source = document.getElementById("careflow-segment-config");
    const textarea = document.getElementById("id_filter");
    const mount = document.getElementById("cf-segment-builder");
    if (!source || !mount) return;
    const config = JSON.parse(source.textContent);
    const form = mount.closest("form");
    const csrf = form ? form.querySelector("input[name=csrfmiddlewaretoken]") : null;
    const countBox = document.getElementById("cf-segment-count");
    const clinic = document.getElementById("id_organization");
    // Read-only pages have no box: the builder shows the saved filter, and edits go nowhere.
    const readonlyText = document.querySelector(".field-filter .readonly");
    let text = textarea ? textarea.value : readonlyText ? readonlyText.textContent.trim() : "";
    if (textarea) textarea.closest(".form-row").hidden = true;

    const query = window.CareflowQuery.create({
      id: "cf-segment-filter",
      text: text,
      state: {},
      fields: () => config.fields,
      operators: config.operators,
      noun: "filter",
      emptyText: "No conditions: every patient of the clinic.",
      rows: 4,
      placeholder: 'e.g. {"customer.provinceCode": "FL"}',
      onChange: (written) => {
        text = written;
        if (textarea) textarea.value = written;
        schedule();
      },
    });
    mount.replaceWith(query.element);

    let timer = null;
    let asked = 0;
    function schedule() {
      if (timer) window.clearTimeout(timer);
      countBox.textContent = "Counting…";
      timer = window.setTimeout(count, DEBOUNCE_MS);
    }
    async function count() {
      if (!csrf) return;
      asked += 1;
      const mine = asked;
      let answer;
      try {
        const response = await fetch(config.countUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrf.value },
          body: JSON.stringify({ filter: text, organization: clinic ? clinic.value : null }),
        });
        answer = await response.json();
      } catch (error) {
        answer = { error: "The count is not available right now." };
      }
      if (mine !== asked) return; // a later edit's answer is the one to show
      countBox.classList.toggle("errornote", "error" in answer);
      countBox.textContent =
        "error" in answer
          ? answer.error
          : `${answer.count} patient${answer.count === 1 ? "" : "s"} in this segment now.`;
      countBox.dataset.count = "error" in answer ? "" : String(answer.count);
    }
    if (clinic) clinic.addEventListener("change", schedule);
    schedule();
  });
})();
