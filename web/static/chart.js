// A small SVG line chart for /api/history: raw points as a line, rollups as a mean line inside a
// min..max band, nice axis ticks, a crosshair readout. No library, nothing from a CDN.
"use strict";

const HarvesterChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const M = {left: 52, right: 14, top: 12, bottom: 26};

  function node(tag, attrs = {}, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Ticks at 1/2/5 x 10^k covering [lo, hi].
  function ticks(lo, hi, count) {
    const span = hi - lo || 1;
    const raw = span / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
    return {values: out, step};
  }

  function timeTicks(since, until, maxTicks) {
    const span = until - since;
    const steps = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800];
    const step = steps.find((s) => span / s <= maxTicks) || 172800;
    const offset = new Date().getTimezoneOffset() * 60;  // align to local wall-clock boundaries
    const out = [];
    for (let t = Math.ceil((since - offset) / step) * step + offset; t <= until; t += step) out.push(t);
    return out;
  }

  function timeLabel(ts, span) {
    const d = new Date(ts * 1000);
    const hm = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
    return span > 2 * 86400 ? d.toLocaleDateString([], {weekday: "short", day: "numeric"}) : hm;
  }

  function fmt(v, step) {
    const digits = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
    return v.toFixed(digits);
  }

  function draw(box, data, opts) {
    const width = Math.max(280, box.clientWidth || 600);
    const height = width < 500 ? 200 : 240;
    const svg = node("svg", {viewBox: `0 0 ${width} ${height}`, width, height, class: "chart-svg", role: "img",
      "aria-label": `${data.node}/${data.sensor} ${data.quantity}`});
    const raw = data.step === "raw";
    const pts = data.points.filter((p) => p[1] !== null);
    const {until} = opts;
    // A series that began well inside the window (a new node) is drawn from its first point,
    // over at least two minutes so a few points do not collapse the axis.
    const first = pts.length ? Math.min(pts[0][0], until - 120) : opts.since;
    const since = first > opts.since + 0.1 * (until - opts.since) ? first : opts.since;
    const x = (t) => M.left + (t - since) / (until - since) * (width - M.left - M.right);
    if (!pts.length) {
      svg.append(node("text", {x: width / 2, y: height / 2, class: "chart-empty", "text-anchor": "middle"},
        "No data in this range yet"));
      box.replaceChildren(svg);
      return;
    }
    const lows = pts.map((p) => p[1]), highs = pts.map((p) => (raw ? p[1] : p[3]));
    let lo = Math.min(...lows), hi = Math.max(...highs);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.08;
    const yt = ticks(lo - pad, hi + pad, 4);
    lo = Math.min(lo - pad, yt.values[0]);
    hi = Math.max(hi + pad, yt.values[yt.values.length - 1]);
    const y = (v) => M.top + (hi - v) / (hi - lo) * (height - M.top - M.bottom);

    const grid = node("g", {class: "chart-grid"});
    for (const v of yt.values) {
      grid.append(node("line", {x1: M.left, x2: width - M.right, y1: y(v), y2: y(v)}));
      grid.append(node("text", {x: M.left - 6, y: y(v) + 4, "text-anchor": "end"}, fmt(v, yt.step)));
    }
    const maxTicks = Math.max(2, Math.min(7, Math.floor((width - M.left - M.right) / 80)));
    for (const t of timeTicks(since, until, maxTicks)) {
      grid.append(node("line", {x1: x(t), x2: x(t), y1: M.top, y2: height - M.bottom, class: "v"}));
      grid.append(node("text", {x: x(t), y: height - 8, "text-anchor": "middle"}, timeLabel(t, until - since)));
    }
    if (opts.unit) grid.append(node("text", {x: 6, y: M.top + 4, class: "unit"}, opts.unit));
    svg.append(grid);

    // Break the line where readings stopped for a while (a node was offline), instead of bridging it.
    const gaps = pts.slice(1).map((p, i) => p[0] - pts[i][0]).sort((a, b) => a - b);
    const gapLimit = Math.max(5 * (gaps[Math.floor(gaps.length / 2)] || 0), raw ? 30 : 180);
    const path = (value) => pts.map((p, i) =>
      `${i && p[0] - pts[i - 1][0] <= gapLimit ? "L" : "M"}${x(p[0]).toFixed(1)},${y(value(p)).toFixed(1)}`).join("");
    if (!raw) {
      const band = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[3]).toFixed(1)}`).join(" ") + " " +
        pts.slice().reverse().map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      svg.append(node("polygon", {points: band, class: "chart-band"}));
    }
    svg.append(node("path", {d: path((p) => (raw ? p[1] : p[2])), class: "chart-line"}));
    const last = pts[pts.length - 1];
    svg.append(node("circle", {cx: x(last[0]), cy: y(raw ? last[1] : last[2]), r: 3.5, class: "chart-last"}));

    // Crosshair: the nearest point's time and value under the pointer.
    const cross = node("g", {class: "chart-cross", visibility: "hidden"});
    const vline = node("line", {y1: M.top, y2: height - M.bottom});
    const label = node("text", {y: M.top + 12});
    cross.append(vline, label);
    svg.append(cross);
    svg.addEventListener("pointermove", (ev) => {
      const rect = svg.getBoundingClientRect();
      const px = (ev.clientX - rect.left) * width / rect.width;
      const t = since + (px - M.left) / (width - M.left - M.right) * (until - since);
      let best = pts[0];
      for (const p of pts) if (Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
      const v = raw ? best[1] : best[2];
      vline.setAttribute("x1", x(best[0])); vline.setAttribute("x2", x(best[0]));
      const right = x(best[0]) > width / 2;
      label.setAttribute("x", x(best[0]) + (right ? -6 : 6));
      label.setAttribute("text-anchor", right ? "end" : "start");
      label.textContent = `${new Date(best[0] * 1000).toLocaleTimeString()} · ${fmt(v, yt.step / 10)} ${opts.unit || ""}`;
      cross.setAttribute("visibility", "visible");
    });
    svg.addEventListener("pointerleave", () => cross.setAttribute("visibility", "hidden"));
    box.replaceChildren(svg);
  }

  return {draw, ticks};
})();
