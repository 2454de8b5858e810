// A small line chart on a canvas: time on x, one or more series on y.
"use strict";

function drawChart(canvas, points, lines, opts) {
  opts = opts || {};
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 400;
  const cssH = canvas.clientHeight || 170;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const pad = { l: 48, r: 10, t: 22, b: 20 };
  const w = cssW - pad.l - pad.r;
  const h = cssH - pad.t - pad.b;
  const css = getComputedStyle(document.documentElement);
  const grid = css.getPropertyValue("--grid").trim() || "#e5e7eb";
  const text = css.getPropertyValue("--muted").trim() || "#6b7280";

  let max = 0;
  for (const p of points) {
    for (const l of lines) {
      const v = p[l.key];
      if (typeof v === "number" && isFinite(v) && v > max) max = v;
    }
  }
  max = niceMax(max || 1);
  const n = Math.max(points.length, 2);
  const span = opts.window || n;
  const x = (i) => pad.l + w * ((i + (span - points.length)) / (span - 1));
  const y = (v) => pad.t + h - (h * v) / max;

  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = grid;
  ctx.fillStyle = text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.l, yy);
    ctx.lineTo(pad.l + w, yy);
    ctx.stroke();
    ctx.fillText(formatNumber(v), pad.l - 6, yy);
  }
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  ctx.fillText(opts.xLabel || "", pad.l, cssH - 4);

  for (const l of lines) {
    ctx.strokeStyle = l.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    points.forEach((p, i) => {
      const v = p[l.key];
      if (typeof v !== "number" || !isFinite(v)) {
        started = false;
        return;
      }
      if (!started) ctx.moveTo(x(i), y(v));
      else ctx.lineTo(x(i), y(v));
      started = true;
    });
    ctx.stroke();
  }
  // legend
  let lx = pad.l;
  ctx.textBaseline = "middle";
  for (const l of lines) {
    ctx.fillStyle = l.color;
    ctx.fillRect(lx, 6, 10, 10);
    ctx.fillStyle = text;
    ctx.fillText(l.label, lx + 14, 11);
    lx += ctx.measureText(l.label).width + 30;
  }
}

function niceMax(v) {
  const exp = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) {
    if (v <= m * exp) return m * exp;
  }
  return 10 * exp;
}

function formatNumber(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
  if (v >= 10 || v === 0) return String(Math.round(v));
  return v.toFixed(1);
}

window.drawChart = drawChart;
window.formatNumber = formatNumber;
