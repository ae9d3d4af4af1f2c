// The email integration form: show only the chosen ESP's fields. Which fields belong to
// which ESP is the form's (Python) data, on the ESP select's data-esp-fields attribute.
"use strict";
(function () {
  function rowOf(form, name) {
    const input = form.querySelector('[name="' + name + '"]');
    return input ? input.closest(".form-row, .fieldBox") : null;
  }

  function apply(select) {
    const byEsp = JSON.parse(select.dataset.espFields || "{}");
    for (const [esp, names] of Object.entries(byEsp)) {
      for (const name of names) {
        const row = rowOf(select.form, name);
        if (row) {
          row.hidden = esp !== select.value;
        }
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const select of document.querySelectorAll("select[data-esp-fields]")) {
      apply(select);
      select.addEventListener("change", function () {
        apply(select);
      });
    }
  });
})();
