// The dashboard's operator panels: schedules (pause, resume, remove), paused job types and
// keys, and a form to submit a typed task, generated from its payload's JSON Schema in
// /openapi.json. Uses the helpers of app.js ($, el, api, toast, openDetail), loaded first.
"use strict";

// Rows drawn at most: a cluster may hold thousands of schedules.
const SHOWN_SCHEDULES = 200;
// Reloads of the schedules that follow their ticks come at most this often (ms).
const TICK_RELOAD_MIN = 2000;
const TICK_RELOAD_MAX = 600000;

const ops = { loads: 0, timer: null, overdueWait: 0, spec: null, tasks: {}, fields: [] };

// -- schedules -----------------------------------------------------------------------------

function fmtDate(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { hour12: false }) : "—";
}

function jobLink(id) {
  const open = (e) => {
    e.preventDefault();
    openDetail(id);
  };
  return el("a", { href: "#", class: "mono", text: id, "data-testid": "last-job", onclick: open });
}

function scheduleRow(s) {
  const toggle = el("input", { type: "checkbox", "aria-label": "paused", "data-testid": "toggle-" + s.name });
  toggle.checked = s.paused;
  toggle.addEventListener("change", () => holdSchedule(s.name, toggle));
  const remove = el("button", { type: "button", class: "danger small", text: "remove", "data-testid": "remove-" + s.name, onclick: () => removeSchedule(s.name) });
  return el(
    "tr",
    { "data-testid": "schedule-" + s.name, "data-name": s.name, "data-paused": String(s.paused) },
    el("td", { class: "mono", text: s.name }),
    el("td", { class: "mono", "data-testid": "when", text: s.cron !== null ? s.cron : "every " + s.every + " s" }),
    el("td", { "data-testid": "tz", text: s.tz }),
    el("td", { class: "mono", "data-testid": "job-type", text: s.job_type }),
    el("td", { "data-testid": "next-tick", "data-at": s.next_tick || "", text: fmtDate(s.next_tick) }),
    el("td", { "data-testid": "last-tick", "data-at": s.last_tick || "", text: fmtDate(s.last_tick) }),
    el("td", {}, s.last_job_id ? jobLink(s.last_job_id) : "—"),
    el("td", {}, toggle),
    el("td", {}, remove)
  );
}

async function loadSchedules() {
  // Only the newest load may fill the table (an older answer can arrive later).
  const gen = ++ops.loads;
  const r = await api("GET", "api/schedules");
  if (!r.ok || gen !== ops.loads) return;
  const all = r.data.schedules;
  const shown = all.slice(0, SHOWN_SCHEDULES);
  const body = $("schedules");
  body.replaceChildren(...shown.map(scheduleRow));
  if (!all.length) body.append(el("tr", {}, el("td", { colspan: "9", class: "muted", text: "no schedules" })));
  $("schedules-count").textContent = all.length > shown.length ? "first " + shown.length + " of " + all.length : all.length ? String(all.length) : "";
  reloadAfterNextTick(shown);
}

// A tick changes its schedule's last tick and job: load them again once the earliest tick
// still ahead has passed (the database is read only then, not on a fixed beat). A tick
// already due that its runner has not fired yet (it is late, or away) is looked at again
// after a wait that doubles each time.
function reloadAfterNextTick(shown) {
  clearTimeout(ops.timer);
  const now = Date.now();
  const ticks = shown.filter((s) => !s.paused && s.next_tick).map((s) => new Date(s.next_tick).getTime());
  if (!ticks.length) return;
  const ahead = ticks.filter((t) => t > now);
  let wait;
  if (ahead.length < ticks.length) {
    ops.overdueWait = Math.min(ops.overdueWait * 2 || TICK_RELOAD_MIN, TICK_RELOAD_MAX);
    wait = ops.overdueWait;
  } else {
    ops.overdueWait = 0;
  }
  if (ahead.length) wait = Math.min(wait || Infinity, Math.min(...ahead) - now + 500);
  ops.timer = setTimeout(loadSchedules, Math.min(Math.max(wait, TICK_RELOAD_MIN), TICK_RELOAD_MAX));
}

async function holdSchedule(name, toggle) {
  const action = toggle.checked ? "pause" : "resume";
  toggle.disabled = true;
  const r = await api("POST", "api/schedules/" + encodeURIComponent(name) + "/" + action);
  toggle.disabled = false;
  if (!r.ok) {
    toggle.checked = !toggle.checked;
    return;
  }
  toast("schedule " + name + " " + action + "d");
  loadSchedules();
  loadPaused();
}

async function removeSchedule(name) {
  if (!confirm("Remove the schedule " + name + "? The jobs it submitted stay.")) return;
  const r = await api("DELETE", "api/schedules/" + encodeURIComponent(name));
  if (r.ok) {
    toast("schedule " + name + " removed");
    loadSchedules();
  }
}

// -- paused job types and keys --------------------------------------------------------------

async function loadPaused() {
  const r = await api("GET", "api/paused");
  if (r.ok) drawPaused(r.data);
}

function drawPaused(p) {
  const item = (kind, label, value) =>
    el(
      "li",
      { "data-testid": "held-" + kind + "-" + value },
      el("span", { class: "muted", text: label }),
      el("span", { class: "mono", text: value }),
      el("button", { type: "button", class: "ghost small", text: "resume", "data-testid": "resume-" + kind + "-" + value, onclick: () => hold("resume", kind, value) })
    );
  const items = [...p.job_types.map((t) => item("type", "job type", t)), ...p.keys.map((k) => item("key", "key", k))];
  $("paused").replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "no job type or key is paused" })]));
}

async function hold(action, kind, value) {
  const r = await api("POST", "api/" + action, kind === "type" ? { job_type: value } : { key: value });
  if (r.ok) {
    toast((kind === "type" ? "job type " : "key ") + value + " " + action + "d");
    drawPaused(r.data);
  }
}

// -- typed tasks ---------------------------------------------------------------------------

// A schema with its local references ("#/components/schemas/...") followed.
function resolve(schema) {
  let s = schema || {};
  for (let hops = 0; s.$ref && hops < 32; hops++) {
    let node = ops.spec;
    for (const part of s.$ref.replace(/^#\//, "").split("/")) {
      node = node ? node[decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~")] : undefined;
    }
    s = node || {};
  }
  return s;
}

// How a property is entered: a plain input for strings, numbers, integers and booleans, a
// list for an enumeration, JSON text for anything else (objects, arrays, unions).
function fieldKind(prop) {
  let s = resolve(prop);
  let nullable = false;
  const options = s.anyOf || s.oneOf;
  if (options) {
    const rest = options.filter((o) => resolve(o).type !== "null");
    nullable = rest.length < options.length;
    if (rest.length !== 1) return { kind: "json", schema: s, nullable };
    s = resolve(rest[0]);
  }
  if (Array.isArray(s.enum)) return { kind: "enum", schema: s, nullable };
  if (["string", "integer", "number", "boolean"].includes(s.type)) return { kind: s.type, schema: s, nullable };
  return { kind: "json", schema: s, nullable };
}

function shown(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function makeInput(kind, schema, def) {
  if (kind === "boolean") {
    const box = el("input", { type: "checkbox" });
    box.checked = def === true;
    return box;
  }
  if (kind === "enum") {
    const list = el("select", {}, el("option", { value: "", text: "—" }));
    schema.enum.forEach((v, i) => list.append(el("option", { value: String(i), text: shown(v) })));
    const at = schema.enum.findIndex((v) => JSON.stringify(v) === JSON.stringify(def));
    if (at >= 0) list.value = String(at);
    return list;
  }
  if (kind === "json") {
    const text = el("textarea", { rows: "2", placeholder: "JSON" });
    if (def !== undefined) text.value = JSON.stringify(def);
    return text;
  }
  const input = el("input", { type: kind === "string" ? "text" : "number" });
  if (kind !== "string") input.step = kind === "integer" ? "1" : "any";
  if (def !== undefined && def !== null) input.value = String(def);
  return input;
}

function hint(kind, schema, nullable) {
  const what = kind === "enum" ? "one of " + schema.enum.map(shown).join(", ") : kind === "json" ? "JSON" + (schema.type ? " " + schema.type : "") : kind;
  return what + (nullable ? " or empty" : "") + (schema.description ? " — " + schema.description : "");
}

function makeField(name, prop, required, whole) {
  const { kind, schema, nullable } = fieldKind(prop);
  const def = "default" in prop ? prop.default : schema.default;
  const input = makeInput(kind, schema, def);
  const id = "task-field-" + name;
  input.id = id;
  input.setAttribute("data-testid", id);
  if (required) input.setAttribute("aria-required", "true");
  const node = el(
    "label",
    { class: "field", for: id, "data-field": name },
    el("span", {}, el("span", { class: "name", text: name }), required ? el("span", { class: "req", title: "required", text: "*" }) : null),
    input,
    el("span", { class: "hint", text: hint(kind, schema, nullable) })
  );
  return { name, kind, schema, required, whole, input, node };
}

// A field's value: {value}, {empty} when nothing was entered, or {error}.
function readField(f) {
  if (f.kind === "boolean") return { value: f.input.checked };
  const raw = f.input.value;
  if (f.kind === "enum") return raw === "" ? { empty: true } : { value: f.schema.enum[Number(raw)] };
  if (raw.trim() === "" && (f.kind !== "string" || raw === "")) return { empty: true };
  if (f.kind === "string") return { value: raw };
  if (f.kind === "integer" || f.kind === "number") {
    const n = Number(raw);
    if (!Number.isFinite(n) || (f.kind === "integer" && !Number.isInteger(n))) return { error: "must be " + (f.kind === "integer" ? "an integer" : "a number") };
    return { value: n };
  }
  try {
    return { value: JSON.parse(raw) };
  } catch (e) {
    return { error: "is not valid JSON (" + e.message + ")" };
  }
}

function say(text, bad) {
  const m = $("task-message");
  m.textContent = text;
  m.className = "message " + (bad ? "bad" : "ok");
}

async function loadTasks() {
  let spec;
  try {
    const res = await fetch("openapi.json", { cache: "no-store" });
    spec = await res.json();
  } catch (e) {
    say("cannot read the task schemas from openapi.json: " + e.message, true);
    return;
  }
  ops.spec = spec;
  ops.tasks = spec["x-shardq-tasks"] || {};
  const types = Object.keys(ops.tasks).sort();
  $("task-type").replaceChildren(...types.map((t) => el("option", { value: t, text: t })));
  $("task-submit").disabled = !types.length;
  if (!types.length) {
    ops.fields = [];
    $("task-fields").replaceChildren(el("p", { class: "muted", text: "this service has no typed tasks (@jobs.task)" }));
    return;
  }
  drawTaskFields();
}

function drawTaskFields() {
  const top = resolve(ops.tasks[$("task-type").value].payload);
  say("", false);
  if (top.type === "object" && top.properties) {
    const required = new Set(top.required || []);
    ops.fields = Object.entries(top.properties).map(([name, prop]) => makeField(name, prop, required.has(name), false));
  } else {
    // A payload that is not an object of named fields (a list, a number): one JSON field.
    ops.fields = [makeField("payload", top, true, true)];
  }
  $("task-fields").replaceChildren(...ops.fields.map((f) => f.node));
}

async function submitTask(ev) {
  ev.preventDefault();
  const type = $("task-type").value;
  if (!type) return;
  const problems = [];
  let payload = {};
  for (const f of ops.fields) {
    const got = readField(f);
    let problem = got.error ? f.name + " " + got.error : null;
    if (got.empty && f.required) problem = f.name + " is required";
    f.node.classList.toggle("invalid", problem !== null);
    if (problem) problems.push(problem);
    else if (!got.empty && f.whole) payload = got.value;
    else if (!got.empty) payload[f.name] = got.value;
  }
  if (problems.length) {
    say(problems.join("; "), true);
    return;
  }
  const body = { type, payload, priority: $("task-priority").value };
  const key = $("task-key").value.trim();
  if (key) body.key = key;
  say("submitting…", false);
  const r = await api("POST", "api/jobs", body);
  if (!r.ok) {
    say("refused: " + (r.data && r.data.error ? r.data.error.message : "HTTP " + r.status), true);
    return;
  }
  say((r.data.duplicate ? "a duplicate of job " : "submitted job ") + r.data.id, false);
  openDetail(r.data.id);
}

// -- start ---------------------------------------------------------------------------------

function loadOperations() {
  loadSchedules();
  loadPaused();
}

function initOperations() {
  for (const p of PRIORITIES) $("task-priority").append(el("option", { value: p, text: p }));
  $("task-priority").value = "normal";
  $("schedules-reload").addEventListener("click", loadSchedules);
  $("hold-type").addEventListener("submit", (e) => {
    e.preventDefault();
    hold("pause", "type", $("hold-type-name").value);
  });
  $("resume-type").addEventListener("click", () => hold("resume", "type", $("hold-type-name").value));
  $("hold-key").addEventListener("submit", (e) => {
    e.preventDefault();
    hold("pause", "key", $("hold-key-name").value);
  });
  $("resume-key").addEventListener("click", () => hold("resume", "key", $("hold-key-name").value));
  $("task-type").addEventListener("change", drawTaskFields);
  $("task-form").addEventListener("submit", submitTask);
  // After app.js's own listener has stored a newly given token.
  $("token-btn").addEventListener("click", loadOperations);
  loadOperations();
  loadTasks();
}

document.addEventListener("DOMContentLoaded", initOperations);
