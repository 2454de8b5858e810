// The dashboard's flow-control panel: every job type with controls (running against its
// concurrency, its rate's tokens against burst + 1, paused and throttled), and a form that
// changes a type's concurrency and rate through PUT /api/limits/{type}. Uses the helpers of
// app.js ($, el, api, toast, throttle, watchFeed), loaded first.
"use strict";

// The panel follows the live feed (each stats tick, each batch of transitions), reading the
// limits at most this often (ms).
const LIMITS_RELOAD_MIN = 1000;

const flow = { loads: 0, byType: new Map() };

function meter(value, max, label, testid) {
  const fill = el("span", { class: "fill" });
  fill.style.width = Math.max(0, Math.min(100, (100 * value) / max)) + "%";
  return el("span", { class: "meter", "data-testid": testid, "data-value": String(value), "data-max": String(max) }, el("span", { class: "track" }, fill), el("span", { class: "num", text: label }));
}

function rateText(r) {
  return r ? r.count + " / " + r.per + " s" + (r.burst ? " +" + r.burst : "") : "—";
}

function limitRow(l) {
  const running = l.concurrency === null ? el("span", { class: "muted", "data-testid": "limit-running", text: "no limit" }) : meter(l.running, l.concurrency, l.running + " / " + l.concurrency, "limit-running");
  const cap = l.rate ? l.rate.burst + 1 : 0;
  const tokens = l.rate && l.tokens !== null ? meter(l.tokens, cap, l.tokens.toFixed(1) + " / " + cap, "limit-tokens") : el("span", { class: "muted", text: "—" });
  const state = [];
  if (l.paused) state.push(el("span", { class: "badge paused", "data-testid": "badge-paused", text: "paused" }));
  if (l.throttled_until !== null) {
    const until = new Date(l.throttled_until);
    state.push(el("span", { class: "badge throttled", "data-testid": "badge-throttled", title: until.toISOString(), text: "throttled until " + until.toLocaleTimeString(undefined, { hour12: false }) }));
  }
  const edit = el("button", { type: "button", class: "ghost small", text: "edit", "data-testid": "edit-" + l.job_type, onclick: () => editLimit(l.job_type) });
  return el(
    "tr",
    { "data-testid": "limit-" + l.job_type, "data-type": l.job_type },
    el("td", { class: "mono", text: l.job_type }),
    el("td", {}, running),
    el("td", { "data-testid": "limit-key-concurrency", text: l.key_concurrency === null ? "—" : String(l.key_concurrency) }),
    el("td", { "data-testid": "limit-rate", text: rateText(l.rate) }),
    el("td", {}, tokens),
    el("td", { "data-testid": "limit-key-rate", text: rateText(l.key_rate) }),
    el("td", { class: "state" }, ...state),
    el("td", {}, edit)
  );
}

async function loadLimits() {
  // Only the newest load may fill the table (an older answer can arrive later).
  const gen = ++flow.loads;
  const r = await api("GET", "api/limits");
  if (!r.ok || gen !== flow.loads) return;
  drawLimits(r.data.limits);
}

function drawLimits(all) {
  flow.byType = new Map(all.map((l) => [l.job_type, l]));
  const body = $("limits");
  body.replaceChildren(...all.map(limitRow));
  if (!all.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "no job type has limits" })));
  $("limits-count").textContent = all.length ? String(all.length) : "";
  $("limit-types").replaceChildren(...all.map((l) => el("option", { value: l.job_type })));
}

const reloadLimitsSoon = throttle(() => {
  if (!document.hidden) loadLimits();
}, LIMITS_RELOAD_MIN);

// -- the edit form ------------------------------------------------------------------------

function limitSay(text, bad) {
  const m = $("limit-message");
  m.textContent = text;
  m.className = "message " + (bad ? "bad" : "ok");
}

// The form shows what a listed type has now, so that saving keeps what was not edited.
function fillForm(l) {
  $("limit-concurrency").value = l && l.concurrency !== null ? String(l.concurrency) : "";
  $("limit-rate-count").value = l && l.rate ? String(l.rate.count) : "";
  $("limit-rate-per").value = l && l.rate ? String(l.rate.per) : "";
  $("limit-rate-burst").value = l && l.rate ? String(l.rate.burst) : "";
}

function editLimit(type) {
  $("limit-type").value = type;
  fillForm(flow.byType.get(type));
  limitSay("", false);
  $("limit-concurrency").focus();
}

// A number input's value: {value}, {empty} when blank, or {error} for text that is no number.
function readNumber(id, what) {
  const input = $(id);
  if (input.validity.badInput) return { error: what + " is not a number" };
  return input.value.trim() === "" ? { empty: true } : { value: Number(input.value) };
}

// The body of the PUT: an empty concurrency or rate count removes that limit. What the
// numbers may be is the server's to say.
function limitBody() {
  const conc = readNumber("limit-concurrency", "concurrency");
  const count = readNumber("limit-rate-count", "rate count");
  const per = readNumber("limit-rate-per", "rate period");
  const burst = readNumber("limit-rate-burst", "burst");
  const bad = [conc, count, per, burst].filter((f) => f.error).map((f) => f.error);
  if (bad.length) return { error: bad.join("; ") };
  const body = { concurrency: conc.empty ? null : conc.value, rate: null };
  if (!count.empty) {
    body.rate = { count: count.value };
    if (!per.empty) body.rate.per = per.value;
    if (!burst.empty) body.rate.burst = burst.value;
  } else if (!per.empty || !burst.empty) {
    return { error: "give the rate's count too (or clear its period and burst)" };
  }
  return { body };
}

async function saveLimit(ev) {
  ev.preventDefault();
  const type = $("limit-type").value;
  if (!type.trim()) {
    limitSay("give a job type", true);
    return;
  }
  const got = limitBody();
  if (got.error) {
    limitSay(got.error, true);
    return;
  }
  limitSay("saving…", false);
  const r = await api("PUT", "api/limits/" + encodeURIComponent(type), got.body);
  if (!r.ok) {
    limitSay("refused: " + (r.data && r.data.error ? r.data.error.message : "HTTP " + r.status), true);
    return;
  }
  limitSay("saved the limits of " + r.data.job_type, false);
  toast("limits of " + r.data.job_type + " saved");
  loadLimits();
}

// -- start ---------------------------------------------------------------------------------

function initLimits() {
  $("limit-form").addEventListener("submit", saveLimit);
  $("limit-type").addEventListener("change", () => fillForm(flow.byType.get($("limit-type").value)));
  watchFeed((kind) => {
    if (kind === "tick" || kind === "jobs") reloadLimitsSoon();
  });
  // After app.js's own listener has stored a newly given token.
  $("token-btn").addEventListener("click", loadLimits);
  loadLimits();
}

document.addEventListener("DOMContentLoaded", initLimits);
