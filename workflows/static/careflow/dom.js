/* careflow's DOM helpers, shared by the workflow builder (builder.js) and its query builder
 * (query-builder.js); loaded before both. Plain script, no build step.
 *
 * window.CareflowDom.el(tag, attrs, ...children) → a new element. In `attrs`, "text" sets its
 * text and "class" its class; `true` makes an empty attribute and false, null or undefined
 * none. Falsy children are left out.
 * window.CareflowDom.option(value, label) → an <option>.
 */
(function () {
  "use strict";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([name, value]) => {
      if (value === undefined || value === null || value === false) return;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    });
    children.forEach((child) => child && node.append(child));
    return node;
  }
  const option = (value, label) => el("option", { value: value, text: label });

  window.CareflowDom = { el: el, option: option };
})();
