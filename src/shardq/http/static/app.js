// The shardq dashboard: live counts and charts from server-sent events, plus job search,
// job detail, cancel and dead-letter replay through the JSON API. No build step.
"use strict";

const STATUSES = ["queued", "processing", "complete", "failed", "cancelled"];
const PRIORITIES = ["critical", "high", "normal", "low"];
const ACTIVE = new Set(["queued", "processing"]);
const WINDOW = 120;
const $ = (id) => document.getElementById(id);

const state = {
  series: [],
  rows: new Map(), // job id -> <tr>
  next: null,
  detailId: null,
  deadLetters: -1,
  newJobs: 0,
  searches: 0,
  details: 0,
  dlqLoads: 0,
};

// -- helpers ----------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem("shardq-token") || localStorage.getItem("shardq-token") || "";
}

function takeTokenFromUrl() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("shardq-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("token-btn").textContent = token() ? "API token ✓" : "API token";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    toast("network error: " + e.message, true);
    return { ok: false, status: 0, data: null };
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const msg = data && data.error ? data.error.message : res.statusText;
    toast(msg + (res.status === 401 ? " — set the API token (top right)" : ""), true);
  }
  return { ok: res.ok, status: res.status, data };
}

let toastTimer = null;
function toast(msg, bad) {
  const el = $("toast");
  el.textContent = msg;
  el.className = "show" + (bad ? " bad" : "");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.className = ""), 4000);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function fmtInt(n) {
  return typeof n === "number" ? n.toLocaleString() : "–";
}

function throttle(fn, ms) {
  let timer = null;
  let again = false;
  return function () {
    if (timer) {
      again = true;
      return;
    }
    fn();
    timer = setTimeout(function run() {
      timer = null;
      if (again) {
        again = false;
        fn();
        timer = setTimeout(run, ms);
      }
    }, ms);
  };
}

// -- counts and charts -----------------------------------------------------------------

function setCounts(d) {
  if (!d || !d.by_status) return;
  for (const s of STATUSES) $("count-" + s).textContent = fmtInt(d.by_status[s]);
  $("count-dead").textContent = fmtInt(d.dead_letters);
  const total = PRIORITIES.reduce((a, p) => a + (d.queued_by_priority[p] || 0), 0) || 1;
  const bars = $("priorities");
  bars.replaceChildren(
    ...PRIORITIES.map((p) => {
      const n = d.queued_by_priority[p] || 0;
      const fill = el("span", { class: "fill " + p });
      fill.style.width = Math.max(0, (100 * n) / total) + "%";
      return el("div", { class: "bar", "data-priority": p }, el("span", { class: "name", text: p }), el("span", { class: "track" }, fill), el("span", { class: "num", text: fmtInt(n) }));
    })
  );
  if (d.dead_letters !== state.deadLetters) {
    state.deadLetters = d.dead_letters;
    reloadDlqSoon();
  }
}

function setRates(d) {
  if (d.throughput) $("tp-now").textContent = d.throughput.completed_per_s.toFixed(0) + "/s now · " + d.throughput.completed_per_s_1m.toFixed(0) + "/s 1m";
  if (d.latency_ms) {
    const l = d.latency_ms;
    const f = (v) => (v == null ? "–" : v < 10 ? v.toFixed(1) : v.toFixed(0));
    $("lat-now").textContent = "p50 " + f(l.start_p50_ms) + " · p95 " + f(l.start_p95_ms) + " · p99 " + f(l.start_p99_ms);
  }
  if (d.source) $("source").textContent = d.source === "runner" ? "live from this runner" : "read-only (database)";
}

function drawCharts() {
  const pts = state.series.slice(-WINDOW);
  drawChart($("chart-throughput"), pts, [
    { key: "completed_per_s", label: "completed", color: "#16a34a" },
    { key: "submitted_per_s", label: "submitted", color: "#2563eb" },
    { key: "failed_per_s", label: "failed", color: "#dc2626" },
  ], { window: WINDOW, xLabel: "last " + WINDOW + " s" });
  drawChart($("chart-latency"), pts, [
    { key: "latency_p50_ms", label: "p50", color: "#7c3aed" },
    { key: "latency_p99_ms", label: "p99", color: "#ea580c" },
  ], { window: WINDOW, xLabel: "last " + WINDOW + " s" });
}

// -- live events -------------------------------------------------------------------------

// The stream is read with fetch, not EventSource, so that it carries the token in the
// Authorization header like every other request (never in the URL or a cookie).
const EVENTS = {
  hello(d) {
    setLive("live", true);
    state.series = d.series || [];
    setCounts(d);
    setRates(d);
    drawCharts();
  },
  tick(d) {
    state.series.push(d.point);
    if (state.series.length > 2 * WINDOW) state.series.splice(0, state.series.length - WINDOW);
    setCounts(d);
    setRates(d);
    drawCharts();
  },
  jobs(d) {
    setCounts(d);
    for (const t of d.transitions) onTransition(t.id, t.status);
  },
  runners(d) {
    drawRunners(d);
  },
};

let stream = null; // the AbortController of the open event stream
// Other panels follow the stream too: each watcher gets every event's kind and data.
const feedWatchers = [];

function watchFeed(fn) {
  feedWatchers.push(fn);
}

function setLive(text, on) {
  const live = $("live");
  live.textContent = text;
  live.className = "live " + (on ? "on" : "off");
}

async function connect() {
  if (stream) stream.abort();
  const ctl = new AbortController();
  stream = ctl;
  const headers = { Accept: "text/event-stream" };
  if (token()) headers.Authorization = "Bearer " + token();
  let retry = 2000;
  try {
    const res = await fetch("api/events", { headers, signal: ctl.signal, cache: "no-store" });
    if (res.status === 401) {
      setLive("needs the API token", false);
      toast("the dashboard needs the API token — set the API token (top right)", true);
      return;
    }
    if (!res.ok || !res.body) throw new Error("event stream answered " + res.status);
    setLive("live", true);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        retry = onEvent(buf.slice(0, end), retry);
        buf = buf.slice(end + 2);
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (stream !== ctl) return;
  setLive("reconnecting…", false);
  setTimeout(() => stream === ctl && connect(), retry);
}

// One server-sent event block: "event:", "data:" and "retry:" lines. Returns the retry delay.
function onEvent(block, retry) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue; // a comment (keep-alive) or an empty line
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") kind = value;
    else if (field === "data") data.push(value);
    else if (field === "retry" && /^[0-9]+$/.test(value)) retry = Number(value);
  }
  if (!data.length) return retry;
  const parsed = JSON.parse(data.join("\n"));
  if (EVENTS[kind]) EVENTS[kind](parsed);
  for (const watch of feedWatchers) watch(kind, parsed);
  return retry;
}

function onTransition(id, status) {
  const row = state.rows.get(id);
  if (row) setRowStatus(row, status);
  else if (status === "queued" && !filtersActive()) {
    state.newJobs += 1;
    const more = $("new-jobs");
    more.hidden = false;
    more.textContent = state.newJobs.toLocaleString() + " new — show";
  }
  if (id === state.detailId) refreshDetailSoon();
  if (status === "failed") reloadDlqSoon();
}

// -- jobs --------------------------------------------------------------------------------

function filtersActive() {
  return ["q-id", "q-status", "q-priority", "q-type", "q-key", "q-since"].some((k) => $(k).value.trim() !== "");
}

function badge(status) {
  return el("span", { class: "badge " + status, text: status, "data-testid": "status" });
}

function setRowStatus(row, status) {
  row.dataset.status = status;
  row.querySelector(".status-cell").replaceChildren(badge(status));
  row.querySelector(".cancel").hidden = !ACTIVE.has(status);
}

function jobRow(j) {
  const cancel = el("button", { type: "button", class: "cancel danger small", text: "cancel", "data-testid": "cancel-" + j.id });
  cancel.addEventListener("click", (ev) => {
    ev.stopPropagation();
    cancelJob(j.id);
  });
  const row = el(
    "tr",
    { "data-id": j.id, "data-testid": "job-" + j.id, class: "clickable" },
    el("td", { class: "mono", text: j.id }),
    el("td", { class: "mono", text: j.type }),
    el("td", {}, el("span", { class: "prio " + j.priority, text: j.priority })),
    el("td", { class: "status-cell" }),
    el("td", { text: String(j.attempts) }),
    el("td", { text: fmtTime(j.created_at) }),
    el("td", {}, cancel)
  );
  row.addEventListener("click", () => openDetail(j.id));
  setRowStatus(row, j.status);
  return row;
}

async function loadJobs(append) {
  // Only the newest search may fill the table (an older answer can arrive later).
  const gen = ++state.searches;
  const id = $("q-id").value.trim();
  const body = $("jobs");
  if (!append) {
    state.rows.clear();
    state.newJobs = 0;
    $("new-jobs").hidden = true;
  }
  if (id) {
    const r = await api("GET", "api/jobs/" + encodeURIComponent(id));
    if (gen !== state.searches) return;
    body.replaceChildren();
    if (r.ok) {
      const row = jobRow(r.data);
      state.rows.set(r.data.id, row);
      body.append(row);
      openDetail(r.data.id);
    }
    $("more").hidden = true;
    return;
  }
  const params = new URLSearchParams({ limit: "25" });
  for (const [k, input] of [["status", "q-status"], ["priority", "q-priority"], ["type", "q-type"], ["key", "q-key"]]) {
    const v = $(input).value.trim();
    if (v) params.set(k, v);
  }
  const since = $("q-since").value;
  if (since) params.set("since", String(Date.now() / 1000 - Number(since)));
  if (append && state.next) params.set("before", state.next);
  const r = await api("GET", "api/jobs?" + params);
  if (!r.ok || gen !== state.searches) return;
  if (!append) body.replaceChildren();
  for (const j of r.data.jobs) {
    const row = jobRow(j);
    state.rows.set(j.id, row);
    body.append(row);
  }
  if (!r.data.jobs.length && !append) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "no jobs match" })));
  state.next = r.data.next;
  $("more").hidden = !state.next;
}

async function cancelJob(id) {
  const r = await api("POST", "api/jobs/" + id + "/cancel");
  if (r.ok) {
    toast(r.status === 202 ? "job " + id + " is running: its runner was told to stop it" : "job " + id + " cancelled");
    // A running job (202) ends as "cancelled" once its runner stops it: the event stream
    // brings that; meanwhile keep whatever the stream already said.
    const row = state.rows.get(id);
    if (row && r.status === 200) setRowStatus(row, r.data.status);
    if (id === state.detailId) openDetail(id);
  }
}

async function submitJob(ev) {
  ev.preventDefault();
  let payload;
  try {
    payload = JSON.parse($("s-payload").value || "null");
  } catch (e) {
    toast("payload is not valid JSON: " + e.message, true);
    return;
  }
  const body = { type: $("s-type").value.trim(), payload, priority: $("s-priority").value };
  const key = $("s-key").value.trim();
  if (key) body.key = key;
  const r = await api("POST", "api/jobs", body);
  if (!r.ok) return;
  toast((r.data.duplicate ? "duplicate of job " : "submitted job ") + r.data.id);
  const got = await api("GET", "api/jobs/" + r.data.id);
  if (got.ok && !state.rows.has(got.data.id)) {
    const row = jobRow(got.data);
    state.rows.set(got.data.id, row);
    $("jobs").prepend(row);
  }
  openDetail(r.data.id);
}

// -- detail ------------------------------------------------------------------------------

async function openDetail(id) {
  state.detailId = id;
  const gen = ++state.details;
  const r = await api("GET", "api/jobs/" + id);
  if (r.ok && gen === state.details) showDetail(r.data);
}

const refreshDetailSoon = throttle(() => {
  if (state.detailId) openDetail(state.detailId);
}, 150);

function showDetail(j) {
  $("detail").hidden = false;
  $("d-id").textContent = j.id;
  const st = $("d-status");
  st.textContent = j.status;
  st.className = "badge " + j.status;
  $("d-type").textContent = j.type;
  $("d-priority").textContent = j.priority;
  $("d-attempts").textContent = j.attempts + " of " + j.max_attempts;
  $("d-key").textContent = j.key || "—";
  // Why a queued job that is due does not start (paused, throttled, a limit), if it is held.
  $("d-waiting").textContent = j.waiting || "";
  for (const part of document.querySelectorAll("#detail .waiting")) part.hidden = !j.waiting;
  $("d-cancel").hidden = !ACTIVE.has(j.status);
  $("d-payload").textContent = JSON.stringify(j.payload, null, 2);
  $("d-result").textContent = j.result === null || j.result === undefined ? (j.error ? "error: " + j.error : "—") : JSON.stringify(j.result, null, 2);
  const t0 = j.history.length ? new Date(j.history[0].timestamp).getTime() : 0;
  $("d-history").replaceChildren(
    ...j.history.map((h) => {
      const dt = new Date(h.timestamp).getTime() - t0;
      return el(
        "li",
        { class: h.status, "data-status": h.status },
        el("span", { class: "dot" }),
        el("span", { class: "what", text: h.status }),
        el("span", { class: "when", text: fmtTime(h.timestamp) + (dt ? "  (+" + dt + " ms)" : "") }),
        h.error ? el("div", { class: "err", text: h.error }) : null
      );
    })
  );
  const row = state.rows.get(j.id);
  if (row && row.dataset.status !== j.status) setRowStatus(row, j.status);
}

// -- dead letters --------------------------------------------------------------------------

async function loadDlq() {
  const gen = ++state.dlqLoads;
  const r = await api("GET", "api/dead-letters?limit=25");
  if (!r.ok || gen !== state.dlqLoads) return;
  const body = $("dlq");
  body.replaceChildren(
    ...r.data.dead_letters.map((d) => {
      const action = d.replayed_at
        ? el("span", { class: "muted", text: "replayed → " }, el("a", { href: "#", class: "mono", text: d.replay_job_id, onclick: (e) => { e.preventDefault(); openDetail(d.replay_job_id); } }))
        : el("button", { type: "button", class: "small", text: "replay", "data-testid": "replay-" + d.id, onclick: () => replay(d.id) });
      return el(
        "tr",
        { "data-id": d.id, "data-testid": "dlq-" + d.id, "data-job": d.job_id },
        el("td", { class: "mono", text: d.id }),
        el("td", {}, el("a", { href: "#", class: "mono", text: d.job_id, onclick: (e) => { e.preventDefault(); openDetail(d.job_id); } })),
        el("td", { class: "mono", text: d.type }),
        el("td", {}, el("span", { class: "badge failed", text: d.reason })),
        el("td", { text: String(d.attempts) }),
        el("td", { text: fmtTime(d.failed_at) }),
        el("td", { class: "err", text: (d.error || "").slice(0, 120) }),
        el("td", {}, action)
      );
    })
  );
  if (!r.data.dead_letters.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "no dead letters" })));
}

const reloadDlqSoon = throttle(loadDlq, 2000);

async function replay(id) {
  const r = await api("POST", "api/dead-letters/" + id + "/replay");
  if (r.ok) {
    toast("dead letter " + id + " replayed as job " + r.data.job_id);
    loadDlq();
    openDetail(r.data.job_id);
  }
}

async function replayAll() {
  const r = await api("POST", "api/dead-letters/replay", { all: true });
  if (r.ok) {
    toast("replayed " + r.data.replayed.length + " dead letters" + (r.data.failed.length ? ", " + r.data.failed.length + " refused" : ""));
    loadDlq();
  }
}

// -- runners -------------------------------------------------------------------------------

async function loadRunners() {
  const r = await api("GET", "api/runners");
  if (r.ok) drawRunners(r.data);
}

// Colours stay with a runner while it lives: the first seen gets the first colour, and so on.
const PALETTE = ["#2563eb", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#db2777", "#ca8a04", "#4b5563"];
const runnerColours = new Map();

function colourOf(id) {
  if (!runnerColours.has(id)) {
    const used = new Set(runnerColours.values());
    runnerColours.set(id, PALETTE.find((c) => !used.has(c)) || PALETTE[runnerColours.size % PALETTE.length]);
  }
  return runnerColours.get(id);
}

// Every runner of the cluster (the same from any process), and the shard map coloured by owner.
function drawRunners(d) {
  const live = new Set(d.runners.map((rn) => rn.id));
  for (const id of [...runnerColours.keys()]) if (!live.has(id)) runnerColours.delete(id);
  const total = d.runners.reduce((n, rn) => n + rn.jobs_per_s, 0);
  const head = d.mode + " · " + d.shards + " shards · " + d.runners.length + " runner(s) · " + total.toFixed(1) + " jobs/s" + (d.handovers.length ? " · " + d.handovers.length + " handing over" : "");
  $("runners").replaceChildren(
    el("div", { class: "muted small", text: head + (d.note ? " · " + d.note : "") }),
    ...d.runners.map((rn) => {
      const sw = el("span", { class: "swatch" });
      sw.style.background = colourOf(rn.id);
      const load = rn.shard_count + " shards · " + rn.running + "/" + rn.capacity + " running · " + rn.jobs_per_s.toFixed(1) + " jobs/s";
      return el(
        "div",
        { class: "runner" + (rn.draining ? " draining" : ""), "data-testid": "runner-" + rn.id, "data-runner": rn.id, title: rn.id + " on " + rn.host + ":" + rn.pid + ", started " + rn.started_at + ", heartbeat " + rn.heartbeat_at },
        sw,
        el("span", { class: "mono", text: rn.id.slice(0, 12) }),
        el("span", { class: "muted", text: " " + rn.host + ":" + rn.pid + " · " + load + (rn.draining ? " · draining" : "") + (rn.this_process ? " · this process" : "") })
      );
    }),
    ...d.events.slice(0, 5).map((e) => el("div", { class: "muted small event", text: e.at.slice(11, 19) + " " + e.kind + " " + e.runner.slice(0, 12) }))
  );
  $("shard-map").replaceChildren(
    ...d.shard_map.map((o, s) => {
      const c = el("span", { class: "shard", "data-owner": o || "", title: "shard " + s + (o ? " → " + o.slice(0, 12) : " → handing over") });
      c.style.background = o ? colourOf(o) : "var(--grid)";
      return c;
    })
  );
}

// -- start ---------------------------------------------------------------------------------

function init() {
  takeTokenFromUrl();
  for (const s of STATUSES) $("q-status").append(el("option", { value: s, text: s }));
  for (const p of PRIORITIES) {
    $("q-priority").append(el("option", { value: p, text: p }));
    $("s-priority").append(el("option", { value: p, text: p }));
  }
  $("s-priority").value = "normal";
  const newJobs = el("button", { type: "button", id: "new-jobs", class: "ghost small", "data-testid": "new-jobs" });
  newJobs.hidden = true;
  newJobs.addEventListener("click", () => loadJobs(false));
  $("search").append(newJobs);
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    loadJobs(false);
  });
  $("more").addEventListener("click", () => loadJobs(true));
  $("submit").addEventListener("submit", submitJob);
  $("d-close").addEventListener("click", () => {
    state.detailId = null;
    $("detail").hidden = true;
  });
  $("d-cancel").addEventListener("click", () => state.detailId && cancelJob(state.detailId));
  $("replay-all").addEventListener("click", replayAll);
  $("token-btn").addEventListener("click", () => {
    const t = prompt("API token (SHARDQ_API_TOKEN) for cancel, replay and submit:", token());
    if (t !== null) {
      sessionStorage.setItem("shardq-token", t.trim());
      takeTokenFromUrl();
      // Reads need the token too: load everything again with it.
      connect();
      loadJobs(false);
      loadDlq();
      loadRunners();
    }
  });
  window.addEventListener("resize", drawCharts);
  connect();
  loadJobs(false);
  loadDlq();
  loadRunners();
}

document.addEventListener("DOMContentLoaded", init);
