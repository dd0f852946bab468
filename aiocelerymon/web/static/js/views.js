// The views. Each mount(main, route, app) draws into <main> and returns
// {onLive(message), destroy()}; the router calls onLive for every push message.

import { canControl, get, path as apiPath } from "./api.js";
import { Chart, RATE_LABELS, rateData } from "./charts.js";
import { actionButton, field, repliesBox } from "./control.js";
import {
  empty, fmtAgo, fmtClock, fmtDuration, fmtTime, fmtValue, h, kv, pre, replace,
  stateBadge, statusBadge, taskLink, throttle, workerLink,
} from "./dom.js";

const STATES = ["RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "PENDING", "REJECTED"];

function section(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

function errorBox(error) {
  return h("p", { class: "error" }, `Could not load: ${error.message}`);
}

function load(el) {
  return h("p", { class: "muted" }, el || "Loading…");
}

// -- dashboard ----------------------------------------------------------------------------

export function dashboard(main) {
  const cards = h("div", { class: "cards" });
  const table = h("div", { class: "table-wrap" });
  const stuckBox = h("div", {});
  const chartBox = h("div", { class: "charts one" });
  replace(main,
    h("h1", {}, "Dashboard"), cards,
    section("Workers", table),
    h("section", { class: "panel", id: "stuck-panel" }, h("h2", {}, "Stuck tasks"), stuckBox),
    section("Cluster throughput (tasks/s)", chartBox));
  const chart = new Chart(chartBox, { title: "cluster", labels: RATE_LABELS });
  let alive = true;

  async function refresh() {
    let data;
    try {
      data = await get("api/page/workers");
    } catch (error) {
      replace(table, errorBox(error));
      return;
    }
    if (!alive) return;
    const t = data.totals;
    replace(cards,
      card("Workers online", `${t.online} / ${t.workers}`, "online"),
      card("Active", t.active, "active"), card("Processed", t.processed, "processed"),
      card("Succeeded", t.succeeded, "succeeded"), card("Failed", t.failed, "failed"),
      card("Retried", t.retried, "retried"),
      card("Events", data.ingestion.events, "events"));
    if (!data.workers.length) {
      replace(table, empty("No worker seen yet. Workers appear when they send events (celery worker -E, or --enable-events)."));
    } else {
      replace(table, h("table", { class: "table nav-rows", id: "workers-table" },
        h("thead", {}, h("tr", {}, ["Worker", "Status", "Active", "Processed", "Failed",
          "Succeeded", "Retried", "Load average", "Version"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, data.workers.map((w) => h("tr", {
          class: w.alive ? "worker" : "worker offline", "data-worker": w.hostname,
          "data-href": `#/worker/${encodeURIComponent(w.hostname)}`,
        },
        h("td", {}, workerLink(w.hostname)), h("td", {}, statusBadge(w.alive)),
        h("td", { class: "num", "data-col": "active" }, w.active ?? 0),
        h("td", { class: "num", "data-col": "processed" }, w.processed ?? 0),
        h("td", { class: "num", "data-col": "failed" }, w.failed),
        h("td", { class: "num", "data-col": "succeeded" }, w.succeeded),
        h("td", { class: "num", "data-col": "retried" }, w.retried),
        h("td", { class: "num hide-sm" }, Array.isArray(w.loadavg) ? w.loadavg.map((x) => Number(x).toFixed(2)).join(", ") : ""),
        h("td", { class: "hide-sm" }, [w.sw_ident, w.sw_ver].filter(Boolean).join(" ")))))));
    }
  }

  async function refreshSlow() {
    try {
      const [stuck, series] = await Promise.all([get("api/page/stuck"), get("api/page/series", { window: 300 })]);
      if (!alive) return;
      replace(stuckBox, stuckTable(stuck.stuck));
      chart.update(rateData(series.rates.t, series.rates.cluster));
    } catch (error) {
      replace(stuckBox, errorBox(error));
    }
  }

  const live = throttle(refresh, 500);
  refresh();
  refreshSlow();
  const timer = setInterval(() => { refresh(); refreshSlow(); }, 2000);
  return {
    onLive(message) {
      if (message.kind === "digest" || message.kind === "resync") live();
    },
    destroy() { alive = false; clearInterval(timer); live.cancel(); chart.destroy(); },
  };
}

function card(label, value, key) {
  return h("div", { class: `card card-${key}`, "data-card": key },
    h("div", { class: "card-value" }, String(value ?? 0)), h("div", { class: "card-label" }, label));
}

function stuckTable(rows) {
  if (!rows.length) return empty("None: every running task is within its type's usual runtime.");
  return h("table", { class: "table", id: "stuck-table" },
    h("thead", {}, h("tr", {}, ["Task", "Name", "Worker", "Running for", "Usual (p95)"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", { class: "stuck", "data-uuid": r.uuid },
      h("td", {}, taskLink(r.uuid)), h("td", {}, r.name), h("td", {}, workerLink(r.worker)),
      h("td", { class: "num" }, fmtDuration(r.elapsed)), h("td", { class: "num" }, fmtDuration(r.usual))))));
}

// -- worker detail ------------------------------------------------------------------------

const WORKER_TABS = ["pool", "broker", "queues", "tasks", "limits", "config", "system", "other"];

export function worker(main, route, app) {
  const name = route.parts[1] || "";
  const tab = WORKER_TABS.includes(route.parts[2]) ? route.parts[2] : "pool";
  const header = h("div", { class: "title-row" });
  const tabs = h("nav", { class: "tabs", role: "tablist", "aria-label": "Worker" },
    WORKER_TABS.map((t) => h("a", {
      href: `#/worker/${encodeURIComponent(name)}/${t}`, role: "tab",
      class: t === tab ? "tab active" : "tab", "aria-selected": t === tab ? "true" : "false", "data-tab": t,
    }, t[0].toUpperCase() + t.slice(1))));
  const body = h("div", { class: "tab-body", role: "tabpanel" }, load());
  const replies = repliesBox();
  replace(main, header, tabs, replies, body);
  let alive = true;
  let info = null;
  let summary = null;

  function drawHeader() {
    replace(header, h("h1", {}, h("a", { href: "#/" }, "Workers"), " / ", name),
      summary ? statusBadge(summary.alive) : null,
      h("div", { class: "spacer" }),
      h("button", { type: "button", class: "secondary", onclick: () => refresh(true) }, "Refresh"),
      actionButton({
        label: "Shut down", path: `api/worker/shutdown/${apiPath(name)}`, target: replies,
        confirm: `Shut down worker ${name}? It stops taking tasks and exits (warm shutdown).`,
      }));
  }

  async function refresh(force) {
    try {
      const data = await get(`api/page/worker/${apiPath(name)}`, { refresh: force || !info ? 1 : 0 });
      if (!alive) return;
      info = data.info || {};
      summary = data.summary;
      drawHeader();
      draw();
    } catch (error) {
      replace(body, errorBox(error));
    }
  }

  function draw() {
    const stats = info.stats || {};
    const view = {
      pool: poolTab, broker: () => kv(Object.entries(stats.broker || {})),
      queues: queuesTab, tasks: tasksTab, limits: limitsTab,
      config: () => configTab(info.conf || {}),
      system: () => kv(Object.entries(stats.rusage || {})),
      other: otherTab,
    }[tab];
    replace(body, view(stats));
  }

  function poolTab(stats) {
    const pool = stats.pool || {};
    const [nLabel, nInput] = field("N", { type: "number", min: "1", value: "1", name: "n", class: "narrow" });
    const [minLabel, minInput] = field("Min", { type: "number", min: "0", value: "1", name: "min", class: "narrow" });
    const [maxLabel, maxInput] = field("Max", { type: "number", min: "1", value: String(pool["max-concurrency"] || 2), name: "max", class: "narrow" });
    const base = `api/worker/pool`;
    const controls = canControl() ? h("div", { class: "controls" },
      h("div", { class: "control-group" }, nLabel,
        actionButton({ label: "Grow", path: `${base}/grow/${apiPath(name)}`, form: () => ({ n: nInput.value }), target: replies, onDone: () => refresh(true) }),
        actionButton({ label: "Shrink", path: `${base}/shrink/${apiPath(name)}`, form: () => ({ n: nInput.value }), target: replies, onDone: () => refresh(true) })),
      h("div", { class: "control-group" }, minLabel, maxLabel,
        actionButton({ label: "Autoscale", path: `${base}/autoscale/${apiPath(name)}`, form: () => ({ min: minInput.value, max: maxInput.value }), target: replies })),
      h("div", { class: "control-group" },
        actionButton({ label: "Restart pool", path: `${base}/restart/${apiPath(name)}`, target: replies,
          confirm: `Restart the pool of ${name}? Running tasks are interrupted (needs worker_pool_restarts).` }))) : null;
    return h("div", {}, controls, kv([
      ["Implementation", pool.implementation], ["Max concurrency", pool["max-concurrency"]],
      ["Processes", pool.processes ? pool.processes.join(", ") : ""],
      ["Max tasks per child", pool["max-tasks-per-child"]], ["Put guarded by semaphore", pool["put-guarded-by-semaphore"]],
      ["Timeouts", pool.timeouts], ["Writes", pool.writes],
    ]));
  }

  function queuesTab() {
    const queues = info.active_queues || [];
    const [qLabel, qInput] = field("Queue", { type: "text", name: "queue", placeholder: "queue name" });
    const add = canControl() ? h("div", { class: "controls" }, h("div", { class: "control-group" }, qLabel,
      actionButton({ label: "Add consumer", path: `api/worker/queue/add-consumer/${apiPath(name)}`,
        form: () => (qInput.value.trim() ? { queue: qInput.value.trim() } : null), target: replies,
        onDone: () => refresh(true) }))) : null;
    return h("div", {}, add, queues.length ? h("table", { class: "table", id: "queues-table" },
      h("thead", {}, h("tr", {}, ["Name", "Exclusive", "Durable", "Routing key", "No ACK", "Alias", "Auto delete", "Binding", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, queues.map((q) => h("tr", { "data-queue": q.name },
        h("td", {}, q.name), h("td", {}, String(q.exclusive)), h("td", {}, String(q.durable)),
        h("td", {}, q.routing_key), h("td", {}, String(q.no_ack)), h("td", {}, q.alias ?? ""),
        h("td", {}, String(q.auto_delete)), h("td", { class: "mono" }, fmtValue(q.bindings)),
        h("td", {}, actionButton({ label: "Cancel consumer", path: `api/worker/queue/cancel-consumer/${apiPath(name)}`,
          form: { queue: q.name }, target: replies, confirm: `Stop ${name} consuming from ${q.name}?`,
          onDone: () => refresh(true) })))))) : empty("No active queues reported (the worker did not answer inspect)."));
  }

  function taskList(title, rows, revoke) {
    const items = (rows || []).map((t) => t.request || t);
    return section(`${title} (${items.length})`, items.length ? h("table", { class: "table compact" },
      h("thead", {}, h("tr", {}, ["Task", "Name", "Args", "Kwargs", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((t) => h("tr", {},
        h("td", {}, taskLink(t.id)), h("td", {}, t.name || t.type || ""),
        h("td", { class: "mono clip" }, fmtValue(t.args)), h("td", { class: "mono clip" }, fmtValue(t.kwargs)),
        h("td", {}, revoke ? actionButton({ label: "Terminate", path: `api/task/revoke/${apiPath(t.id)}`,
          form: { terminate: "true" }, target: replies, confirm: `Terminate task ${t.id}?` }) : null))))) : empty("None."));
  }

  function tasksTab(stats) {
    const total = stats.total || {};
    const revoked = info.revoked || [];
    return h("div", {},
      section("Processed", Object.keys(total).length ? kv(Object.entries(total)) : empty("None yet.")),
      taskList("Active", info.active, true), taskList("Scheduled", info.scheduled),
      taskList("Reserved", info.reserved),
      section(`Revoked (${revoked.length})`, revoked.length ? h("ul", { class: "mono" }, revoked.map((id) => h("li", {}, taskLink(id)))) : empty("None.")));
  }

  function limitsTab() {
    const registered = info.registered || [];
    if (!registered.length) return empty("No registered tasks reported.");
    return h("table", { class: "table", id: "limits-table" },
      h("thead", {}, h("tr", {}, ["Task", canControl() ? "Rate limit" : "", canControl() ? "Time limits (soft / hard, s)" : ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, registered.map((entry) => {
        const task = String(entry).split(" ")[0];
        const extra = String(entry).slice(task.length).trim();
        if (!canControl()) return h("tr", { "data-task": task }, h("td", {}, task, " ", h("span", { class: "muted" }, extra)), h("td", {}), h("td", {}));
        const [rLabel, rate] = field("Rate", { type: "text", placeholder: "e.g. 10/m", class: "narrow" });
        const [sLabel, soft] = field("Soft", { type: "number", min: "0", class: "narrow" });
        const [hLabel, hard] = field("Hard", { type: "number", min: "0", class: "narrow" });
        return h("tr", { "data-task": task },
          h("td", {}, task, " ", h("span", { class: "muted" }, extra)),
          h("td", {}, h("div", { class: "control-group" }, rLabel,
            actionButton({ label: "Set rate limit", path: `api/task/rate-limit/${apiPath(task)}`,
              form: () => ({ ratelimit: rate.value.trim() || "0", workername: name }), target: replies, onDone: () => refresh(true) }))),
          h("td", {}, h("div", { class: "control-group" }, sLabel, hLabel,
            actionButton({ label: "Set time limits", path: `api/task/timeout/${apiPath(task)}`,
              form: () => ({ soft: soft.value, hard: hard.value, workername: name }), target: replies }))));
      })));
  }

  function otherTab(stats) {
    const s = summary || {};
    return kv([
      ["PID", stats.pid ?? s.pid], ["Clock", stats.clock], ["Prefetch count", stats.prefetch_count],
      ["Uptime", typeof stats.uptime === "number" ? fmtDuration(stats.uptime) : ""],
      ["Software", [s.sw_ident, s.sw_ver, s.sw_sys].filter(Boolean).join(" ")],
      ["Heartbeat frequency", s.freq ? `${s.freq} s` : ""], ["Last heartbeat", s.last_heartbeat ? fmtAgo(s.last_heartbeat) : ""],
      ["Load average", s.loadavg], ["Inspected", info.timestamp ? fmtTime(info.timestamp) : ""],
    ]);
  }

  drawHeader();
  refresh(false);
  const live = throttle(async () => {
    try {
      const data = await get(`api/page/worker/${apiPath(name)}`);
      if (!alive) return;
      summary = data.summary;
      drawHeader();
    } catch { /* the next event retries */ }
  }, 1000);
  return {
    onLive(message) {
      if (message.kind === "resync" || (message.kind === "digest" && message.workers.some((w) => w.hostname === name))) live();
    },
    destroy() { alive = false; live.cancel(); },
    tabs: WORKER_TABS.map((t) => `#/worker/${encodeURIComponent(name)}/${t}`),
    tabIndex: WORKER_TABS.indexOf(tab),
  };
}

function configTab(conf) {
  const rows = Object.entries(conf).sort(([a], [b]) => a.localeCompare(b));
  return rows.length ? kv(rows) : empty("No configuration reported.");
}

// -- tasks ----------------------------------------------------------------------------------

const SORTABLE = { name: "Name", state: "State", received: "Received", started: "Started" };

export function tasks(main, route) {
  const params = route.params;
  const q = params.get("q") || "";
  const state = params.get("state") || "";
  const sort = params.get("sort") || "";
  const limit = Math.min(500, Math.max(1, Number(params.get("limit")) || 50));
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const input = h("input", { type: "search", id: "task-search", value: q, name: "q",
    placeholder: "state:FAILURE worker:w1@host name:proj.add  free text…", "aria-label": "Search tasks",
    autocomplete: "off", spellcheck: "false" });
  const chips = h("div", { class: "chips", role: "group", "aria-label": "State" });
  const info = h("span", { class: "muted", id: "tasks-count" });
  const table = h("div", { class: "table-wrap" }, load());
  const pager = h("div", { class: "pager" });
  const form = h("form", { class: "search", role: "search" }, input, h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go({ q: input.value.trim(), offset: 0 });
  });
  replace(main, h("h1", {}, "Tasks"), form, chips, h("div", { class: "title-row" }, info), table, pager);
  let alive = true;
  let rows = new Map();

  function go(change) {
    const next = new URLSearchParams({ q, state, sort, limit: String(limit), offset: String(offset) });
    for (const [k, v] of Object.entries(change)) next.set(k, String(v));
    for (const [k, v] of [...next.entries()]) if (!v || (k === "offset" && v === "0") || (k === "limit" && v === "50")) next.delete(k);
    const s = next.toString();
    location.hash = `#/tasks${s ? `?${s}` : ""}`;
  }

  function drawChips(states, all) {
    replace(chips, [["", "All", all], ...STATES.map((s) => [s, s, states[s] || 0])].map(([value, label, n]) =>
      h("button", { type: "button", class: value === state ? "chip active" : "chip", "data-state": value || "All",
        "aria-pressed": value === state ? "true" : "false", onclick: () => go({ state: value, offset: 0 }) },
      label, " ", h("span", { class: "count" }, String(n)))));
  }

  function header(key, label) {
    if (!key) return h("th", { scope: "col" }, label);
    const active = sort.replace("-", "") === key;
    const desc = sort.startsWith("-");
    const next = active && !desc ? `-${key}` : key;
    return h("th", { scope: "col", "aria-sort": active ? (desc ? "descending" : "ascending") : "none" },
      h("button", { type: "button", class: "sort", onclick: () => go({ sort: next, offset: 0 }) },
        label, active ? (desc ? " ▼" : " ▲") : ""));
  }

  function row(t) {
    const tr = h("tr", { class: t.stuck ? "task stuck" : "task", "data-uuid": t.uuid,
      "data-href": `#/task/${encodeURIComponent(t.uuid)}` },
    h("td", {}, t.name || ""), h("td", { class: "uuid", title: t.uuid }, taskLink(t.uuid, `${t.uuid.slice(0, 8)}…`)),
    h("td", { "data-col": "state" }, stateBadge(t.state)),
    h("td", { class: "mono clip hide-sm" }, fmtValue(t.args)), h("td", { class: "mono clip hide-sm" }, fmtValue(t.kwargs)),
    h("td", { class: "mono clip hide-sm" }, fmtValue(t.result ?? t.exception)),
    // Time of day in the table (the date is in the tooltip and on the task's page).
    h("td", { class: "num", title: fmtTime(t.received) }, fmtClock(t.received)),
    h("td", { class: "num hide-sm", title: fmtTime(t.started) }, fmtClock(t.started)),
    h("td", { class: "num" }, t.runtime != null ? fmtDuration(t.runtime) : ""),
    h("td", {}, workerLink(t.worker)));
    return tr;
  }

  async function refresh() {
    let data;
    try {
      data = await get("api/page/tasks", { q, state, sort_by: sort, limit, offset });
    } catch (error) {
      const text = error.body && error.body.error ? error.body.error : error.message;
      replace(table, h("p", { class: "error", id: "search-error" }, text));
      return;
    }
    if (!alive) return;
    drawChips(data.states, data.all);
    const last = Math.min(offset + data.tasks.length, data.total);
    info.textContent = data.total ? `${offset + 1}–${last} of ${data.total}` : "0 tasks";
    rows = new Map();
    if (!data.tasks.length) {
      replace(table, empty(q || state ? "No task matches." : "No task seen yet."));
    } else {
      const tbody = h("tbody", {}, data.tasks.map((t) => {
        const tr = row(t);
        rows.set(t.uuid, tr);
        return tr;
      }));
      replace(table, h("table", { class: "table nav-rows", id: "tasks-table" },
        h("thead", {}, h("tr", {}, header("name", "Name"), header("", "UUID"), header("state", "State"),
          h("th", { class: "hide-sm" }, "Args"), h("th", { class: "hide-sm" }, "Kwargs"), h("th", { class: "hide-sm" }, "Result"),
          header("received", "Received"), h("th", { class: "hide-sm" }, header("started", "Started").firstChild),
          h("th", {}, "Runtime"), h("th", {}, "Worker"))), tbody));
    }
    replace(pager,
      h("button", { type: "button", class: "secondary", id: "prev-page", disabled: offset <= 0, onclick: () => go({ offset: Math.max(0, offset - limit) }) }, "‹ Previous"),
      h("span", { class: "muted" }, `page ${Math.floor(offset / limit) + 1} of ${Math.max(1, Math.ceil(data.total / limit))}`),
      h("button", { type: "button", class: "secondary", id: "next-page", disabled: last >= data.total, onclick: () => go({ offset: offset + limit }) }, "Next ›"),
      h("label", { class: "field" }, h("span", {}, "Per page"),
        h("select", { onchange: (e) => go({ limit: e.target.value, offset: 0 }) },
          [20, 50, 100, 200, 500].map((n) => h("option", { value: String(n), selected: n === limit }, String(n))))));
  }

  const reload = throttle(refresh, 1000);
  refresh();
  return {
    onLive(message) {
      if (message.kind === "resync") { reload(); return; }
      if (message.kind !== "digest" || !message.tasks.length) return;
      let unseen = message.more > 0;
      let changed = false;
      for (const t of message.tasks) {
        const tr = rows.get(t.uuid);
        if (!tr) { unseen = true; continue; }
        // In place, at once; the next reload brings the other columns.
        const cell = tr.querySelector('[data-col="state"]');
        if (cell && cell.textContent !== t.state) {
          replace(cell, stateBadge(t.state));
          tr.classList.remove("flash");
          void tr.offsetWidth;
          tr.classList.add("flash");
          changed = true;
        }
      }
      if (changed || (unseen && offset === 0)) reload();
    },
    destroy() { alive = false; reload.cancel(); },
    prev: offset > 0 ? () => go({ offset: Math.max(0, offset - limit) }) : null,
    next: () => go({ offset: offset + limit }),
  };
}

// -- task detail ------------------------------------------------------------------------------

const TIMES = ["sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected", "timestamp"];

export function task(main, route) {
  const uuid = route.parts[1] || "";
  const body = h("div", {}, load());
  const replies = repliesBox();
  replace(main, h("h1", {}, h("a", { href: "#/tasks" }, "Tasks"), " / ", h("span", { class: "mono" }, uuid)), replies, body);
  let alive = true;

  async function refresh() {
    let t;
    try {
      t = (await get(`api/page/task/${apiPath(uuid)}`)).task;
    } catch (error) {
      replace(body, errorBox(error));
      return;
    }
    if (!alive) return;
    if (!t) {
      // Shown until its first event arrives (the live digest reloads this view).
      replace(body, empty(`Unknown task ${uuid}: not seen in the event stream yet, or dropped after --max-tasks.`));
      return;
    }
    const signal = h("select", { "aria-label": "Signal" }, ["SIGTERM", "SIGKILL", "SIGINT", "SIGUSR1"].map((s) => h("option", { value: s }, s)));
    const done = ["SUCCESS", "FAILURE", "REVOKED", "REJECTED"].includes(t.state);
    const controls = canControl() ? h("div", { class: "controls" }, h("div", { class: "control-group" },
      actionButton({ label: "Revoke", path: `api/task/revoke/${apiPath(uuid)}`, form: { terminate: "false" }, target: replies,
        confirm: `Revoke task ${uuid}? Workers will discard it if it has not started.`, onDone: refresh }),
      done ? null : signal,
      done ? null : actionButton({ label: "Terminate", path: `api/task/revoke/${apiPath(uuid)}`, target: replies,
        form: () => ({ terminate: "true", signal: signal.value }),
        confirm: () => `Terminate task ${uuid} with ${signal.value}? The process running it is signalled.`, onDone: refresh }))) : null;
    const children = Array.isArray(t.children) ? t.children : [];
    replace(body, controls, h("div", { class: "grid2" },
      section("Task", kv([
        ["Name", t.name], ["UUID", h("span", { class: "mono" }, t.uuid)], ["State", stateBadge(t.state)],
        ["Worker", workerLink(t.worker)], ["Retries", t.retries], ["Runtime", t.runtime != null ? fmtDuration(t.runtime) : ""],
        ["Parent", taskLink(t.parent_id || t.parent)], ["Root", taskLink(t.root_id || t.root)],
        ["Children", children.length ? h("span", {}, children.map((c) => [taskLink(c), " "])) : ""],
        ["ETA", t.eta], ["Expires", t.expires], ["Exchange", t.exchange], ["Routing key", t.routing_key],
        ["Clock", t.clock], ["Client", t.client],
      ])),
      section("Timestamps", kv(TIMES.map((k) => [k[0].toUpperCase() + k.slice(1), fmtTime(t[k])])))),
    section("Arguments", kv([["args", pre(t.args)], ["kwargs", pre(t.kwargs)]])),
    section("Result", t.result != null ? pre(t.result) : empty("No result.")),
    t.exception ? section("Exception", pre(t.exception, "err")) : null,
    t.traceback ? section("Traceback", pre(t.traceback, "err")) : null);
  }

  refresh();
  const reload = throttle(refresh, 300);
  return {
    onLive(message) {
      if (message.kind === "digest" && message.tasks.some((t) => t.uuid === uuid)) reload();
    },
    destroy() { alive = false; reload.cancel(); },
  };
}

// -- broker --------------------------------------------------------------------------------

export function broker(main) {
  const table = h("div", { class: "table-wrap" }, load());
  const brokerInfo = h("div", {});
  const chartBox = h("div", { class: "charts one" });
  replace(main, h("h1", {}, "Broker"), section("Queues", table), section("Queue depth over time", chartBox), section("Connection", brokerInfo));
  const chart = new Chart(chartBox, { title: "queue depth", labels: ["messages"] });
  let alive = true;

  async function refresh() {
    try {
      const [queues, series] = await Promise.all([get("api/queues/length"), get("api/page/series", { window: 300 })]);
      if (!alive) return;
      const list = queues.active_queues || [];
      replace(table, list.length ? h("table", { class: "table", id: "broker-queues" },
        h("thead", {}, h("tr", {}, ["Queue", "Messages", "Consumers"].map((c) => h("th", {}, c)))),
        h("tbody", {}, list.map((q) => h("tr", { "data-queue": q.name },
          h("td", {}, q.name), h("td", { class: "num", "data-col": "messages" }, q.messages),
          h("td", { class: "num", "data-col": "consumers" }, q.consumers ?? "n/a"))))) : empty("No queue found on the broker."));
      queueChart(chart, series.queues);
    } catch (error) {
      replace(table, errorBox(error));
    }
  }

  async function connection() {
    try {
      const workers = await get("api/workers");
      if (!alive) return;
      const first = Object.values(workers).find((w) => w.stats && w.stats.broker);
      replace(brokerInfo, first ? kv(Object.entries(first.stats.broker)) : empty("No worker reported its broker connection yet."));
    } catch (error) {
      replace(brokerInfo, errorBox(error));
    }
  }

  refresh();
  connection();
  const timer = setInterval(refresh, 2000);
  return { onLive() {}, destroy() { alive = false; clearInterval(timer); chart.destroy(); } };
}

function queueChart(chart, queues) {
  const names = Object.keys(queues.queues);
  if (!names.length) return;
  chart.update([queues.t, ...names.map((n) => queues.queues[n])], names);
}

// -- charts --------------------------------------------------------------------------------

export function charts(main, route) {
  const window = Number(route.params.get("window")) || 300;
  const pick = h("select", { "aria-label": "Window", id: "chart-window",
    onchange: (e) => { location.hash = `#/charts?window=${e.target.value}`; } },
  [[60, "1 min"], [300, "5 min"], [600, "10 min"]].map(([v, l]) => h("option", { value: String(v), selected: v === window }, l)));
  const cluster = h("div", { class: "charts one" });
  const byWorker = h("div", { class: "charts" });
  const byTask = h("div", { class: "charts" });
  const runtimes = h("div", { class: "table-wrap" });
  const queues = h("div", { class: "charts one" });
  replace(main, h("div", { class: "title-row" }, h("h1", {}, "Charts"), h("div", { class: "spacer" }), pick),
    section("Cluster: tasks per second", cluster), section("Per worker", byWorker), section("Per task type", byTask),
    section("Runtime percentiles per task type", runtimes), section("Queue depth", queues));
  const clusterChart = new Chart(cluster, { title: "cluster", labels: RATE_LABELS });
  const queueCh = new Chart(queues, { title: "queue depth", labels: ["messages"] });
  const perWorker = new Map();
  const perTask = new Map();
  let alive = true;

  function sync(map, parent, data, t) {
    for (const [key, chart] of map) if (!(key in data)) { chart.destroy(); map.delete(key); }
    for (const [key, series] of Object.entries(data)) {
      if (!map.has(key)) map.set(key, new Chart(parent, { title: key, labels: RATE_LABELS }));
      map.get(key).update(rateData(t, series));
    }
  }

  async function refresh() {
    let data;
    try {
      data = await get("api/page/series", { window });
    } catch (error) {
      replace(runtimes, errorBox(error));
      return;
    }
    if (!alive) return;
    const r = data.rates;
    clusterChart.update(rateData(r.t, r.cluster));
    sync(perWorker, byWorker, r.workers, r.t);
    sync(perTask, byTask, r.tasks, r.t);
    const rt = Object.entries(data.runtimes);
    replace(runtimes, rt.length ? h("table", { class: "table", id: "runtime-table" },
      h("thead", {}, h("tr", {}, ["Task type", "Samples", "p50", "p90", "p95", "p99", "Max"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rt.map(([name, p]) => h("tr", { "data-task": name }, h("td", {}, name), h("td", { class: "num" }, p.count),
        ["p50", "p90", "p95", "p99", "max"].map((k) => h("td", { class: "num" }, fmtDuration(p[k]))))))) : empty("No task finished yet."));
    queueChart(queueCh, data.queues);
  }

  refresh();
  const timer = setInterval(refresh, 2000);
  return {
    onLive() {},
    destroy() {
      alive = false;
      clearInterval(timer);
      [clusterChart, queueCh, ...perWorker.values(), ...perTask.values()].forEach((c) => c.destroy());
    },
  };
}

// -- live event tail -----------------------------------------------------------------------

const MAX_TAIL = 500;

export function events(main, route, app) {
  const p = route.params;
  const filters = { type: p.get("type") || "", worker: p.get("worker") || "", taskname: p.get("taskname") || "", state: p.get("state") || "" };
  const inputs = {};
  const form = h("form", { class: "filters", id: "tail-filters" },
    Object.entries({ type: "Event type (task-*, worker-online…)", worker: "Worker", taskname: "Task name", state: "State" }).map(([key, label]) => {
      const [wrap, input] = field(label, { type: "text", name: key, value: filters[key], placeholder: key === "type" ? "task-failed,task-succeeded" : "" });
      inputs[key] = input;
      return wrap;
    }),
    h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, input] of Object.entries(inputs)) if (input.value.trim()) next.set(k, input.value.trim());
    location.hash = `#/events${next.toString() ? `?${next}` : ""}`;
  });
  const pause = h("button", { type: "button", class: "secondary", id: "tail-pause", "aria-pressed": "false" }, "Pause");
  const status = h("span", { class: "muted", id: "tail-status" }, "connecting…");
  const list = h("tbody", {});
  replace(main, h("div", { class: "title-row" }, h("h1", {}, "Live events"), h("div", { class: "spacer" }), status, pause),
    form, h("div", { class: "table-wrap" }, h("table", { class: "table compact", id: "tail" },
      h("thead", {}, h("tr", {}, ["Time", "Type", "Worker", "Task", "Name", "State"].map((c) => h("th", {}, c)))), list)));
  let paused = false;
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
  });
  const stream = new app.Live(Object.fromEntries(Object.entries(filters).filter(([, v]) => v)), (s) => { status.textContent = s; });
  stream.on((message) => {
    if (message.kind === "lagged") {
      list.prepend(h("tr", { class: "lagged" }, h("td", { colspan: "6" }, `… ${message.missed} events skipped (too slow)`)));
      return;
    }
    if (message.kind !== "event" || paused) return;
    const e = message.event || {};
    const t = message.task || {};
    list.prepend(h("tr", { class: `ev ev-${String(e.type || "").split("-")[0]}`, "data-type": e.type || "" },
      h("td", { class: "num" }, fmtClock(e.timestamp)), h("td", {}, e.type || ""), h("td", {}, workerLink(e.hostname)),
      h("td", {}, e.uuid ? taskLink(e.uuid, e.uuid.slice(0, 8)) : ""), h("td", {}, t.name || e.name || ""),
      h("td", {}, t.state ? stateBadge(t.state) : "")));
    while (list.childElementCount > MAX_TAIL) list.lastElementChild.remove();
  });
  return { onLive() {}, destroy() { stream.close(); } };
}
