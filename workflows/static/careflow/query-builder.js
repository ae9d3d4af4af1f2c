/* careflow query builder: filters and conditions by pointing and clicking.
 *
 * Edits a query of workflows.filters (MongoDB syntax, the stored form) as conditions — a
 * field of the trigger's data, an operator that fits the field's type, a value — in AND/OR
 * groups. Fields, their types and the operators offered for each type come from the server
 * (builder_schema); this file maps each operator to the query language and back.
 *
 * The JSON stays one click away ("Advanced (JSON)") and both views edit the same query.
 * Reading JSON back is checked by writing it again: only a query that comes out exactly as it
 * went in is shown as conditions. Anything else stays JSON, with a note, and is never
 * rewritten behind the admin's back.
 *
 * window.CareflowQuery.create(options) → { element, problems() }, see `create` below.
 */
(function () {
  "use strict";

  const CUSTOM = "__custom__";
  const SPECIAL = /[.*+?^${}()|[\]\\]/g;
  const LITERAL = /^(?:[^.*+?^${}()|[\]\\]|\\[.*+?^${}()|[\]\\])*$/;
  const NEEDS_NO_VALUE = new Set(["empty", "notEmpty", "true", "false"]);
  const COMPARISONS = { ne: "$ne", lt: "$lt", lte: "$lte", gt: "$gt", gte: "$gte" };
  const MAX_DEPTH = 3;

  // --- small helpers ---------------------------------------------------------------------
  const { el, option } = window.CareflowDom;  // dom.js
  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  const isDate = (value) => isObject(value) && Object.keys(value).length === 1 && "$date" in value;
  const isOperators = (value) =>
    isObject(value) && !isDate(value) && Object.keys(value).some((key) => key.startsWith("$"));

  function equal(a, b) {
    if (Array.isArray(a) || Array.isArray(b)) {
      return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => equal(x, b[i]));
    }
    if (isObject(a) || isObject(b)) {
      if (!isObject(a) || !isObject(b)) return false;
      const keys = Object.keys(a);
      return keys.length === Object.keys(b).length && keys.every((key) => key in b && equal(a[key], b[key]));
    }
    return a === b;
  }

  // --- values: the text in an input ⇄ a JSON value of the field's type ----------------------
  const DATE = /^\d{4}-\d{2}-\d{2}$/;
  const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/;

  /* {value} or {problem}: the JSON value `text` means for a field of `type`. */
  function valueOf(type, text) {
    const trimmed = String(text).trim();
    if (trimmed === "") return { problem: "enter a value" };
    switch (type) {
      case "number": {
        const number = Number(trimmed);
        return Number.isFinite(number) ? { value: number } : { problem: `“${trimmed}” is not a number` };
      }
      case "date":
        return DATE.test(trimmed) ? { value: trimmed } : { problem: "choose a date" };
      case "datetime":
        // Payload times are ISO 8601 in UTC; {"$date": …} compares them by instant.
        return DATETIME.test(trimmed)
          ? { value: { $date: `${trimmed}:00Z` } }
          : { problem: "choose a date and a time" };
      case "any":
        if (/^-?\d+(\.\d+)?$/.test(trimmed)) return { value: Number(trimmed) };
        if (trimmed === "true" || trimmed === "false") return { value: trimmed === "true" };
        return { value: trimmed };
      default:
        return { value: trimmed };
    }
  }

  /* The text an input shows for a JSON value; undefined when the field's type cannot hold it. */
  function textOf(type, value) {
    if (type === "datetime") {
      const match = isDate(value) && /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}):00Z$/.exec(value.$date);
      return match ? match[1] : undefined;
    }
    if (typeof value === "number") return type === "number" || type === "any" ? String(value) : undefined;
    if (typeof value === "boolean") return type === "any" ? String(value) : undefined;
    if (typeof value === "string") return type === "number" ? undefined : value;
    return undefined;
  }

  const escapeText = (text) => text.replace(SPECIAL, "\\$&");
  const unescapeText = (pattern) => (LITERAL.test(pattern) ? pattern.replace(/\\(.)/g, "$1") : undefined);
  const splitList = (text) =>
    String(text)
      .split(",")
      .map((item) => item.trim())
      .filter((item) => item !== "");

  // --- one condition ⇄ {path: expression} --------------------------------------------------

  /* {expression} or {problem} for a condition on a field of `type` (`list`: a list field). */
  function expressionOf(condition, type, list) {
    const { op, value } = condition;
    const text = String(value || "").trim();
    switch (op) {
      case "true":
        return { expression: true };
      case "false":
        return { expression: false };
      case "empty":
        return { expression: { $in: list ? [null, []] : [null, ""] } };
      case "notEmpty":
        return { expression: { $nin: list ? [null, []] : [null, ""] } };
      case "contains":
      case "notContains":
      case "startsWith":
      case "regex": {
        if (!text) return { problem: "enter the text to look for" };
        if (op === "regex") return { expression: { $regex: text } };
        const regex = { $regex: (op === "startsWith" ? "^" : "") + escapeText(text), $options: "i" };
        return { expression: op === "notContains" ? { $not: regex } : regex };
      }
      case "in":
      case "nin": {
        const items = splitList(text);
        if (!items.length) return { problem: "enter one or more values, separated by commas" };
        const values = [];
        for (const item of items) {
          const read = valueOf(type, item);
          if (read.problem) return read;
          values.push(read.value);
        }
        return { expression: { [op === "in" ? "$in" : "$nin"]: values } };
      }
      case "eq": {
        const read = valueOf(type, text);
        return read.problem ? read : { expression: read.value };
      }
      default: {
        if (!COMPARISONS[op]) return { problem: "choose an operator" };
        const read = valueOf(type, text);
        return read.problem ? read : { expression: { [COMPARISONS[op]]: read.value } };
      }
    }
  }

  /* The condition (op and value text) an expression is, or null. Checked by the caller. */
  function conditionOf(expression, type) {
    if (expression === true || expression === false) {
      return type === "boolean" ? { op: String(expression), value: "" } : { op: "eq", value: textOf(type, expression) };
    }
    if (!isOperators(expression)) return { op: "eq", value: textOf(type, expression) };
    const keys = Object.keys(expression).sort().join(" ");
    const argument = expression[Object.keys(expression)[0]];
    if (keys === "$in" || keys === "$nin") {
      const negative = keys === "$nin";
      if (equal(argument, [null, ""]) || equal(argument, [null, []])) {
        return { op: negative ? "notEmpty" : "empty", value: "" };
      }
      if (!Array.isArray(argument)) return null;
      const texts = argument.map((item) => textOf(type, item));
      if (texts.some((text) => text === undefined)) return null;
      return { op: negative ? "nin" : "in", value: texts.join(", ") };
    }
    if (keys === "$options $regex" && expression.$options === "i" && typeof expression.$regex === "string") {
      const starts = expression.$regex.startsWith("^");
      const text = unescapeText(starts ? expression.$regex.slice(1) : expression.$regex);
      return text === undefined ? null : { op: starts ? "startsWith" : "contains", value: text };
    }
    if (keys === "$regex") return { op: "regex", value: expression.$regex };
    if (keys === "$not" && isObject(argument) && argument.$options === "i") {
      const text = typeof argument.$regex === "string" ? unescapeText(argument.$regex) : undefined;
      return text === undefined ? null : { op: "notContains", value: text };
    }
    const op = Object.keys(COMPARISONS).find((name) => COMPARISONS[name] === keys);
    return op ? { op: op, value: textOf(type, argument) } : null;
  }

  // --- the whole query ⇄ groups of conditions -------------------------------------------------

  function newCondition(path) {
    return { kind: "condition", path: path || "", custom: false, op: "", value: "" };
  }
  function newGroup(match, items) {
    return { kind: "group", match: match, items: items || [] };
  }

  /* The model of a query, or null when it cannot be shown as conditions. */
  function read(query, field, operatorsOf) {
    function conditions(path, expression) {
      const type = field(path) ? field(path).type : "any";
      const allowed = (op) => operatorsOf(type).some(([name]) => name === op);
      const whole = conditionOf(expression, type);
      if (whole && whole.value !== undefined && allowed(whole.op)) {
        return [Object.assign(newCondition(path), whole, { custom: !field(path) })];
      }
      // {"$gte": 10, "$lt": 50}: one condition per operator, in an "all" group
      if (!isOperators(expression) || Object.keys(expression).length < 2) return null;
      const parts = [];
      for (const [key, argument] of Object.entries(expression)) {
        const part = conditionOf({ [key]: argument }, type);
        if (!part || part.value === undefined || !allowed(part.op)) return null;
        parts.push(Object.assign(newCondition(path), part, { custom: !field(path) }));
      }
      return parts;
    }
    function documentOf(doc, depth) {
      if (!isObject(doc) || depth > MAX_DEPTH) return null;
      const group = newGroup("all");
      for (const [key, value] of Object.entries(doc)) {
        if (key === "$and" || key === "$or") {
          if (!Array.isArray(value) || !value.length) return null;
          const subs = value.map((sub) => documentOf(sub, depth + 1));
          if (subs.some((sub) => sub === null)) return null;
          if (key === "$and") subs.forEach((sub) => group.items.push(...sub.items));
          else group.items.push(newGroup("any", subs.map((sub) => (sub.items.length === 1 ? sub.items[0] : sub))));
        } else if (key.startsWith("$") || key === "") {
          return null;
        } else {
          const found = conditions(key, value);
          if (!found) return null;
          group.items.push(...found);
        }
      }
      return group;
    }
    const root = documentOf(query, 1);
    if (root && root.items.length === 1 && root.items[0].kind === "group") return root.items[0];
    // PostgreSQL keeps an object's keys in an order of its own (shortest first): in an "all"
    // group, whose order means nothing, show the conditions first and the groups after them.
    if (root && root.match === "all") {
      root.items = root.items.filter((i) => i.kind !== "group").concat(root.items.filter((i) => i.kind === "group"));
    }
    return root;
  }

  /* {query, problems: Map(condition → text)}: the query the model means; conditions not
   * complete yet are left out of it and listed with what they need. */
  function write(root, field) {
    const problems = new Map();
    function groupOf(group) {
      const parts = [];
      group.items.forEach((item) => {
        if (item.kind === "group") {
          const query = groupOf(item);
          if (Object.keys(query).length) parts.push(query);
          return;
        }
        if (!item.path) {
          if (item.op || item.value) problems.set(item, "choose a field");
          return;
        }
        const known = field(item.path);
        const written = expressionOf(item, known ? known.type : "any", Boolean(known && known.list));
        if (written.problem) problems.set(item, written.problem);
        else parts.push({ [item.path]: written.expression });
      });
      if (!parts.length) return {};
      if (group.match === "any") return { $or: parts };
      const merged = {};
      for (const part of parts) {
        for (const [key, value] of Object.entries(part)) {
          if (!(key in merged)) merged[key] = value;
          else if (
            isOperators(merged[key]) &&
            isOperators(value) &&
            Object.keys(value).every((op) => !(op in merged[key]) && op !== "$options" && op !== "$regex") &&
            !("$regex" in merged[key])
          ) {
            merged[key] = Object.assign({}, merged[key], value);
          } else {
            return { $and: parts };
          }
        }
      }
      return merged;
    }
    return { query: groupOf(root), problems: problems };
  }

  function queryText(query) {
    if (!Object.keys(query).length) return "";
    const compact = JSON.stringify(query);
    return compact.length <= 70 ? compact : JSON.stringify(query, null, 2);
  }

  // --- the component -------------------------------------------------------------------------
  let instances = 0;

  /* A query builder.
   *   id: prefix of the ids of its controls (the JSON box is `${id}-json`, or options.jsonId)
   *   text: the query's JSON text ("" for none)
   *   state: an object kept by the caller across re-renders (the model lives there)
   *   fields(): the fields to offer [{path, type, description, group, list, example}]
   *   operators: {type: [[op, label], …]} from the server
   *   onChange(text): after every edit, with the query's JSON text
   *   noun: "filter" or "condition", for the words on the page
   *   emptyText: what an empty query means, if not an event filter's "every event passes"
   */
  function create(options) {
    instances += 1;
    const id = options.id || `cf-query-${instances}`;
    const state = options.state || {};
    const noun = options.noun || "query";
    const fieldsList = () => options.fields() || [];
    const field = (path) => fieldsList().find((f) => f.path === path);
    const operatorsOf = (type) => options.operators[type] || options.operators.any;
    const rowOf = new Map();

    const note = el("p", { class: "cf-query-note", id: `${id}-note`, role: "status", hidden: true });
    const visual = el("div", { class: "cf-query-visual" });
    const jsonId = options.jsonId || `${id}-json`;
    const json = el("textarea", {
      id: jsonId,
      class: "cf-code",
      rows: options.rows || 3,
      spellcheck: "false",
      placeholder: options.placeholder || null,
    });
    if (options.param) json.dataset.param = options.param;
    const advanced = el(
      "details",
      { class: "cf-query-advanced" },
      el("summary", { text: "Advanced (JSON)" }),
      el("label", { for: jsonId, class: "cf-label", text: `The ${noun} as JSON` }),
      json,
      el("p", {
        class: "cf-help",
        text:
          "A MongoDB-style query, as stored. Edit either view: each updates the other. Field " +
          "names as in the variable list, without braces.",
      })
    );
    const element = el("div", { class: "cf-query", id: id }, note, visual, advanced);

    function setNote(text) {
      note.textContent = text || "";
      note.hidden = !text;
      visual.hidden = Boolean(text);
      if (text) advanced.open = true;
    }

    /* Load the model from JSON text; false (with the note shown) when it cannot be. */
    function load(text) {
      state.text = text;
      if (!String(text).trim()) {
        state.root = newGroup("all");
        setNote("");
        return true;
      }
      let query;
      try {
        query = JSON.parse(text);
      } catch (error) {
        state.root = null;
        state.problems = [];
        setNote(`The JSON below is not valid yet (${error.message}); the conditions come back once it is.`);
        return false;
      }
      const root = read(query, field, operatorsOf);
      const written = root && write(root, field);
      if (!root || written.problems.size || !equal(written.query, query)) {
        state.root = null;
        state.problems = [];
        setNote(
          `This ${noun} uses what the point-and-click builder cannot show, so it stays as JSON ` +
            "below, exactly as written; it is saved as it is. Empty the box to start again with conditions."
        );
        return false;
      }
      state.root = root;
      setNote("");
      return true;
    }

    function emit() {
      const written = write(state.root, field);
      state.text = queryText(written.query);
      json.value = state.text;
      showProblems(written.problems);
      options.onChange(state.text);
    }

    function showProblems(problems) {
      state.problems = [];
      rowOf.forEach((row, condition) => {
        const text = problems.get(condition) || "";
        const box = row.querySelector(".cf-cond-problem");
        box.textContent = text ? `Not part of the ${noun} yet: ${text}.` : "";
        box.hidden = !text;
        row.classList.toggle("cf-cond-incomplete", Boolean(text));
        if (text) state.problems.push({ text: `${row.dataset.label}: ${text}`, focus: row.querySelector("select, input") });
      });
    }

    // --- rendering ---
    function render(focusId) {
      rowOf.clear();
      const root = state.root;
      const parts = [];
      if (root.items.length > 1 || root.match === "any") {
        parts.push(matchLine(root, `${id}-match`, ""));
      }
      const items = el("ol", { class: "cf-conds" });
      root.items.forEach((item, index) => items.append(renderItem(item, root, String(index + 1), 1)));
      parts.push(items);
      if (!root.items.length) {
        parts.push(
          el("p", {
            class: "cf-help cf-query-empty",
            text:
              options.emptyText ||
              (noun === "filter" ? "No conditions: every event passes." : "No conditions yet: add one."),
          })
        );
      }
      const add = button("+ Condition", `${id}-add`, `Add a condition to the ${noun}`, () => {
        root.items.push(newCondition());
        render(`${id}-c${root.items.length}-field`);
        emit();
      });
      const inner = root.match === "any" ? "all" : "any";
      const addGroup = button(
        inner === "any" ? "+ Group of alternatives (OR)" : "+ Group of requirements (AND)",
        `${id}-add-group`,
        `Add a group to the ${noun}`,
        () => {
          root.items.push(newGroup(inner, [newCondition()]));
          render(`${id}-c${root.items.length}-1-field`);
          emit();
        }
      );
      parts.push(el("div", { class: "cf-query-add" }, add, " ", addGroup));
      parts.push(el("datalist", { id: `${id}-paths` }, ...fieldsList().map((f) => option(f.path, f.description))));
      visual.replaceChildren(...parts);
      showProblems(write(root, field).problems);
      if (focusId && document.getElementById(focusId)) document.getElementById(focusId).focus();
    }

    function button(text, buttonId, label, onClick) {
      const node = el("button", { type: "button", class: "button cf-query-button", id: buttonId, "aria-label": label, text: text });
      node.addEventListener("click", onClick);
      return node;
    }

    /* "Match [all|any] of these conditions:"; `where` ("Group 2") names it for screen readers. */
    function matchLine(group, selectId, where) {
      const select = el("select", { id: selectId }, option("all", "all (AND)"), option("any", "any (OR)"));
      select.value = group.match;
      select.addEventListener("change", () => {
        group.match = select.value;
        render(selectId);
        emit();
      });
      return el(
        "p",
        { class: "cf-query-match" },
        el("label", { for: selectId }, where ? el("span", { class: "cf-visually-hidden", text: `${where}: ` }) : null, "Match "),
        select,
        el("span", { text: " of these conditions:" })
      );
    }

    function renderItem(item, parent, number, depth) {
      if (item.kind === "group") return renderGroup(item, parent, number, depth);
      return renderCondition(item, parent, number);
    }
    // "2.1" is condition 1 of group 2 on the page; its controls' ids say "2-1".
    const idOf = (number) => number.replace(/\./g, "-");

    function renderGroup(group, parent, number, depth) {
      const key = idOf(number);
      const legendId = `${id}-g${key}-legend`;
      const list = el("ol", { class: "cf-conds" });
      group.items.forEach((item, index) => list.append(renderItem(item, group, `${number}.${index + 1}`, depth + 1)));
      const add = button("+ Condition", `${id}-g${key}-add`, `Add a condition to group ${number}`, () => {
        group.items.push(newCondition());
        render(`${id}-c${key}-${group.items.length}-field`);
        emit();
      });
      const controls = [add];
      if (depth < 2) {
        controls.push(
          " ",
          button("+ Group", `${id}-g${key}-add-group`, `Add a group inside group ${number}`, () => {
            group.items.push(newGroup(group.match === "any" ? "all" : "any", [newCondition()]));
            render(`${id}-c${key}-${group.items.length}-1-field`);
            emit();
          })
        );
      }
      controls.push(
        " ",
        button("Remove group", `${id}-g${key}-remove`, `Remove group ${number}`, () => {
          parent.items.splice(parent.items.indexOf(group), 1);
          render(`${id}-add`);
          emit();
        })
      );
      return el(
        "li",
        { class: "cf-group" },
        el(
          "fieldset",
          { "aria-labelledby": legendId },
          el("legend", { id: legendId, text: `Group ${number}` }),
          matchLine(group, `${id}-g${key}-match`, `Group ${number}`),
          list,
          el("div", { class: "cf-query-add" }, ...controls)
        )
      );
    }

    function pathSelect(condition, selectId, label) {
      const listed = fieldsList().length;
      const select = el(
        "select",
        { id: selectId, class: "cf-query-field" },
        option("", listed ? "Choose a field…" : "No fields listed: type a path")
      );
      const groups = new Map();
      fieldsList().forEach((f) => {
        if (!groups.has(f.group)) groups.set(f.group, el("optgroup", { label: f.group }));
        const item = option(f.path, f.path);
        item.title = f.description;
        groups.get(f.group).append(item);
      });
      groups.forEach((group) => select.append(group));
      // Long lists are searched by typing (the box suggests the listed paths); a path the
      // list lacks (a webhook's own data, an earlier step's result) is typed there too.
      select.append(el("optgroup", { label: "Not in the list, or to search it" }, option(CUSTOM, "Search or type a path…")));
      select.value = condition.custom ? CUSTOM : condition.path;
      return select;
    }

    function renderCondition(condition, parent, number) {
      const prefix = `${id}-c${idOf(number)}`;
      // A path this trigger's data does not list (typed by hand, or kept from another
      // trigger) is shown as typed, never dropped.
      if (condition.path && !field(condition.path)) condition.custom = true;
      const known = condition.custom ? null : field(condition.path);
      const type = known ? known.type : "any";
      const operators = operatorsOf(type);
      const label = `Condition ${number}`;
      const select = pathSelect(condition, `${prefix}-field`, `${label}: field`);
      select.addEventListener("change", () => {
        const before = known ? known.type : "any";
        condition.custom = select.value === CUSTOM;
        condition.path = condition.custom ? "" : select.value;
        const after = field(condition.path) ? field(condition.path).type : "any";
        if (!operatorsOf(after).some(([op]) => op === condition.op)) condition.op = operatorsOf(after)[0][0];
        if (after !== before) condition.value = "";
        render(condition.custom ? `${prefix}-path` : `${prefix}-op`);
        emit();
      });
      const parts = [el("label", { for: `${prefix}-field`, class: "cf-visually-hidden", text: `${label}: field` }), select];
      if (condition.custom) {
        const path = el("input", {
          type: "text",
          id: `${prefix}-path`,
          class: "cf-query-path",
          placeholder: "type to search, e.g. coupon",
          autocomplete: "off",
          spellcheck: "false",
          list: `${id}-paths`,
        });
        path.value = condition.path;
        // A listed path, picked from the suggestions or typed in full, becomes that field
        // (with its type) once chosen: not while typing, "order.status" may go on to
        // "order.statusHistory.status".
        const adopt = () => {
          const found = field(condition.path);
          if (!found) return;
          condition.custom = false;
          if (!operatorsOf(found.type).some(([op]) => op === condition.op)) {
            condition.op = operatorsOf(found.type)[0][0];
            condition.value = "";
          }
          render(`${prefix}-op`);
          emit();
        };
        path.addEventListener("input", (event) => {
          condition.path = path.value.trim();
          emit();
          if (!event.inputType || event.inputType === "insertReplacementText") adopt();
        });
        path.addEventListener("change", adopt);
        parts.push(el("label", { for: path.id, class: "cf-visually-hidden", text: `${label}: path` }), path);
      }
      const opSelect = el("select", { id: `${prefix}-op`, class: "cf-query-op" });
      operators.forEach(([op, text]) => opSelect.append(option(op, text)));
      if (!condition.op) condition.op = operators[0][0];
      opSelect.value = condition.op;
      opSelect.addEventListener("change", () => {
        const wasList = condition.op === "in" || condition.op === "nin";
        condition.op = opSelect.value;
        const isList = condition.op === "in" || condition.op === "nin";
        if (wasList !== isList && (type === "date" || type === "datetime")) condition.value = "";
        render(NEEDS_NO_VALUE.has(condition.op) ? `${prefix}-op` : `${prefix}-value`);
        emit();
      });
      parts.push(el("label", { for: opSelect.id, class: "cf-visually-hidden", text: `${label}: operator` }), opSelect);
      if (!NEEDS_NO_VALUE.has(condition.op)) {
        const input = valueInput(condition, type, known, `${prefix}-value`);
        input.addEventListener("input", () => {
          condition.value = input.value;
          emit();
        });
        parts.push(el("label", { for: input.id, class: "cf-visually-hidden", text: `${label}: value` }), input);
      }
      parts.push(
        button("Remove", `${prefix}-remove`, `Remove condition ${number}`, () => {
          parent.items.splice(parent.items.indexOf(condition), 1);
          render(`${id}-add`);
          emit();
        })
      );
      const help = known ? known.description : condition.custom ? "A path the data reference does not list: numbers and true/false are compared as such." : "";
      const row = el(
        "li",
        { class: "cf-cond", "data-label": label },
        el("div", { class: "cf-cond-controls", role: "group", "aria-label": label }, ...parts),
        help ? el("p", { class: "cf-help", id: `${prefix}-help`, text: help }) : null,
        el("p", { class: "cf-cond-problem", id: `${prefix}-problem`, hidden: true })
      );
      rowOf.set(condition, row);
      return row;
    }

    function valueInput(condition, type, known, inputId) {
      const list = condition.op === "in" || condition.op === "nin";
      const pattern = ["contains", "notContains", "startsWith", "regex"].includes(condition.op);
      let inputType = "text";
      if (!list && !pattern && type === "date") inputType = "date";
      if (!list && !pattern && type === "datetime") inputType = "datetime-local";
      const example = known && known.example !== null && known.example !== undefined ? String(known.example) : "";
      let placeholder = example ? `e.g. ${example}` : "";
      if (list) placeholder = example ? `e.g. ${example}, …  (separate with commas)` : "separate with commas";
      if (condition.op === "regex") placeholder = "e.g. ^VIP";
      const input = el("input", {
        type: inputType,
        id: inputId,
        class: "cf-query-value",
        placeholder: inputType === "text" ? placeholder : null,
        inputmode: type === "number" && !list ? "decimal" : null,
        autocomplete: "off",
        title: type === "datetime" && !list ? "In UTC, as the event data has it" : null,
        "aria-describedby": `${inputId.replace(/-value$/, "")}-problem`,
      });
      input.value = condition.value || "";
      return input;
    }

    json.addEventListener("input", () => {
      if (load(json.value)) render();
      options.onChange(json.value);
    });
    advanced.addEventListener("toggle", () => {
      state.open = advanced.open;
    });

    // --- start: from the text the first time, then from the model kept in `state` (which
    // holds conditions not complete yet, that the text cannot) ---
    if (state.text === undefined || !state.root) load(state.text === undefined ? options.text || "" : state.text);
    json.value = state.text;
    if (state.open) advanced.open = true;
    if (state.root) render();
    return {
      element: element,
      /* The conditions not complete yet: [{text, focus}] (empty when none). */
      problems: () => state.problems || [],
      /* Read the query again with the fields of another trigger: field types can differ,
       * and the JSON is what is saved. */
      refresh: () => {
        if (load(state.text)) render();
      },
    };
  }

  window.CareflowQuery = { create: create, read: read, write: write };
})();
