// Dashboard: fetch /api/readings and redraw the node cards every 2 s, without reloading.
"use strict";
const LABELS = {temperature:"Temperature", humidity:"Humidity", pressure:"Pressure",
  gas_resistance:"Gas resistance", iaq:"IAQ", cpu_temperature:"CPU temperature", cpu_load:"CPU load",
  memory_used:"Memory used", memory_total:"Memory total", memory_percent:"Memory", uptime:"Uptime",
  rtt:"RTT", packet_loss:"Loss"};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmt(q, r) {
  if (r.value === null) return el("span", {class: "unavailable", title: r.reason || ""}, "unavailable");
  let v = r.value, text;
  if (q === "uptime") text = (v / 3600).toFixed(1) + " h";
  else if (q === "gas_resistance") text = (v / 1000).toFixed(1) + " kΩ";
  else text = (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1)) + " " + r.unit;
  const cls = [];
  if (q === "cpu_temperature") cls.push(v < 60 ? "cool" : v < 75 ? "warm" : "hot");
  if (r.stale) cls.push("stale");
  if (r.quality === "calibrating") text += " (calibrating)";
  return el("span", {class: cls.join(" "), title: new Date(r.ts * 1000).toLocaleTimeString()}, text);
}

function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  return s < 60 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
}

function card(node) {
  const c = el("section", {class: "card" + (node.online ? " online" : ""), "data-node": node.name});
  c.append(el("h2", {}, node.name,
    el("span", {class: "badge " + node.role}, node.role === "hub" ? "Hub" : "Spoke"),
    el("span", {class: "badge " + node.profile}, node.profile === "wasm" ? "WASM" : "Native")));
  c.append(el("div", {class: "state " + (node.online ? "on" : "off")},
    (node.online ? "online" : "offline") + " · last seen " + ago(node.last_seen)));
  const t = el("table");
  for (const [sensor, quantities] of Object.entries(node.sensors)) {
    t.append(el("tr", {class: "sensor"}, el("td", {colspan: 2}, sensor)));
    for (const [q, r] of Object.entries(quantities)) {
      t.append(el("tr", {"data-q": `${sensor}.${q}`}, el("td", {}, LABELS[q] || q), el("td", {class: "v"}, fmt(q, r))));
    }
  }
  c.append(t);
  return c;
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const res = await fetch("/api/readings", {cache: "no-store"});
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const data = await res.json();
    document.getElementById("nodes").replaceChildren(...data.nodes.map(card));
    status.textContent = `${data.nodes.filter(n => n.online).length}/${data.nodes.length} nodes online · updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    status.textContent = "hub unreachable: " + err.message;
  }
}

refresh();
setInterval(refresh, 2000);
