/* careflow workflow builder.
 *
 * Renders and edits the workflow definition ({trigger, filter, steps, enrollment}) described by the
 * server's schema (Python is the source of truth for step types, adapters and their
 * parameters), keeps the form's hidden JSON field in sync, and asks the server to validate,
 * preview messages, draw the diagram and dry-run. Plain script, no build step; ordering by
 * drag uses the vendored SortableJS, ordering by keyboard uses the up/down buttons; filters
 * and conditions are edited with query-builder.js (window.CareflowQuery).
 */
(function () {
  "use strict";

  const configNode = document.getElementById("careflow-builder-config");
  const root = document.getElementById("careflow-builder");
  if (!configNode || !root) return;
  const config = JSON.parse(configNode.textContent);
  const schema = config.schema;
  const urls = config.urls;
  const form = root.closest("form");
  // A definition typed by hand that is not JSON stays in the plain text field, with its error.
  if (config.definition === null) return;
  const fallback = document.querySelector("fieldset.careflow-definition-fallback");
  if (fallback) fallback.hidden = true;
  // Users who may only view the workflow have no field to write to: the builder shows the
  // definition read-only.
  const definitionField =
    form.querySelector("textarea[name=definition]") || document.createElement("textarea");
  root.hidden = false;

  const $ = (id) => document.getElementById(id);
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  // --- small DOM helpers ----------------------------------------------------------------
  const { el, option } = window.CareflowDom;  // dom.js
  function fillList(list, messages) {
    list.replaceChildren(...(messages || []).map((text) => el("li", { text: text })));
  }
  function announce(text) {
    $("cf-announce").textContent = text;
  }
  function debounce(fn, ms) {
    let timer;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }
  // Durations are stored in seconds and edited in the largest unit that divides them.
  const UNITS = [["minutes", 60], ["hours", 3600], ["days", 86400]];
  function splitSeconds(value) {
    const text = String(value === undefined || value === null ? "" : value).trim();
    const total = Number(text);
    if (text === "" || total === 0) return { count: text, size: 3600, negative: false };
    if (!Number.isInteger(total)) return { count: text, size: 1, negative: false };
    const size = [86400, 3600, 60].find((unit) => total % unit === 0) || 1;
    return { count: String(Math.abs(total) / size), size: size, negative: total < 0 };
  }
  function joinSeconds(count, size, sign) {
    const text = String(count).trim();
    if (text === "") return "";
    const seconds = Number(text) * size * sign;
    if (!Number.isFinite(seconds)) return text;  // the server says what is wrong with it
    const rounded = Math.round(seconds);
    // 1.1 hours is 3960.0000000000005 seconds in floating point: still a whole number.
    return String(Math.abs(seconds - rounded) < 1e-6 ? rounded : seconds);
  }
  const VARIABLE = "__variable__";
  const OTHER = "__other__";
  async function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify(body),
    });
  }

  // --- the schema -----------------------------------------------------------------------
  const stepTypes = Object.fromEntries(schema.stepTypes.map((t) => [t.name, t]));
  const adapters = Object.fromEntries(schema.adapters.map((a) => [a.name, a]));
  const functionOf = (step) =>
    (adapters[step.adapter] ? adapters[step.adapter].functions : []).find(
      (f) => f.name === step.function
    );
  function parametersOf(step) {
    if (step.type === "adapter") return functionOf(step) ? functionOf(step).parameters : [];
    return stepTypes[step.type] ? stepTypes[step.type].parameters : [];
  }
  const queryOperators = schema.query.operators;
  function triggerFields() {
    const index = schema.query.fieldSetOf[state.trigger];
    return index === undefined ? [] : schema.query.fieldSets[index];
  }
  function conditionFields(step) {
    // Tested against an earlier step's result (its context): no schema, paths are typed.
    if ((step.parameters.context || "") !== "") return [];
    const earlier = [];
    for (let number = 1; number <= state.steps.indexOf(step); number += 1) {
      earlier.push({
        path: `history.${number}.status`,
        type: "string",
        description: `What step ${number} did: succeeded, skipped or failed.`,
        group: "Earlier steps",
        list: false,
        example: "succeeded",
      });
    }
    return triggerFields().concat(earlier);
  }
  function titleOf(step) {
    if (step.type !== "adapter") return stepTypes[step.type] ? stepTypes[step.type].label : step.type;
    const adapter = adapters[step.adapter];
    const fn = functionOf(step);
    if (adapter && fn) return `${adapter.label} → ${fn.label}`;
    return adapter ? adapter.label : "Adapter action";
  }

  // --- state: what the admin is building ------------------------------------------------
  let nextKey = 1;
  function newStep(data) {
    const parameters = {};
    Object.entries(data.parameters || {}).forEach(([name, value]) => {
      parameters[name] = typeof value === "string" ? value : JSON.stringify(value);
    });
    return {
      key: nextKey++,
      id: data.id === undefined ? null : data.id,
      type: data.type || "adapter",
      adapter: data.adapter || "",
      function: data.function || "",
      parameters: parameters,
      purpose: data.purpose || "transactional",
      urgent: Boolean(data.urgent),
    };
  }
  const initial = config.definition || {};
  const state = {
    trigger: initial.trigger || "",
    filter:
      typeof initial.filter === "string" || !initial.filter
        ? initial.filter || ""
        : JSON.stringify(initial.filter, null, 2),
    steps: (initial.steps || []).map(newStep),
    // The goal and exit conditions, as the definition carries them (filters as JSON text).
    goal: Object.assign({ event: "", filter: "", scope: "patient", windowHours: 168 }, initial.goal || {}),
    exits: (initial.exits || []).map((item) => Object.assign({ event: "", filter: "", scope: "patient" }, item)),
    // The filter's query builder keeps its conditions here (also those not complete yet).
    filterQuery: {},
    enrollment: Object.assign({ rule: "every", days: null, exclusive: false }, initial.enrollment || {}),
  };
  let dirty = config.errors !== null;
  let submitting = false;
  let lastFieldId = null;
  const previewsByKey = {};
  const seq = { validate: 0, diagram: 0, preview: 0 };

  function definition() {
    return {
      trigger: state.trigger,
      filter: state.filter,
      steps: state.steps.map((s) => ({
        id: s.id,
        type: s.type,
        adapter: s.type === "adapter" ? s.adapter : "",
        function: s.type === "adapter" ? s.function : "",
        parameters: Object.fromEntries(
          parametersOf(s)
            .filter((p) => (s.parameters[p.name] || "") !== "")
            .map((p) => [p.name, s.parameters[p.name]])
            /* Language variants (workflows.variants) are kept as they came: not a field. */
            .concat(s.type === "adapter" && s.parameters.variants ? [["variants", s.parameters.variants]] : [])
        ),
        purpose: s.purpose,
        urgent: s.type === "adapter" && s.urgent,
      })),
      goal: state.goal,
      exits: state.exits,
      enrollment: {
        rule: state.enrollment.rule,
        // Only the "per N days" rule has days; the server says what is wrong with a value.
        days: state.enrollment.rule === schema.enrollment.period ? state.enrollment.days : null,
        exclusive: state.enrollment.exclusive,
      },
    };
  }
  function sync() {
    definitionField.value = JSON.stringify(definition(), null, 2);
  }
  function changed(options) {
    dirty = true;
    sync();
    refreshChecks();
    if (!options || options.previews !== false) refreshPreviews();
  }

  // --- trigger and filter ---------------------------------------------------------------
  const triggerSelect = $("cf-trigger");
  function renderTrigger() {
    triggerSelect.replaceChildren(option("", "Choose a trigger…"));
    let known = false;
    schema.triggers.forEach((group) => {
      const optgroup = el("optgroup", { label: group.category });
      group.events.forEach((event) => {
        known = known || event.name === state.trigger;
        optgroup.append(option(event.name, `${event.name} — ${event.description}`));
      });
      triggerSelect.append(optgroup);
    });
    if (state.trigger && !known) triggerSelect.append(option(state.trigger, state.trigger));
    triggerSelect.value = state.trigger;
    describeTrigger();
  }
  function describeTrigger() {
    const event = schema.triggers
      .flatMap((group) => group.events.map((e) => Object.assign({ category: group.category }, e)))
      .find((e) => e.name === state.trigger);
    $("cf-trigger-description").textContent = event
      ? `${event.category}: ${event.description}`
      : "What starts a run of this workflow.";
  }
  triggerSelect.addEventListener("change", () => {
    state.trigger = triggerSelect.value;
    describeTrigger();
    loadVariables();
    // Another trigger, other fields (and types): queries are read again from their JSON.
    filterQuery.refresh();
    state.steps.forEach((step) => {
      if (step.queryState) step.queryState.root = null;
    });
    renderSteps(triggerSelect.id);
    changed();
  });
  const filterQuery = window.CareflowQuery.create({
    id: "cf-filter-builder",
    jsonId: "cf-filter",
    text: state.filter,
    state: state.filterQuery,
    fields: triggerFields,
    operators: queryOperators,
    noun: "filter",
    rows: 3,
    placeholder: 'e.g. {"order.totalAmount": {"$gte": 50}}',
    onChange: (text) => {
      state.filter = text;
      changed({ previews: false });
    },
  });
  $("cf-filter-mount").replaceWith(filterQuery.element);

  // --- enrollment: how often a patient may start a run (rules from the model's choices) ---
  const ruleSelect = $("cf-enrollment-rule");
  const daysInput = $("cf-enrollment-days");
  const exclusiveBox = $("cf-enrollment-exclusive");
  function renderEnrollment() {
    ruleSelect.replaceChildren(...schema.enrollment.rules.map(([value, label]) => option(value, label)));
    ruleSelect.value = state.enrollment.rule;
    daysInput.min = schema.enrollment.daysMin;
    daysInput.max = schema.enrollment.daysMax;
    daysInput.value = state.enrollment.days === null || state.enrollment.days === undefined ? "" : state.enrollment.days;
    exclusiveBox.checked = Boolean(state.enrollment.exclusive);
    showDays();
  }
  function showDays() {
    const period = state.enrollment.rule === schema.enrollment.period;
    $("cf-enrollment-days-field").hidden = !period;
    daysInput.required = period;
  }
  ruleSelect.addEventListener("change", () => {
    state.enrollment.rule = ruleSelect.value;
    showDays();
    changed({ previews: false });
  });
  daysInput.addEventListener("input", () => {
    const text = daysInput.value.trim();
    state.enrollment.days = text === "" ? null : /^\d+$/.test(text) ? Number(text) : text;
    changed({ previews: false });
  });
  exclusiveBox.addEventListener("change", () => {
    state.enrollment.exclusive = exclusiveBox.checked;
    changed({ previews: false });
  });

  /* Conditions (of the filter or a condition step) not complete yet: [{text, focus}]. */
  function queryProblems() {
    const found = filterQuery.problems().map((p) => Object.assign({}, p, { text: `Filter, ${p.text}` }));
    state.steps.forEach((step, index) => {
      if (step.type !== "condition" || !step.queryState) return;
      (step.queryState.problems || []).forEach((p) => found.push(Object.assign({}, p, { text: `Step ${index + 1}, ${p.text}` })));
    });
    return found;
  }

  // --- steps ----------------------------------------------------------------------------
  const list = $("cf-steps");

  function stepButton(text, label, className, disabled) {
    return el("button", {
      type: "button",
      class: `button ${className}`,
      "aria-label": label,
      title: label,
      disabled: disabled,
      text: text,
    });
  }

  function field(step, name, label, control, help, extra) {
    const id = control.id;
    const wrapper = el("div", { class: "cf-field", "data-param": name });
    wrapper.append(el("label", { for: id, class: "cf-label" + (extra && extra.required ? " cf-required" : ""), text: label }));
    wrapper.append(control);
    if (extra && extra.after) wrapper.append(extra.after);
    if (help) wrapper.append(el("p", { class: "cf-help", id: `${id}-help`, text: help }));
    wrapper.append(el("ul", { class: "errorlist cf-errors", id: `${id}-errors`, "data-errors-for": name }));
    control.setAttribute("aria-describedby", `${help ? id + "-help " : ""}${id}-errors`);
    return wrapper;
  }

  function stepTargetOptions(select, index, value) {
    const total = state.steps.length;
    select.append(option("end", "End the run"));
    for (let number = index + 2; number <= total; number += 1) {
      select.append(option(String(number), `Go to step ${number}`));
    }
    if (value && value !== "end" && !select.querySelector(`option[value="${CSS.escape(value)}"]`)) {
      select.append(option(value, `Step ${value} (not a later step)`));
    }
    select.value = value || "end";
  }

  function parameterControl(step, index, parameter) {
    const id = `cf-s${step.key}-${parameter.name}`;
    const value = step.parameters[parameter.name] || "";
    let control;
    if (parameter.widget === "textarea" || parameter.widget === "json") {
      control = el("textarea", {
        id: id,
        rows: parameter.rows || (parameter.widget === "json" ? 2 : 3),
        class: parameter.widget === "json" ? "cf-code" : "",
        spellcheck: parameter.widget === "json" ? "false" : null,
        placeholder: parameter.example || null,
      });
      control.value = value;
    } else if (parameter.widget === "select") {
      control = el("select", { id: id }, option("", "Choose…"));
      parameter.choices.forEach(([choice, label]) => control.append(option(choice, label)));
      control.value = value;
    } else if (parameter.widget === "step-target") {
      control = el("select", { id: id });
      stepTargetOptions(control, index, value);
    } else {
      control = el("input", {
        type: parameter.widget === "time" ? "time" : "text",
        id: id,
        placeholder: parameter.example || null,
        autocomplete: "off",
      });
      control.value = value;
    }
    control.dataset.param = parameter.name;
    if (parameter.templated) control.dataset.templated = "1";
    return control;
  }

  function visible(step, parameter) {
    return Object.entries(parameter.showWhen || {}).every(
      ([name, wanted]) => (step.parameters[name] || "") === wanted
    );
  }

  // --- parameters edited with more than one control ---------------------------------------
  // Each returns {control (the one the parameter's label names), after (the others)} and
  // writes the parameter itself.

  function durationControls(step, parameter, id) {
    const parts = splitSeconds(step.parameters[parameter.name]);
    const count = el("input", {
      type: "number",
      id: id,
      step: "any",
      inputmode: "decimal",
      class: "cf-duration-count",
      autocomplete: "off",
    });
    count.value = parts.count;
    const unit = el("select", { id: `${id}-unit`, class: "cf-duration-unit" });
    if (parts.size === 1) unit.append(option("1", "seconds"));
    UNITS.forEach(([label, size]) => unit.append(option(String(size), label)));
    unit.value = String(parts.size);
    const after = el(
      "span",
      { class: "cf-duration" },
      el("label", { for: unit.id, class: "cf-visually-hidden", text: `${parameter.label}: unit` }),
      unit
    );
    let direction = null;
    if (parameter.signed) {
      // An offset: before (stored negative) or after the date.
      direction = el("select", { id: `${id}-direction` }, option("-1", "before"), option("1", "after"));
      direction.value = parts.negative || parts.count === "" ? "-1" : "1";
      after.append(
        " ",
        el("label", { for: direction.id, class: "cf-visually-hidden", text: `${parameter.label}: before or after` }),
        direction,
        el("span", { text: " the date" })
      );
    }
    function update() {
      const sign = direction ? Number(direction.value) : 1;
      step.parameters[parameter.name] = joinSeconds(count.value, Number(unit.value), sign);
      changed({ previews: false });
    }
    count.addEventListener("input", update);
    unit.addEventListener("change", update);
    if (direction) direction.addEventListener("change", update);
    return { control: count, after: after };
  }

  /* A list to pick from, with "Other…" revealing a text box for what the list lacks. */
  function pickOrType(step, parameter, id, choices, other) {
    const value = step.parameters[parameter.name] || "";
    const listed = choices.some(([choice]) => choice === value);
    const typing = step.typing && step.typing[parameter.name] !== undefined
      ? step.typing[parameter.name]
      : other.isTyped(value, listed);
    const select = el("select", { id: id }, option("", other.empty));
    choices.forEach(([choice, label]) => select.append(option(choice, label)));
    if (value && !listed && !typing) select.append(option(value, `${value} ${other.unlisted}`));
    select.append(option(OTHER, other.label));
    select.value = typing ? OTHER : value;
    const text = el("input", {
      type: "text",
      id: `${id}-other`,
      placeholder: other.placeholder,
      autocomplete: "off",
      spellcheck: "false",
    });
    text.value = typing ? value : "";
    if (other.templated) text.dataset.templated = "1";
    const after = el(
      "div",
      { class: "cf-other", hidden: !typing },
      el("label", { for: text.id, class: "cf-label", text: other.textLabel }),
      text
    );
    select.addEventListener("change", () => {
      step.typing = Object.assign(step.typing || {}, { [parameter.name]: select.value === OTHER });
      step.parameters[parameter.name] = select.value === OTHER ? text.value : select.value;
      after.hidden = select.value !== OTHER;
      if (select.value === OTHER) text.focus();
      changed({ previews: false });
    });
    text.addEventListener("input", () => {
      step.parameters[parameter.name] = text.value;
      changed({ previews: false });
    });
    return { control: select, after: after };
  }

  function contextControl(step, index, parameter, id) {
    const value = step.parameters[parameter.name] || "";
    const select = el("select", { id: id }, option("", "The event's data (and earlier steps' outcomes)"));
    for (let number = 1; number <= index; number += 1) {
      select.append(option(`history.${number}.result`, `The result of step ${number}`));
    }
    if (value && !select.querySelector(`option[value="${CSS.escape(value)}"]`)) {
      select.append(option(value, `${value} (not an earlier step's result)`));
    }
    select.value = value;
    select.addEventListener("change", () => {
      step.parameters[parameter.name] = select.value;
      // Other data, other fields: the query is read again from its JSON.
      if (step.queryState) step.queryState.root = null;
      renderSteps(id);
      changed({ previews: false });
    });
    return { control: select, after: null };
  }

  function compositeControls(step, index, parameter) {
    const id = `cf-s${step.key}-${parameter.name}`;
    switch (parameter.widget) {
      case "duration":
        return durationControls(step, parameter, id);
      case "context":
        return contextControl(step, index, parameter, id);
      case "sender": {
        // The clinic's senders for this step's adapter, named as its function names them.
        const numbers = senders(step.adapter);
        const words = parameter.senders;
        return pickOrType(step, parameter, id, numbers.map((n) => [n, n]), {
          empty: numbers.length ? words.choose : words.none,
          unlisted: words.unlisted,
          label: "Use a variable…",
          textLabel: `${parameter.label} from a variable`,
          placeholder: "e.g. {{…}}",
          templated: true,
          isTyped: (value) => value.includes("{{"),
        });
      }
      case "date-field": {
        const dates = triggerFields().filter((f) => !f.list && (f.type === "date" || f.type === "datetime"));
        return pickOrType(step, parameter, id, dates.map((f) => [f.path, `${f.path} — ${f.description}`]), {
          empty: "Choose a date field…",
          unlisted: "(not in this trigger's data)",
          label: "Other path…",
          textLabel: `${parameter.label}: path`,
          placeholder: parameter.example || "",
          templated: false,
          isTyped: () => false,
        });
      }
      default:
        return null;
    }
  }

  function renderQuery(step, parameter) {
    const id = `cf-s${step.key}-${parameter.name}`;
    step.queryState = step.queryState || {};
    const query = window.CareflowQuery.create({
      id: `${id}-builder`,
      jsonId: id,
      param: parameter.name,
      text: step.parameters[parameter.name] || "",
      state: step.queryState,
      fields: () => conditionFields(step),
      operators: queryOperators,
      noun: "condition",
      rows: 2,
      placeholder: parameter.example || null,
      onChange: (text) => {
        step.parameters[parameter.name] = text;
        changed({ previews: false });
      },
    });
    const labelId = `${id}-label`;
    return el(
      "div",
      { class: "cf-field", "data-param": parameter.name, role: "group", "aria-labelledby": labelId },
      el("span", { class: "cf-label cf-required", id: labelId, text: parameter.label }),
      parameter.help ? el("p", { class: "cf-help", text: parameter.help }) : null,
      query.element,
      el("ul", { class: "errorlist cf-errors", id: `${id}-errors`, "data-errors-for": parameter.name })
    );
  }

  // --- "Wait for reply": branches, "anything else" and "no reply" --------------------------
  // Stored as JSON parameters (formats of workflows.replies); edited here as the parsed
  // objects, kept on the step, and written back as JSON text on every edit.
  const MATCHES = [["keywords", "Keywords"], ["number", "A number"], ["pattern", "A pattern"]];
  function parsed(text, fallback) {
    try {
      const value = JSON.parse(text);
      return value && typeof value === "object" ? value : fallback;
    } catch (error) {
      return fallback;
    }
  }
  function replyOf(step) {
    if (!step.reply) {
      const branches = parsed(step.parameters.branches || "[]", []);
      step.reply = {
        branches: Array.isArray(branches) ? branches : [],
        otherwise: parsed(step.parameters.otherwise || "{}", {}),
        no_reply: parsed(step.parameters.no_reply || "{}", {}),
      };
    }
    return step.reply;
  }
  function storeReply(step) {
    const reply = replyOf(step);
    step.parameters.branches = JSON.stringify(reply.branches);
    step.parameters.otherwise = JSON.stringify(reply.otherwise);
    step.parameters.no_reply = JSON.stringify(reply.no_reply);
  }
  function replyChanged(step) {
    storeReply(step);
    changed({ previews: false });
  }
  /* Where a branch goes: the next step, the end, or a later step (never back: no cycles).
   * Not set: a branch continues, "anything else" and "no reply" end (workflows.replies). */
  function gotoSelect(id, index, value, unset) {
    const number = index + 1;
    const total = state.steps.length;
    const select = el("select", { id: id });
    select.append(option("next", number < total ? `Continue with step ${number + 1}` : "Continue (the run ends)"));
    select.append(option("end", "End the run"));
    for (let target = number + 2; target <= total; target += 1) {
      select.append(option(String(target), `Go to step ${target}`));
    }
    const text = value === undefined || value === null || value === "" ? unset : String(value);
    if (!select.querySelector(`option[value="${CSS.escape(text)}"]`)) {
      select.append(option(text, `Step ${text} (not a later step)`));
    }
    select.value = text;
    return select;
  }
  const gotoValue = (text) => (/^\d+$/.test(text) ? Number(text) : text);
  function errorList(id, name) {
    return el("ul", { class: "errorlist cf-errors", id: `${id}-errors`, "data-errors-for": name });
  }
  /* A labelled control inside a branch. Validation reports a wait's problems on
   * "branches", "otherwise" or "no_reply", naming the branch: they show under its fieldset. */
  function replyField(id, name, label, control, help) {
    if (help) control.setAttribute("aria-describedby", `${id}-help`);
    return el(
      "div",
      { class: "cf-field", "data-param": name },
      el("label", { for: id, class: "cf-label", text: label }),
      control,
      help ? el("p", { class: "cf-help", id: `${id}-help`, text: help }) : null
    );
  }
  function textInput(id, value, placeholder) {
    const input = el("input", { type: "text", id: id, autocomplete: "off", placeholder: placeholder || null });
    input.value = value === undefined || value === null ? "" : String(value);
    return input;
  }

  function renderBranch(step, index, branch, position) {
    const reply = replyOf(step);
    const id = `cf-s${step.key}-b${position}`;
    const name = `branches.${position}`;
    const number = position + 1;
    const label = textInput(`${id}-label`, branch.label, "e.g. Confirm");
    label.addEventListener("input", () => {
      branch.label = label.value;
      legend.textContent = `Branch ${number}${label.value ? ": " + label.value : ""}`;
      replyChanged(step);
    });
    const match = el("select", { id: `${id}-match` });
    MATCHES.forEach(([value, text]) => match.append(option(value, text)));
    match.value = branch.match || "keywords";
    match.addEventListener("change", () => {
      branch.match = match.value;
      renderSteps(match.id);
      replyChanged(step);
    });
    const inputs = el("div", { class: "cf-row" });
    if (match.value === "keywords") {
      const words = textInput(`${id}-keywords`, (branch.keywords || []).join(", "), "e.g. c, confirm, yes");
      words.addEventListener("input", () => {
        branch.keywords = words.value.split(",").map((w) => w.trim()).filter(Boolean);
        replyChanged(step);
      });
      inputs.append(replyField(words.id, `${name}.keywords`, "Keywords", words,
        "Separated by commas. Case, accents and punctuation are ignored; the reply's first word is enough (“Yes 👍”)."));
    } else if (match.value === "number") {
      ["min", "max"].forEach((bound) => {
        const input = el("input", { type: "number", id: `${id}-${bound}`, step: "1", autocomplete: "off" });
        input.value = branch[bound] === undefined || branch[bound] === null ? "" : String(branch[bound]);
        input.addEventListener("input", () => {
          const text = input.value.trim();
          if (text === "") delete branch[bound];
          else branch[bound] = Number.isInteger(Number(text)) ? Number(text) : text;
          replyChanged(step);
        });
        inputs.append(replyField(input.id, `${name}.${bound}`, bound === "min" ? "From (optional)" : "To (optional)", input));
      });
    } else {
      const pattern = textInput(`${id}-pattern`, branch.pattern, "e.g. ^[0-9]{6}$");
      pattern.spellcheck = false;
      pattern.classList.add("cf-code");
      pattern.addEventListener("input", () => {
        branch.pattern = pattern.value;
        replyChanged(step);
      });
      inputs.append(replyField(pattern.id, `${name}.pattern`, "Pattern", pattern,
        "A regular expression the whole reply must match (case does not matter)."));
    }
    const goto = gotoSelect(`${id}-goto`, index, branch.goto, "next");
    goto.addEventListener("change", () => {
      branch.goto = gotoValue(goto.value);
      replyChanged(step);
    });
    const up = stepButton("↑", `Move branch ${number} up`, "cf-branch-up", position === 0);
    const down = stepButton("↓", `Move branch ${number} down`, "cf-branch-down", position === reply.branches.length - 1);
    const remove = stepButton("Remove", `Remove branch ${number}`, "cf-branch-remove", false);
    function moveBranch(to, focusClass) {
      const [moved] = reply.branches.splice(position, 1);
      reply.branches.splice(to, 0, moved);
      replyChanged(step);
      renderSteps();
      announce(`Branch ${moved.label || number} moved to position ${to + 1}.`);
      // As steps do: keep moving the same way, or the other way once at the end.
      const item = list.querySelector(`#cf-s${step.key}-b${to}`);
      const wanted = item.querySelector(`.${focusClass}`);
      const other = item.querySelector(focusClass === "cf-branch-up" ? ".cf-branch-down" : ".cf-branch-up");
      (!wanted.disabled ? wanted : other).focus();
    }
    up.addEventListener("click", () => moveBranch(position - 1, "cf-branch-up"));
    down.addEventListener("click", () => moveBranch(position + 1, "cf-branch-down"));
    remove.addEventListener("click", () => {
      reply.branches.splice(position, 1);
      replyChanged(step);
      renderSteps();
      announce(`Branch ${branch.label || number} removed.`);
      const next = list.querySelector(`#cf-s${step.key}-b${Math.min(position, reply.branches.length - 1)} .cf-branch-remove`);
      (next || list.querySelector(`#cf-s${step.key}-add-branch`)).focus();
    });
    const legend = el("legend", { text: `Branch ${number}${branch.label ? ": " + branch.label : ""}` });
    return el(
      "fieldset",
      { class: "cf-branch cf-reply-branch", id: id, "data-param": name },
      legend,
      el("span", { class: "cf-step-actions cf-branch-actions" }, up, down, remove),
      el("div", { class: "cf-row" },
        replyField(label.id, `${name}.label`, "Label", label),
        replyField(match.id, `${name}.match`, "The reply is", match)),
      inputs,
      replyField(goto.id, `${name}.goto`, "Then", goto)
    );
  }

  function renderBranches(step, index, parameter) {
    const reply = replyOf(step);
    const id = `cf-s${step.key}-branches`;
    const add = el("button", { type: "button", class: "button cf-query-button", id: `cf-s${step.key}-add-branch`, text: "Add a branch" });
    add.addEventListener("click", () => {
      reply.branches.push({ label: "", match: "keywords", keywords: [], goto: "next" });
      replyChanged(step);
      renderSteps(`cf-s${step.key}-b${reply.branches.length - 1}-label`);
      announce(`Branch ${reply.branches.length} added.`);
    });
    return el(
      "div",
      { class: "cf-field cf-branches", "data-param": parameter.name, role: "group", "aria-labelledby": `${id}-label`, "aria-describedby": `${id}-errors` },
      el("span", { class: "cf-label", id: `${id}-label`, text: parameter.label }),
      parameter.help ? el("p", { class: "cf-help", text: parameter.help }) : null,
      ...reply.branches.map((branch, position) => renderBranch(step, index, branch, position)),
      add,
      errorList(id, parameter.name)
    );
  }

  /* "Anything else" (with its optional re-ask) and "no reply": where each goes. */
  function renderFallback(step, index, parameter) {
    const target = replyOf(step)[parameter.name];
    const id = `cf-s${step.key}-${parameter.name}`;
    const goto = gotoSelect(`${id}-goto`, index, target.goto, "end");
    goto.addEventListener("change", () => {
      target.goto = gotoValue(goto.value);
      replyChanged(step);
    });
    let reask = null;
    if (parameter.name === "otherwise") {
      const text = el("textarea", { id: `${id}-reask`, rows: 2, placeholder: "e.g. Sorry, please reply C, X or R." });
      text.value = target.reask || "";
      text.addEventListener("input", () => {
        target.reask = text.value;
        replyChanged(step);
      });
      reask = replyField(text.id, `${parameter.name}.reask`, "Re-ask once with (optional)", text,
        "Sent once, to the same number, before taking this branch; the wait keeps its deadline.");
    }
    return el(
      "fieldset",
      { class: `cf-branch cf-${parameter.name.replace("_", "-")}`, id: id, "data-param": parameter.name, "aria-describedby": `${id}-errors` },
      el("legend", { text: parameter.label }),
      parameter.help ? el("p", { class: "cf-help", text: parameter.help }) : null,
      replyField(goto.id, `${parameter.name}.goto`, "Then", goto),
      reask,
      errorList(id, parameter.name)
    );
  }

  // --- "A/B split": branches by percentage ------------------------------------------------
  // Stored as the JSON parameter "branches" (format of workflows.splits), edited as the
  // parsed list kept on the step; where each goes is chosen as a wait's branches are.
  function splitOf(step) {
    if (!step.split) {
      const branches = parsed(step.parameters.branches || "[]", []);
      step.split = Array.isArray(branches) ? branches : [];
    }
    return step.split;
  }
  function splitChanged(step) {
    step.parameters.branches = JSON.stringify(splitOf(step));
    changed({ previews: false });
  }
  function splitTotal(step) {
    return splitOf(step).reduce((sum, branch) => sum + (Number.isInteger(branch.percent) ? branch.percent : 0), 0);
  }
  function renderSplitBranch(step, index, branch, position, total) {
    const branches = splitOf(step);
    const id = `cf-s${step.key}-b${position}`;
    const name = `branches.${position}`;
    const number = position + 1;
    const label = textInput(`${id}-label`, branch.label, "e.g. A");
    const legend = el("legend", { text: `Branch ${number}${branch.label ? ": " + branch.label : ""}` });
    label.addEventListener("input", () => {
      branch.label = label.value;
      legend.textContent = `Branch ${number}${label.value ? ": " + label.value : ""}`;
      splitChanged(step);
    });
    const percent = el("input", { type: "number", id: `${id}-percent`, min: "0", max: "100", step: "1", autocomplete: "off" });
    percent.value = branch.percent === undefined || branch.percent === null ? "" : String(branch.percent);
    percent.addEventListener("input", () => {
      const text = percent.value.trim();
      branch.percent = /^\d+$/.test(text) ? Number(text) : text;
      total.textContent = `Together: ${splitTotal(step)}% (must be 100%)`;
      splitChanged(step);
    });
    const goto = gotoSelect(`${id}-goto`, index, branch.goto, "next");
    goto.addEventListener("change", () => {
      branch.goto = gotoValue(goto.value);
      splitChanged(step);
      renderSteps(goto.id);
    });
    const remove = stepButton("Remove", `Remove branch ${number}`, "cf-branch-remove", branches.length <= 2);
    remove.addEventListener("click", () => {
      branches.splice(position, 1);
      splitChanged(step);
      renderSteps(`cf-s${step.key}-b${Math.min(position, branches.length - 1)}-label`);
      announce(`Branch ${branch.label || number} removed.`);
    });
    return el(
      "fieldset",
      { class: "cf-branch cf-split-branch", id: id, "data-param": name },
      legend,
      el("span", { class: "cf-step-actions cf-branch-actions" }, remove),
      el("div", { class: "cf-row" },
        replyField(label.id, `${name}.label`, "Label", label),
        replyField(percent.id, `${name}.percent`, "Percent of patients", percent)),
      replyField(goto.id, `${name}.goto`, "Then", goto)
    );
  }
  function renderSplitBranches(step, index, parameter) {
    const branches = splitOf(step);
    const id = `cf-s${step.key}-branches`;
    const total = el("p", { class: "cf-help cf-split-total", "aria-live": "polite", text: `Together: ${splitTotal(step)}% (must be 100%)` });
    const add = el("button", { type: "button", class: "button cf-query-button", id: `cf-s${step.key}-add-branch`, text: "Add a branch" });
    add.disabled = branches.length >= 5;
    add.addEventListener("click", () => {
      const letter = String.fromCharCode(65 + branches.length);
      branches.push({ label: letter, percent: 0, goto: "next" });
      splitChanged(step);
      renderSteps(`cf-s${step.key}-b${branches.length - 1}-percent`);
      announce(`Branch ${letter} added.`);
    });
    return el(
      "div",
      { class: "cf-field cf-branches", "data-param": parameter.name, role: "group", "aria-labelledby": `${id}-label`, "aria-describedby": `${id}-errors` },
      el("span", { class: "cf-label", id: `${id}-label`, text: parameter.label }),
      parameter.help ? el("p", { class: "cf-help", text: parameter.help }) : null,
      ...branches.map((branch, position) => renderSplitBranch(step, index, branch, position, total)),
      total,
      add,
      errorList(id, parameter.name)
    );
  }

  const REPLY_WIDGETS = {
    "reply-branches": renderBranches,
    "reply-otherwise": renderFallback,
    "reply-no-reply": renderFallback,
    "split-branches": renderSplitBranches,
  };

  function renderParameter(step, index, parameter) {
    if (parameter.widget === "query") return renderQuery(step, parameter);
    if (REPLY_WIDGETS[parameter.widget]) return REPLY_WIDGETS[parameter.widget](step, index, parameter);
    const composite = compositeControls(step, index, parameter);
    const control = composite ? composite.control : parameterControl(step, index, parameter);
    control.dataset.param = parameter.name;
    const wrapper = field(step, parameter.name, parameter.label, control, parameter.help, {
      required: parameter.required,
      after: composite ? composite.after : null,
    });
    wrapper.hidden = !visible(step, parameter);
    if (!composite) {
      const structural = parameter.widget === "select" || parameter.widget === "step-target";
      control.addEventListener(structural ? "change" : "input", () => {
        step.parameters[parameter.name] = control.value;
        if (structural) renderSteps(control.id);
        changed({ previews: Boolean(parameter.templated) });
      });
    }
    if (parameter.preview) {
      const box = el("div", { class: "cf-preview", "data-preview-for": step.key, "aria-live": "polite", hidden: true });
      wrapper.append(box);
      if (previewsByKey[step.key]) showPreview(box, previewsByKey[step.key]);
    }
    return wrapper;
  }

  /* What a newly chosen adapter function can fill in by itself: the clinic's one sender. */
  function prefill(step) {
    const numbers = senders(step.adapter);
    parametersOf(step).forEach((p) => {
      if (p.widget === "sender" && !step.parameters[p.name] && numbers.length === 1) {
        step.parameters[p.name] = numbers[0];
      }
    });
  }

  // --- message variants per language (workflows.variants) ------------------------------------
  /* parameters.variants is {"es": {"message": "…"}}: one tab per language, each with its own
     text and its own preview (a variant may need UCS-2 where the main text does not). */
  const LANGUAGES = schema.languages || [];
  const languageName = (code) => (LANGUAGES.find(([c]) => c === code) || [code, code])[1];
  const translatableOf = (step) =>
    step.type === "adapter" ? parametersOf(step).filter((p) => p.translatable) : [];
  function variantsOf(step) {
    const variants = parsed(step.parameters.variants || "{}", {});
    return Array.isArray(variants) ? {} : variants;
  }
  function variantsStore(step, variants) {
    step.parameters.variants = Object.keys(variants).length ? JSON.stringify(variants) : "";
  }

  /* A step without variants gets only "Add a language…", in the corner of its first
     translatable field (no extra height); with variants, a section of tabs below the fields. */
  function renderVariants(step, body) {
    const variants = variantsOf(step);
    const codes = Object.keys(variants);
    if (!codes.includes(step.variantTab)) step.variantTab = codes[0] || "";
    const id = `cf-s${step.key}-variants`;
    const errors = el("ul", { class: "errorlist cf-errors", id: `${id}-errors`, "data-errors-for": "variants" });
    const tabs = el("div", { class: "cf-variant-tabs", role: "tablist", "aria-label": "Languages" });
    codes.forEach((code) => {
      const tab = el("button", {
        type: "button",
        role: "tab",
        class: "cf-variant-tab",
        id: `${id}-tab-${code}`,
        "aria-selected": String(code === step.variantTab),
        "data-language": code,
        text: languageName(code),
      });
      tab.addEventListener("click", () => {
        step.variantTab = code;
        renderSteps(tab.id);
      });
      tabs.append(tab);
    });
    const add = el(
      "select",
      { id: `${id}-add`, class: "cf-variant-add", "aria-label": "Add a language" },
      option("", "Add a language…")
    );
    LANGUAGES.filter(([code]) => !codes.includes(code)).forEach(([code, name]) => add.append(option(code, name)));
    add.addEventListener("change", () => {
      if (!add.value) return;
      variants[add.value] = {};
      step.variantTab = add.value;
      variantsStore(step, variants);
      renderSteps(`${id}-add`);
      changed();
    });
    if (!codes.length) {
      const host = body.querySelector(`.cf-field[data-param="${translatableOf(step)[0].name}"]`);
      if (host) {
        host.classList.add("cf-has-variant-add");
        host.prepend(add);
        host.append(errors);
        return;
      }
    }
    tabs.append(add);
    const wrapper = el(
      "div",
      { class: "cf-field cf-variants", "data-param": "variants", role: "group", "aria-labelledby": `${id}-label` },
      el("span", { class: "cf-label", id: `${id}-label`, text: "Languages" }),
      el("p", {
        class: "cf-help",
        text: "The text above is the clinic's fallback language. Add a translation: patients " +
          "who prefer that language get it if the clinic has enabled it (messaging policy).",
      }),
      tabs
    );
    const code = step.variantTab;
    if (code) {
      const panel = el("div", { class: "cf-variant-panel", role: "tabpanel", "aria-labelledby": `${id}-tab-${code}` });
      translatableOf(step).forEach((p) => {
        const area = el("textarea", {
          id: `${id}-${code}-${p.name}`,
          rows: p.rows || 3,
          "data-templated": "true",
          "data-language": code,
        });
        area.value = (variants[code] || {})[p.name] || "";
        area.addEventListener("input", () => {
          variants[code] = Object.assign({}, variants[code], { [p.name]: area.value });
          variantsStore(step, variants);
          changed({ previews: true });
        });
        const row = el(
          "div",
          { class: "cf-field" },
          el("label", { for: area.id, class: "cf-label", text: `${p.label} (${languageName(code)})` }),
          area
        );
        if (p.preview) {
          const key = `${step.key}:${code}`;
          const box = el("div", { class: "cf-preview", "data-preview-for": key, "aria-live": "polite", hidden: true });
          row.append(box);
          if (previewsByKey[key]) showPreview(box, previewsByKey[key]);
        }
        panel.append(row);
      });
      const remove = el("button", { type: "button", class: "button cf-variant-remove", text: `Remove ${languageName(code)}` });
      remove.addEventListener("click", () => {
        delete variants[code];
        variantsStore(step, variants);
        renderSteps(`${id}-add`);
        changed();
      });
      panel.append(remove);
      wrapper.append(panel);
    }
    wrapper.append(errors);
    body.append(wrapper);
  }

  function renderAdapterChoice(step) {
    const adapterSelect = el("select", { id: `cf-s${step.key}-adapter` }, option("", "Choose an adapter…"));
    schema.adapters.forEach((a) => adapterSelect.append(option(a.name, a.label)));
    adapterSelect.value = step.adapter;
    adapterSelect.addEventListener("change", () => {
      step.adapter = adapterSelect.value;
      const functions = adapters[step.adapter] ? adapters[step.adapter].functions : [];
      // An adapter with one function: nothing to choose.
      step.function = functions.length === 1 ? functions[0].name : "";
      prefill(step);
      renderSteps(adapterSelect.id);
      changed();
    });
    const row = el("div", { class: "cf-row" });
    row.append(field(step, "adapter", "Adapter", adapterSelect, "", { required: true }));
    if (adapters[step.adapter]) {
      const functionSelect = el("select", { id: `cf-s${step.key}-function` }, option("", "Choose a function…"));
      adapters[step.adapter].functions.forEach((f) =>
        functionSelect.append(option(f.name, `${f.name} — ${f.label}`))
      );
      functionSelect.value = step.function;
      functionSelect.addEventListener("change", () => {
        step.function = functionSelect.value;
        prefill(step);
        renderSteps(functionSelect.id);
        changed();
      });
      row.append(field(step, "function", "Function", functionSelect, "", { required: true }));
    }
    return row;
  }

  function renderSendOptions(step) {
    const purpose = el("select", { id: `cf-s${step.key}-purpose` });
    schema.purposes.forEach(([value, label]) => purpose.append(option(value, label)));
    purpose.value = step.purpose;
    purpose.addEventListener("change", () => {
      step.purpose = purpose.value;
      changed({ previews: false });
    });
    const urgent = el("input", { type: "checkbox", id: `cf-s${step.key}-urgent` });
    urgent.checked = step.urgent;
    urgent.addEventListener("change", () => {
      step.urgent = urgent.checked;
      changed({ previews: false });
    });
    const urgentField = el(
      "div",
      { class: "cf-field", "data-param": "urgent" },
      urgent,
      el("label", { for: urgent.id, class: "vCheckboxLabel", text: " Urgent: send even during quiet hours" }),
      el("ul", { class: "errorlist cf-errors", "data-errors-for": "urgent" })
    );
    return el(
      "div",
      { class: "cf-row" },
      field(step, "purpose", "Consent needed", purpose, functionOf(step).consentHelp),
      urgentField
    );
  }

  function renderStep(step, index) {
    const number = index + 1;
    const last = index === state.steps.length - 1;
    const up = stepButton("↑", `Move step ${number} up`, "cf-up", index === 0);
    const down = stepButton("↓", `Move step ${number} down`, "cf-down", last);
    const remove = stepButton("Remove", `Remove step ${number}`, "cf-remove", false);
    up.addEventListener("click", () => move(index, index - 1, "cf-up"));
    down.addEventListener("click", () => move(index, index + 1, "cf-down"));
    remove.addEventListener("click", () => removeStep(index));
    const head = el(
      "div",
      { class: "cf-step-head" },
      el("span", { class: "cf-handle", title: "Drag to reorder", "aria-hidden": "true", text: "⠿" }),
      el("span", { class: "cf-step-number", text: String(number) }),
      el("span", { class: "cf-step-title", text: titleOf(step) }),
      el("span", { class: "cf-step-actions" }, up, down, remove)
    );
    const body = el("div", { class: "cf-step-body" });
    body.append(el("ul", { class: "errorlist cf-errors cf-step-errors" }));
    const description = stepTypes[step.type] ? stepTypes[step.type].description : "";
    if (description) body.append(el("p", { class: "cf-help", text: description }));
    if (step.type === "adapter") body.append(renderAdapterChoice(step));
    parametersOf(step).forEach((p) => body.append(renderParameter(step, index, p)));
    if (translatableOf(step).length) renderVariants(step, body);
    if (step.type === "adapter" && functionOf(step) && functionOf(step).sendOptions) {
      body.append(renderSendOptions(step));
    }
    return el(
      "li",
      { class: "cf-step", "data-key": step.key, "aria-label": `Step ${number}: ${titleOf(step)}` },
      el("p", { class: "cf-branch-caption", hidden: true }),
      head,
      body
    );
  }

  function renderSteps(focusId) {
    list.replaceChildren(...state.steps.map(renderStep));
    $("cf-no-steps").hidden = state.steps.length > 0;
    drawTree();
    $("cf-reply-test").hidden = !state.steps.some((step) => step.type === "reply");
    if (!config.editable) {
      root.querySelectorAll(".cf-main input, .cf-main select, .cf-main textarea, .cf-main button").forEach((node) => {
        node.disabled = true;
      });
    }
    if (focusId && $(focusId)) $(focusId).focus();
  }

  /* The places a step names another step by number: a condition's "if false", a wait's
   * branches, "anything else" and "no reply". Each {get, set}. */
  function jumps(step) {
    if (step.type === "condition") {
      return [{ get: () => step.parameters.else, set: (value) => { step.parameters.else = value; } }];
    }
    if (step.type === "split") {
      return splitOf(step).map((target) => ({
        get: () => String(target.goto === undefined ? "" : target.goto),
        set: (value) => {
          target.goto = value === "end" ? "end" : Number(value);
          step.parameters.branches = JSON.stringify(splitOf(step));
        },
      }));
    }
    if (step.type !== "reply") return [];
    const reply = replyOf(step);
    return [...reply.branches, reply.otherwise, reply.no_reply].map((target) => ({
      get: () => String(target.goto === undefined ? "" : target.goto),
      set: (value) => {
        target.goto = value === "end" ? "end" : Number(value);
        storeReply(step);
      },
    }));
  }
  function targetsByStep() {
    const targets = [];
    state.steps.forEach((step) => {
      jumps(step).forEach((jump) => {
        const target = jump.get();
        if (target && /^\d+$/.test(target) && state.steps[Number(target) - 1]) {
          targets.push([jump, state.steps[Number(target) - 1]]);
        }
      });
    });
    return targets;
  }
  function restoreTargets(targets) {
    // "Go to step N" follows its step when steps move, and ends the run if that step is
    // removed.
    targets.forEach(([jump, target]) => {
      const index = state.steps.indexOf(target);
      jump.set(index >= 0 ? String(index + 1) : "end");
    });
  }

  function move(from, to, focusClass) {
    if (to < 0 || to >= state.steps.length || from === to) return;
    const targets = targetsByStep();
    const [step] = state.steps.splice(from, 1);
    state.steps.splice(to, 0, step);
    restoreTargets(targets);
    renderSteps();
    changed({ previews: false });
    announce(`${titleOf(step)} moved to position ${to + 1} of ${state.steps.length}.`);
    if (focusClass) {
      const item = list.children[to];
      const wanted = item.querySelector(`.${focusClass}`);
      const other = item.querySelector(focusClass === "cf-up" ? ".cf-down" : ".cf-up");
      (wanted && !wanted.disabled ? wanted : other).focus();
    }
  }

  function removeStep(index) {
    const targets = targetsByStep();
    const [step] = state.steps.splice(index, 1);
    restoreTargets(targets);
    delete previewsByKey[step.key];
    renderSteps();
    changed();
    announce(`Step ${index + 1} (${titleOf(step)}) removed.`);
    const next = list.children[Math.min(index, state.steps.length - 1)];
    (next ? next.querySelector(".cf-remove") : $("cf-add-buttons").querySelector("button")).focus();
  }

  function addStep(type) {
    const step = newStep({ type: type });
    parametersOf(step).forEach((p) => {
      if (p.widget === "select" && p.example) step.parameters[p.name] = p.example;
    });
    if (type === "reply") {
      // A wait starts as the usual question: one branch to fill in, everything else on.
      replyOf(step).branches.push({ label: "", match: "keywords", keywords: [], goto: "next" });
      Object.assign(step.reply, { otherwise: { goto: "next", reask: "" }, no_reply: { goto: "next" } });
      storeReply(step);
    }
    if (type === "split") {
      // An even A/B test; the admin chooses where B goes.
      splitOf(step).push({ label: "A", percent: 50, goto: "next" }, { label: "B", percent: 50, goto: "next" });
      step.parameters.branches = JSON.stringify(step.split);
    }
    state.steps.push(step);
    renderSteps();
    changed();
    announce(`Step ${state.steps.length} added: ${titleOf(step)}.`);
    const item = list.lastElementChild;
    const first = item.querySelector(".cf-step-body select, .cf-step-body textarea, .cf-step-body input");
    (first || item.querySelector(".cf-remove")).focus();
  }

  schema.stepTypes.forEach((type) => {
    const button = el("button", {
      type: "button",
      class: "button",
      "data-add": type.name,
      title: type.description,
      text: type.label,
    });
    button.addEventListener("click", () => addStep(type.name));
    $("cf-add-buttons").append(button, " ");
  });
  if (!config.editable) $("cf-add-buttons").closest(".cf-add").hidden = true;

  if (window.Sortable && config.editable) {
    window.Sortable.create(list, {
      handle: ".cf-handle",
      // Pointer events rather than native HTML5 drag and drop: the same on every browser,
      // touch screens included.
      forceFallback: true,
      animation: 120,
      ghostClass: "cf-sortable-ghost",
      chosenClass: "cf-sortable-chosen",
      onEnd: (event) => move(event.oldIndex, event.newIndex, null),
    });
  }

  // --- goal and exit conditions ----------------------------------------------------------
  // An event picker (the catalogue's, as for the trigger), a filter as JSON on that event's
  // data, who it concerns, and for the goal its window. The server validates them.
  const SCOPES = [["patient", "The same patient"], ["record", "The same record (e.g. this appointment)"]];
  function eventSelect(id, value, blank) {
    const select = el("select", { id: id });
    select.append(option("", blank));
    let known = false;
    schema.triggers.forEach((group) => {
      const optgroup = el("optgroup", { label: group.category });
      group.events.forEach((event) => {
        known = known || event.name === value;
        optgroup.append(option(event.name, `${event.name} — ${event.description}`));
      });
      select.append(optgroup);
    });
    if (value && !known) select.append(option(value, value));
    select.value = value || "";
    return select;
  }
  function scopeSelect(id, value) {
    const select = el("select", { id: id });
    SCOPES.forEach(([name, label]) => select.append(option(name, label)));
    select.value = value || "patient";
    return select;
  }
  function endingFields(prefix, item, onChange) {
    const fields = [];
    const event = eventSelect(`${prefix}-event`, item.event, prefix === "cf-goal" ? "No goal" : "Choose the event…");
    event.addEventListener("change", () => {
      item.event = event.value;
      onChange(true);
    });
    fields.push(replyField(`${prefix}-event`, "event", "Event", event), errorList(`${prefix}-event`, "event"));
    const filter = el("textarea", { id: `${prefix}-filter`, rows: 2, class: "vLargeTextField", spellcheck: "false",
      placeholder: 'optional, e.g. {"appointment.providerName": "Dr. Gomez"}' });
    filter.value = item.filter || "";
    filter.addEventListener("input", () => {
      item.filter = filter.value;
      onChange(false);
    });
    fields.push(
      replyField(`${prefix}-filter`, "filter", "Only if its data matches (JSON filter)", filter,
        "The same query language as the trigger's filter, on this event's data; empty: any."),
      errorList(`${prefix}-filter`, "filter")
    );
    const scope = scopeSelect(`${prefix}-scope`, item.scope);
    scope.addEventListener("change", () => {
      item.scope = scope.value;
      onChange(false);
    });
    fields.push(
      replyField(`${prefix}-scope`, "scope", "For", scope,
        "Whose runs it ends: any run of the same patient, or only the run started by the same record (the event is about it, or names it in its data, e.g. order.id)."),
      errorList(`${prefix}-scope`, "scope")
    );
    return fields;
  }
  function renderGoal() {
    const goal = state.goal;
    const fields = endingFields("cf-goal", goal, (rerender) => {
      if (!goal.event) goal.filter = "";  // "No goal": its hidden filter goes too
      if (rerender) {
        renderGoal();
        $("cf-goal-event").focus();
      }
      changed({ previews: false });
    });
    if (goal.event) {
      const window_ = el("input", { type: "number", id: "cf-goal-window", min: "1", max: "8760", step: "1" });
      window_.value = String(goal.windowHours === undefined || goal.windowHours === null ? "" : goal.windowHours);
      window_.addEventListener("input", () => {
        goal.windowHours = window_.value;
        changed({ previews: false });
      });
      fields.push(
        replyField("cf-goal-window", "window", "Counts as a conversion within (hours)", window_,
          "Reached this long after the run started, the goal counts; 1 to 8760 hours (365 days). 168 = a week."),
        errorList("cf-goal-window", "window")
      );
    } else {
      fields.splice(2);  // no goal: no filter, scope or window to set
    }
    $("cf-goal").replaceChildren(...fields);
  }
  function renderExits() {
    $("cf-exits").replaceChildren(
      ...state.exits.map((item, index) =>
        el(
          "li",
          { class: "cf-exit", "data-exit": String(index) },
          ...endingFields(`cf-exit-${index}`, item, () => changed({ previews: false })),
          stepButtonRemoveExit(index)
        )
      )
    );
  }
  function stepButtonRemoveExit(index) {
    const button = el("button", { type: "button", class: "button", text: "Remove this exit condition" });
    button.addEventListener("click", () => {
      state.exits.splice(index, 1);
      renderExits();
      changed({ previews: false });
      $("cf-add-exit").focus();
    });
    return button;
  }
  $("cf-add-exit").addEventListener("click", () => {
    state.exits.push({ event: "", filter: "", scope: "patient" });
    renderExits();
    changed({ previews: false });
    $(`cf-exit-${state.exits.length - 1}-event`).focus();
  });
  /* Show the report's goal and exit problems on their fields; return how many there are. */
  function showGoalErrors(report) {
    let count = 0;
    const goal = report.goal || {};
    ["event", "filter", "scope", "window"].forEach((name) => {
      const list_ = $(`cf-goal-${name}-errors`);
      if (list_) fillList(list_, goal[name] || []);
      count += (goal[name] || []).length;
    });
    const exits = report.exits || {};
    state.exits.forEach((item, index) => {
      const problems = exits[String(index)] || {};
      ["event", "filter", "scope"].forEach((name) => {
        const list_ = $(`cf-exit-${index}-${name}-errors`);
        if (list_) fillList(list_, problems[name] || []);
        count += (problems[name] || []).length;
      });
    });
    return count;
  }

  // --- validation, shown on the step and field it belongs to ------------------------------
  // `keys`: the steps' keys in the order they had when the report was asked for, so a
  // report that arrives after a reorder still lands on the right steps.
  function showErrors(report, keys) {
    fillList($("cf-trigger-errors"), report.trigger);
    fillList($("cf-filter-errors"), report.filter);
    fillList($("cf-enrollment-errors"), report.enrollment || []);
    let count =
      report.trigger.length +
      report.filter.length +
      (report.enrollment || []).length +
      showGoalErrors(report);
    Array.from(list.children).forEach((item) => {
      const index = keys.indexOf(Number(item.dataset.key));
      const problems = (index >= 0 && report.steps[String(index)]) || {};
      const shown = new Set();
      item.querySelectorAll("[data-errors-for]").forEach((errors) => {
        const name = errors.dataset.errorsFor;
        const wrapper = errors.closest(".cf-field");
        if (problems[name] && !(wrapper && wrapper.hidden)) shown.add(name);
        fillList(errors, shown.has(name) ? problems[name] : []);
      });
      const rest = Object.entries(problems)
        .filter(([name]) => !shown.has(name))
        .flatMap(([name, messages]) => messages.map((m) => (name === "type" ? m : `${name}: ${m}`)));
      fillList(item.querySelector(".cf-step-errors"), rest);
      const total = Object.values(problems).reduce((sum, messages) => sum + messages.length, 0);
      item.classList.toggle("cf-step-problem", total > 0);
      count += total;
    });
    const summary = $("cf-problems");
    summary.textContent = count
      ? `${count} problem${count === 1 ? "" : "s"} to fix before saving (marked below).`
      : "✓ No problems found.";
    summary.className = `cf-summary ${count ? "cf-has-problems" : "cf-no-problems"}`;
  }

  // --- the tree: the steps after a wait, under the branch that leads to them -------------
  // Its shape is the server's (workflows.replies.branch_segments, through the validate
  // endpoint), by step key, so a re-render in between keeps it.
  let tree = new Map();
  function showTree(entries, keys) {
    tree = new Map(keys.map((key, index) => [key, entries[index] || { depth: 0 }]));
    drawTree();
  }
  function drawTree() {
    Array.from(list.children).forEach((item) => {
      const entry = tree.get(Number(item.dataset.key)) || { depth: 0 };
      item.style.setProperty("--cf-depth", String(entry.depth || 0));
      item.classList.toggle("cf-in-branch", Boolean(entry.depth));
      const caption = item.querySelector(".cf-branch-caption");
      const parent = state.steps[entry.wait - 1];
      const cause = parent && parent.type === "split"
        ? `If the A/B split at step ${entry.wait} chose`
        : `If the reply to step ${entry.wait} is`;
      const text = entry.branches && entry.branches.length
        ? `${cause}: ${entry.branches.join(" · ")}`
        : "";
      caption.textContent = text;
      caption.hidden = !text;
      const title = item.querySelector(".cf-step-title").textContent;
      const number = item.querySelector(".cf-step-number").textContent;
      const where = entry.depth ? ` (in a branch of step ${entry.wait})` : "";
      item.setAttribute("aria-label", `Step ${number}${where}: ${title}`);
    });
  }

  async function validate() {
    const mine = ++seq.validate;
    const keys = state.steps.map((step) => step.key);
    try {
      const response = await post(urls.validate, { definition: definition(), organization: organization() });
      if (mine !== seq.validate) return;
      const data = await response.json();
      if (!response.ok) throw new Error(data.error || response.statusText);
      showErrors(data, keys);
      showTree(data.tree || [], keys);
    } catch (error) {
      if (mine === seq.validate) $("cf-problems").textContent = `Could not check the workflow: ${error.message}`;
    }
  }

  async function drawDiagram() {
    const mine = ++seq.diagram;
    try {
      const response = await post(urls.diagram, { definition: definition() });
      if (mine !== seq.diagram || !response.ok) return;
      // Server-rendered SVG; every text in it is escaped there.
      $("cf-diagram").innerHTML = await response.text();
    } catch (error) {
      $("cf-diagram").textContent = `Could not draw the diagram: ${error.message}`;
    }
  }

  const refreshChecks = debounce(() => {
    validate();
    drawDiagram();
  }, 350);

  // --- message previews -----------------------------------------------------------------
  const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;
  /* The counts line of a preview, by what its channel counts: an SMS its segments (what it
   * costs), an email its lines; "" when the preview has neither. */
  function previewNumbers(preview) {
    if (preview.mms) {
      return `${plural(preview.characters, "character")} · 1 MMS · ${preview.encoding}`;
    }
    if (preview.segments !== undefined) {
      return `${plural(preview.characters, "character")} · ${plural(preview.segments, "segment")} · ${preview.encoding}`;
    }
    if (preview.lines !== undefined) {
      return `${plural(preview.characters, "character")} · ${plural(preview.lines, "line")}`;
    }
    return "";
  }
  function showPreview(box, preview) {
    box.hidden = false;
    const parts = [el("p", { class: "cf-preview-meta", text: `Preview for ${preview.who}` })];
    if (preview.error) {
      parts.push(el("p", { class: "cf-bad", text: preview.error }));
    } else {
      parts.push(el("p", { class: "cf-preview-text", text: preview.text }));
      const numbers = previewNumbers(preview);
      if (numbers) parts.push(el("p", { class: "cf-preview-meta cf-preview-numbers", text: numbers }));
      if (preview.firstContact) parts.push(el("p", { class: "cf-preview-meta cf-preview-first-contact", text: preview.firstContact }));
      if (preview.shortLinks) parts.push(el("p", { class: "cf-preview-meta cf-preview-short-links", text: preview.shortLinks }));
      if (preview.media && preview.media.url) {
        /* A link, never an <img>: the admin does not load third-party hosts by itself. */
        const kind = { image: "an image", pdf: "a PDF" }[preview.media.kind] || "a file";
        const link = preview.media.url.startsWith("https://")
          ? el("a", { href: preview.media.url, rel: "noopener noreferrer", target: "_blank", text: preview.media.url })
          : el("code", { text: preview.media.url });
        const media = el("p", { class: "cf-preview-meta cf-preview-media", text: `With ${kind}: ` });
        media.append(link);
        parts.push(media);
      }
      (preview.warnings || []).forEach((text) => parts.push(el("p", { class: "cf-warning", text: text })));
    }
    box.replaceChildren(...parts);
  }

  async function previews() {
    const messages = {};
    state.steps.forEach((step) => {
      parametersOf(step).forEach((p) => {
        // Previewed by its adapter function, as its channel's messages are.
        if (p.preview) {
          /* The step's other parameters too: a media URL, say, is previewed with the text. */
          const inputs = {};
          parametersOf(step).forEach((other) => {
            const value = step.parameters[other.name];
            if (other.name !== p.name && typeof value === "string" && value) inputs[other.name] = value;
          });
          messages[step.key] = { text: step.parameters[p.name] || "", function: `${step.adapter}.${step.function}`, inputs: inputs };
          if (p.translatable) {
            Object.entries(variantsOf(step)).forEach(([code, texts]) => {
              const text = texts && typeof texts[p.name] === "string" ? texts[p.name] : "";
              if (text.trim()) messages[`${step.key}:${code}`] = { text: text, function: `${step.adapter}.${step.function}`, inputs: inputs };
            });
          }
        }
      });
    });
    if (!Object.keys(messages).length || !state.trigger) return;
    const mine = ++seq.preview;
    try {
      const response = await post(urls.preview, {
        trigger: state.trigger,
        patient: patientSelect.value || null,
        organization: organization(),
        messages: messages,
      });
      const data = await response.json();
      if (mine !== seq.preview || !response.ok) return;
      const who = data.patient ? `${data.patient} (${data.source})` : data.source;
      Object.entries(data.previews).forEach(([key, preview]) => {
        previewsByKey[key] = Object.assign({ who: who }, preview);
        const box = list.querySelector(`[data-preview-for="${key}"]`);
        if (box) showPreview(box, previewsByKey[key]);
      });
    } catch (error) {
      /* previews are a convenience; validation reports real problems */
    }
  }
  const refreshPreviews = debounce(previews, 350);

  // --- variables ------------------------------------------------------------------------
  const variableCache = {};
  const variableList = $("cf-variables");
  const variableSearch = $("cf-var-search");
  root.addEventListener("focusin", (event) => {
    if (event.target.dataset && event.target.dataset.templated) lastFieldId = event.target.id;
  });

  function insertVariable(path) {
    const target = lastFieldId && $(lastFieldId);
    if (!target) {
      $("cf-vars-help").classList.add("cf-warning");
      announce("Click into a step's field first, then pick a variable.");
      return;
    }
    const text = `{{${path}}}`;
    const start = target.selectionStart === null ? target.value.length : target.selectionStart;
    const end = target.selectionEnd === null ? start : target.selectionEnd;
    target.setRangeText(text, start, end, "end");
    target.focus();
    target.dispatchEvent(new Event("input", { bubbles: true }));
    announce(`Inserted ${text}.`);
  }

  function renderVariables() {
    const variables = variableCache[state.trigger];
    if (!state.trigger || !variables) {
      variableList.replaceChildren(
        el("li", { class: "cf-help", text: state.trigger ? "Loading…" : "Choose a trigger to see its variables." })
      );
      return;
    }
    const query = variableSearch.value.trim().toLowerCase();
    const items = [];
    let group = null;
    variables
      .filter((v) => !query || v.path.toLowerCase().includes(query) || v.description.toLowerCase().includes(query))
      .forEach((variable) => {
        const head = variable.path.split(".")[0];
        if (head !== group) {
          group = head;
          items.push(el("li", { class: "cf-var-group", text: head }));
        }
        const notes = [variable.description];
        if (variable.nullable) notes.push("may be empty: add | default:\"…\"");
        const button = el(
          "button",
          { type: "button", class: "cf-var", "data-path": variable.path, "aria-label": `Insert {{${variable.path}}}` },
          el("code", { text: `{{${variable.path}}}` }),
          el("small", { text: notes.join(" · ") })
        );
        if (variable.sensitive) button.append(el("small", { class: "cf-var-flag", text: "Clinical: keep it out of messages." }));
        // Keep the caret where it is in the field being edited.
        button.addEventListener("mousedown", (event) => event.preventDefault());
        button.addEventListener("click", () => insertVariable(variable.path));
        items.push(el("li", {}, button));
      });
    variableList.replaceChildren(...(items.length ? items : [el("li", { class: "cf-help", text: "No variable matches." })]));
  }

  async function loadVariables() {
    const trigger = state.trigger;
    $("cf-reference-link").href = trigger
      ? schema.referencePage.replace("__trigger__", encodeURIComponent(trigger))
      : $("cf-reference-link").href;
    renderVariables();
    if (!trigger || variableCache[trigger]) return;
    try {
      const response = await fetch(schema.referenceUrl.replace("__trigger__", encodeURIComponent(trigger)), {
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(response.statusText);
      variableCache[trigger] = (await response.json()).variables;
    } catch (error) {
      variableCache[trigger] = [];
    }
    if (trigger === state.trigger) renderVariables();
  }
  variableSearch.addEventListener("input", renderVariables);

  // --- the clinic, its test patients and approved numbers -------------------------------
  const patientSelect = $("cf-patient");
  const organizationSelect = document.getElementById("id_organization");
  function organization() {
    // The clinic chosen on the page (a superuser may move a workflow), else the saved one's.
    if (organizationSelect && organizationSelect.value) return Number(organizationSelect.value);
    return config.organization || null;
  }
  /* The approved senders of the clinic for one adapter ({clinic: {adapter: [...]}}); with
   * no clinic chosen yet, those of every clinic the user sees. */
  function senders(adapter) {
    const org = organization();
    const clinics = org ? [config.senders[String(org)] || {}] : Object.values(config.senders);
    return [...new Set(clinics.flatMap((byAdapter) => byAdapter[adapter] || []))];
  }
  function renderClinic() {
    const org = organization();
    const patients = config.testPatients.filter((p) => !org || p.organization === org);
    const previous = patientSelect.value;
    patientSelect.replaceChildren(option("", "No patient: example data"));
    patients.forEach((p) => patientSelect.append(option(String(p.id), `${p.name}${p.phone ? " · " + p.phone : ""}`)));
    patientSelect.value = patients.some((p) => String(p.id) === previous)
      ? previous
      : patients.length
        ? String(patients[0].id)
        : "";
    $("cf-no-patients").hidden = patients.length > 0;
  }
  patientSelect.addEventListener("change", refreshPreviews);
  if (organizationSelect) {
    organizationSelect.addEventListener("change", () => {
      renderClinic();
      renderSteps();
      refreshPreviews();
      refreshChecks();  // its approved numbers are others
    });
  }

  // --- test mode ------------------------------------------------------------------------
  $("cf-no-reply").addEventListener("change", () => {
    $("cf-reply").disabled = $("cf-no-reply").checked;
  });
  const resultSection = $("cf-test-section");
  const resultBox = $("cf-test-result");
  function showResult(...nodes) {
    resultSection.hidden = false;
    resultBox.replaceChildren(...nodes);
  }
  function needPatient() {
    if (patientSelect.value) return false;
    showResult(el("p", { class: "cf-warning", text: "Choose a test patient first (Test mode, on the right)." }));
    return true;
  }

  $("cf-dry-run").addEventListener("click", async () => {
    if (needPatient()) return;
    showResult(el("p", { class: "cf-help", text: "Running the dry run…" }));
    try {
      const response = await post(urls.dryRun, {
        patient: patientSelect.value,
        organization: organization(),
        definition: definition(),
        // What the patient answers each question with; null: they never reply.
        reply: $("cf-no-reply").checked ? null : $("cf-reply").value,
      });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error(data.error || response.statusText);
      }
      resultSection.hidden = false;
      // A server-rendered partial: Django's templates escaped everything in it.
      resultBox.innerHTML = await response.text();
      resultSection.scrollIntoView({ block: "start" });
    } catch (error) {
      showResult(el("p", { class: "cf-bad", text: `The dry run failed: ${error.message}` }));
    }
  });

  const liveButton = $("cf-live-test");
  if (liveButton) {
    liveButton.addEventListener("click", () => {
      if (needPatient()) return;
      $("cf-live-who").textContent = patientSelect.selectedOptions[0].textContent;
      $("cf-live-unsaved").hidden = !dirty;
      $("cf-live-confirm").hidden = false;
      $("cf-live-go").focus();
    });
    $("cf-live-cancel").addEventListener("click", () => {
      $("cf-live-confirm").hidden = true;
      liveButton.focus();
    });
    $("cf-live-go").addEventListener("click", async () => {
      $("cf-live-confirm").hidden = true;
      try {
        const response = await post(urls.liveTest, { patient: patientSelect.value });
        const data = await response.json();
        if (!response.ok) throw new Error(data.error || response.statusText);
        showResult(
          el("p", { class: "cf-lead", text: `${data.message} ` }, el("a", { href: data.url, text: "Open the run's timeline" }))
        );
      } catch (error) {
        showResult(el("p", { class: "cf-bad", text: `Live test refused: ${error.message}` }));
      }
    });
  }

  // --- saving ---------------------------------------------------------------------------
  form.addEventListener("submit", (event) => {
    // A condition not complete yet is not in the JSON: saving now would drop it unseen.
    const incomplete = queryProblems();
    if (incomplete.length) {
      event.preventDefault();
      const summary = $("cf-problems");
      summary.textContent =
        `Not saved: finish or remove ${incomplete.length === 1 ? "the condition" : "the conditions"} ` +
        `not complete yet (${incomplete.map((p) => p.text).join("; ")}).`;
      summary.className = "cf-summary cf-has-problems";
      announce(summary.textContent);
      if (incomplete[0].focus) incomplete[0].focus.focus();
      return;
    }
    sync();
    submitting = true;
  });
  window.addEventListener("beforeunload", (event) => {
    if (dirty && !submitting) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  // --- start ----------------------------------------------------------------------------
  renderTrigger();
  renderEnrollment();
  renderClinic();
  renderSteps();
  renderGoal();
  renderExits();
  loadVariables();
  sync();
  if (config.errors) showErrors(config.errors, state.steps.map((step) => step.key));
  // A wait's branches are drawn as a tree from the server's answer.
  if (config.saved || config.errors || state.steps.some((step) => step.type === "reply" || step.type === "split")) validate();
  drawDiagram();
  previews();
})();
