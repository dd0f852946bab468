// Control from the page: every action posts to the Flower-compatible control API, which waits
// for the nodes' replies; the panel shows what every node answered (ok / error / no reply).
// Destructive actions ask first. Viewers never see these buttons (the API refuses them anyway).

import { canControl, post } from "./api.js";
import { h, replace } from "./dom.js";

export function confirmDialog(title, text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "ok");
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", done);
    dialog.showModal();
    dialog.querySelector("button.secondary").focus();
  });
}

export function toast(text, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = `toast show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = "toast"; }, 5000);
}

function replyText(value) {
  if (value === null || value === undefined) return ["noreply", "no reply"];
  if (typeof value === "object" && "error" in value) return ["error", String(value.error)];
  if (typeof value === "object" && "ok" in value) return ["ok", String(value.ok)];
  return ["ok", JSON.stringify(value)];
}

// The replies of one action: message, HTTP status, then one row per node.
export function renderReplies(target, label, result) {
  const body = result.body || {};
  const message = typeof body === "string" ? body : body.message || "";
  const replies = (typeof body === "object" && body.replies) || {};
  const rows = Object.entries(replies).map(([node, value]) => {
    const [kind, text] = replyText(value);
    return h("tr", { class: `reply reply-${kind}` },
      h("td", { class: "mono" }, node), h("td", {}, h("span", { class: `badge ${kind}` }, kind)),
      h("td", { class: "reply-text" }, text));
  });
  replace(target,
    h("div", { class: `replies ${result.ok ? "ok" : "failed"}`, "data-status": String(result.status) },
      h("p", {}, h("strong", {}, label), " → ", h("span", { class: "status" }, `HTTP ${result.status}`),
        message ? ` · ${message}` : ""),
      rows.length ? h("table", { class: "table compact" },
        h("thead", {}, h("tr", {}, h("th", {}, "Node"), h("th", {}, "Result"), h("th", {}, "Reply"))),
        h("tbody", {}, rows)) : null));
}

// A button that runs one control action and shows the replies in `target`.
// form: object or a function returning one (read at click time); confirm: a question or null.
export function actionButton({ label, path, form = {}, confirm = null, target, cls = "", onDone }) {
  if (!canControl()) return null;
  const button = h("button", { type: "button", class: `action ${confirm ? "danger" : ""} ${cls}`,
    "data-action": label });
  button.textContent = label;
  button.addEventListener("click", async () => {
    const values = typeof form === "function" ? form() : form;
    if (values === null) return;
    if (confirm && !(await confirmDialog(label, typeof confirm === "function" ? confirm() : confirm, label))) return;
    button.disabled = true;
    replace(target, h("p", { class: "muted" }, `${label}: waiting for the replies…`));
    try {
      const result = await post(typeof path === "function" ? path() : path, values);
      renderReplies(target, label, result);
      toast(`${label}: HTTP ${result.status}`, result.ok ? "ok" : "error");
      if (onDone) onDone(result);
    } catch (error) {
      replace(target, h("p", { class: "error" }, `${label} failed: ${error.message}`));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

export function repliesBox() {
  return h("div", { class: "replies-box", "aria-live": "polite" });
}

export function field(label, attrs) {
  const input = h("input", { ...attrs, "aria-label": label });
  return [h("label", { class: "field" }, h("span", {}, label), input), input];
}
