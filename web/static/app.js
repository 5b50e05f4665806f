// Harvester dashboard: live updates of the server-rendered page, operator controls, history chart.
// The server formats every value (web/view.py); this script only copies text, classes and colours,
// and reloads a rendered fragment when the fleet's shape changes (a node or sensor appears).
"use strict";

const REFRESH_MS = 2000;
const CHART_REFRESH_MS = 15000;
const TOKEN_KEY = "harvester.operator";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  operator: false,
  paint: "red",
  range: 3600,
  lastChart: 0,
  busy: false,
};

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra = {}) {
  const h = {...extra};
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

async function request(path, options = {}) {
  const res = await fetch(path, {cache: "no-store", ...options, headers: headers(options.headers)});
  if (!res.ok) {
    let message = `HTTP ${res.status}`;
    try { message = (await res.json()).error || message; } catch (_) { /* not JSON */ }
    throw new HttpError(res.status, message);
  }
  return res;
}

const getJSON = async (path) => (await request(path)).json();
const postJSON = async (path, body) => (await request(path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {}),
})).json();

let toastTimer = 0;
function toast(text, bad = false) {
  const t = $("#toast");
  t.textContent = text;
  t.classList.toggle("bad", bad);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 6000 : 2500);
}

// --- operator mode ---------------------------------------------------------------------------
function setOperator(on) {
  state.operator = on;
  document.body.classList.toggle("operator", on);
  for (const b of $$("button.op")) b.disabled = !on;
  const toggle = $("#operator-toggle");
  toggle.textContent = on ? "🔓 Operator" : "🔒 Operator";
  toggle.title = on ? "controls unlocked; click to lock" : "unlock the controls with the operator token";
}

async function checkToken() {
  if (!state.token) { setOperator(false); return false; }
  try {
    const who = await getJSON("/api/whoami");
    setOperator(who.role === "operator");
    return state.operator;
  } catch (err) {
    setOperator(false);
    return false;
  }
}

function wireOperator() {
  const form = $("#operator-form"), toggle = $("#operator-toggle");
  toggle.addEventListener("click", () => {
    if (state.operator) {  // lock: forget the token in this tab
      state.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      setOperator(false);
      toast("controls locked");
      return;
    }
    form.hidden = !form.hidden;
    toggle.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) $("#token").focus();
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    if (await checkToken()) {
      sessionStorage.setItem(TOKEN_KEY, state.token);
      $("#token").value = "";
      form.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      toast("controls unlocked");
      refresh();
    } else {
      state.token = "";
      $("#operator-msg").textContent = "That is not the operator token.";
    }
  });
}

// --- live updates ------------------------------------------------------------------------------
async function reloadFragment(part) {
  const res = await request(`/fragment/${part}`);
  const el = document.getElementById(part);
  el.innerHTML = await res.text();
  el.dataset.sig = res.headers.get("X-Harvester-Sig") || "";
  // a single hub has no Hubs panel; a hub without [[export]] targets no Exports panel, without
  // [[notify]] channels no Notifications panel
  if (part === "hubs" || part === "exports" || part === "notify") el.hidden = !el.children.length;
  setOperator(state.operator);
  for (const s of $$("[data-colour]", el)) s.setAttribute("aria-pressed", String(s.dataset.colour === state.paint));
}

function setRow(el, v) {
  if (!el.classList.contains("row")) {  // a plain element: its text, and a class, title or hidden when given
    if (el.textContent !== v.text) el.textContent = v.text;
    if (v.cls !== undefined) el.className = v.cls;
    if (v.title !== undefined) el.title = v.title;
    if (v.hidden !== undefined) el.hidden = v.hidden;
    return;
  }
  const value = $(".value", el);
  if (value.textContent !== v.text) value.textContent = v.text;
  value.title = v.title || "";
  $(".tag", el).textContent = v.tag || "";
  el.className = "row " + (v.cls || "");
  const fill = $(".bar .fill", el);
  if (fill && v.bar !== null && v.bar !== undefined) fill.setAttribute("width", String(v.bar * 100));
}

function setLeds(node, view) {
  const box = $(`[data-leds="${node}"]`);
  if (!box) return;
  $("[data-leds-text]", box).textContent = view.text;
  $(".strip", box).classList.toggle("unknown", !view.known);
  $$(".led", box).forEach((dot, i) => {
    const colour = view.pixels[i];
    const lit = Boolean(colour) && colour !== "#000000";
    dot.setAttribute("fill", lit ? colour : "#1e252e");
    dot.classList.toggle("lit", lit);
  });
}

function setBuzzer(node, view) {
  const box = $(`[data-buzzer="${node}"]`);
  if (!box) return;
  const text = $("[data-buzzer-text]", box);
  text.textContent = view.text;
  text.className = "value buzzer-" + view.state;
  $("[data-buzzer-detail]", box).textContent = view.detail;
}

function setSeries(series) {
  const select = $("#series");
  const have = $$("option", select).map((o) => o.value).join("|");
  if (have === series.map((s) => s.id).join("|")) return;
  const current = select.value;
  select.replaceChildren(...series.map((s) => {
    const o = new Option(s.label, s.id, false, s.id === current);
    o.dataset.unit = s.unit;
    return o;
  }));
  if (!select.value && series.length) drawChart();
}

function apply(d) {
  $("#status").textContent = `${d.status} · ${d.alert_count} alert${d.alert_count === 1 ? "" : "s"}`;
  $("#status").classList.remove("bad");
  for (const [name, n] of Object.entries(d.nodes)) {
    const card = $(`[data-node="${name}"]`);
    if (!card) continue;
    card.classList.toggle("online", n.online);
    card.classList.toggle("offline", !n.online);
    $("[data-online]", card).textContent = n.online ? "online" : "offline";
    $("[data-status]", card).textContent = n.status;
    $("[data-warning]", card).textContent = n.warning;
  }
  const rows = new Map($$("[data-key]").map((el) => [el.dataset.key, el]));
  for (const [key, v] of Object.entries(d.values)) {
    const el = rows.get(key);
    if (el) setRow(el, v);
  }
  for (const [node, v] of Object.entries(d.leds)) setLeds(node, v);
  for (const [node, v] of Object.entries(d.buzzer)) setBuzzer(node, v);
}

// The update carries only the series list's signature (at a thousand nodes the list is about
// 1 MB): the list itself is fetched when a series appears, goes or changes its unit.
async function syncSeries(sig) {
  if (sig === $("#series").dataset.sig) return;
  const s = await getJSON("/api/series");
  setSeries(s.series);
  $("#series").dataset.sig = s.sig;
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const d = await getJSON("/api/dashboard");
    if (d.sig !== $("#nodes").dataset.sig) await reloadFragment("nodes");
    if (d.alerts_sig !== $("#alerts").dataset.sig) await reloadFragment("alerts");
    if (d.jobs_sig !== $("#jobs").dataset.sig) await reloadFragment("jobs");
    if (d.hubs_sig !== $("#hubs").dataset.sig) await reloadFragment("hubs");
    if (d.exports_sig !== $("#exports").dataset.sig) await reloadFragment("exports");
    if (d.notify_sig !== $("#notify").dataset.sig) await reloadFragment("notify");
    await syncSeries(d.series_sig);
    apply(d);
    if (Date.now() - state.lastChart > CHART_REFRESH_MS && !document.hidden) drawChart();
  } catch (err) {
    const status = $("#status");
    status.classList.add("bad");
    if (err instanceof HttpError && (err.status === 401 || err.status === 403)) {
      status.textContent = "this dashboard needs the operator token";
      $("#operator-form").hidden = false;
    } else {
      status.textContent = "hub unreachable: " + err.message;
    }
  } finally {
    state.busy = false;
  }
}

// --- controls ----------------------------------------------------------------------------------
async function command(button, path, body, done) {
  if (!state.operator) { toast("unlock the controls with the operator token first", true); return; }
  button.disabled = true;
  button.classList.add("pending");
  try {
    await postJSON(path, body);
    toast(done);
    await refresh();
  } catch (err) {
    toast(err.message, true);
  } finally {
    button.classList.remove("pending");
    button.disabled = !state.operator;
  }
}

// A test message on one notification channel: sent while the request waits (up to the channel's
// timeout); the outcome, in the hub's words, next to the button.
async function notifyTest(button) {
  if (!state.operator) { toast("unlock the controls with the operator token first", true); return; }
  const channel = button.dataset.notifyTest;
  const out = $("[data-notify-outcome]", button.parentElement);
  const show = (text, cls) => {
    if (!out) return;
    out.textContent = text;
    out.className = "notify-outcome " + cls;
    out.title = `${text} (${new Date().toLocaleTimeString()})`;
  };
  button.disabled = true;
  button.classList.add("pending");
  show("sending…", "pending");
  try {
    const r = await postJSON("/api/notify/test", {channel});
    const o = r.outcomes.find((x) => x.channel === channel) || r.outcomes[0];
    if (!o) show("✗ no outcome", "bad");
    else show(o.ok ? "✓ sent" + (o.result ? " · " + o.result : "") : "✗ " + o.result, o.ok ? "ok" : "bad");
  } catch (err) {
    show("✗ " + err.message, "bad");
  } finally {
    button.classList.remove("pending");
    button.disabled = !state.operator;
  }
}

function wireControls() {
  document.addEventListener("click", (ev) => {
    const target = ev.target instanceof Element ? ev.target : null;
    if (!target) return;
    const buzz = target.closest("[data-buzz]");
    if (buzz) {
      const node = buzz.closest("[data-buzzer]").dataset.buzzer;
      const action = buzz.dataset.buzz;
      const body = action === "beep" ? {node, action, duration_ms: 200} : {node, action};
      command(buzz, "/api/buzzer/control", body, `${node}: ${action} sent`);
      return;
    }
    const swatch = target.closest("[data-colour]");
    if (swatch) {
      state.paint = swatch.dataset.colour;
      for (const s of $$("[data-colour]")) s.setAttribute("aria-pressed", String(s.dataset.colour === state.paint));
      return;
    }
    const led = target.closest(".led");
    if (led && state.operator) {
      const node = led.closest("[data-leds]").dataset.leds;
      const index = Number(led.dataset.i);
      command($(`[data-leds="${node}"] [data-led-action]`), "/api/leds/control",
        {node, action: "set_named", index, colour: state.paint}, `${node}: LED ${index} ${state.paint}`);
      return;
    }
    const clear = target.closest("[data-led-action]");
    if (clear) {
      const node = clear.closest("[data-leds]").dataset.leds;
      command(clear, "/api/leds/control", {node, action: "clear"}, `${node}: LEDs cleared`);
      return;
    }
    const test = target.closest("[data-notify-test]");
    if (test) {
      notifyTest(test);
      return;
    }
    const ack = target.closest("[data-ack]");
    if (ack) {
      command(ack, `/api/alerts/${ack.dataset.ack}/ack`, {}, "alert acknowledged");
      return;
    }
    const range = target.closest("[data-range]");
    if (range) {
      state.range = Number(range.dataset.range);
      for (const b of $$("[data-range]")) b.setAttribute("aria-pressed", String(b === range));
      drawChart();
      return;
    }
    const row = target.closest(".row[data-series]");
    if (row && row.dataset.series) {
      $("#series").value = row.dataset.series;
      drawChart();
      $("#history").scrollIntoView({behavior: "smooth", block: "start"});
    }
  });
  $("#series").addEventListener("change", drawChart);
}

// --- history chart -------------------------------------------------------------------------------
async function drawChart() {
  const select = $("#series"), box = $("#chart"), note = $("#chart-note");
  state.lastChart = Date.now();
  if (!select.value) { note.textContent = "no series yet"; return; }
  const [node, sensor, quantity] = select.value.split("/");
  const until = Date.now() / 1000;
  const query = new URLSearchParams({node, sensor, quantity, since: String(until - state.range), until: String(until)});
  try {
    const data = await getJSON(`/api/history?${query}`);
    const unit = select.selectedOptions[0] ? select.selectedOptions[0].dataset.unit : "";
    HarvesterChart.draw(box, data, {unit, since: until - state.range, until});
    const kind = data.step === "raw" ? "raw readings" : `${data.step} min/mean/max`;
    const n = data.points.length;
    note.textContent = `${n} point${n === 1 ? "" : "s"} · ${kind}${data.truncated ? " (truncated)" : ""}`;
  } catch (err) {
    note.textContent = "history unavailable: " + err.message;
  }
}

async function main() {
  wireOperator();
  wireControls();
  setOperator(false);
  await checkToken();
  if (!$("#nodes").dataset.sig) await refresh();
  drawChart();
  setInterval(refresh, REFRESH_MS);
  window.addEventListener("resize", () => { clearTimeout(state.resizeTimer); state.resizeTimer = setTimeout(drawChart, 200); });
}

main();
