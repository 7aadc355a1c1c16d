// A small canvas chart module: line charts over time or over a numeric x
// (IV curves), and sparklines. Plain JS, no dependency, no build step: the
// charts here are a few series of a few thousand points, which a canvas
// draws in well under a millisecond. Colours pass WCAG contrast on white.

export const COLORS = ['#0b57d0', '#b3261e', '#146c2e', '#7c4a03', '#6a1b9a'];

// The last drawing of each canvas, redrawn at its new size when the window
// changes (a tablet turned, a desktop window resized).
const drawn = new Map();
let resizeTimer = 0;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const [canvas, redraw] of drawn) {
      if (canvas.isConnected) redraw(); else drawn.delete(canvas);
    }
  }, 100);
});

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
}

function ticks(lo, hi, target) {
  if (!(hi > lo)) return [lo];
  const step = niceStep(hi - lo, target);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function extent(series, k) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of series) {
    for (const p of s.points) {
      const v = p[k];
      if (v === null || !Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) { const pad = Math.abs(lo) * 0.05 || 1; return [lo - pad, hi + pad]; }
  return [lo, hi];
}

/// Sizes the canvas's backing store to its CSS box and the screen's pixel
/// ratio; returns the 2D context in CSS pixels.
function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300;
  const hgt = canvas.clientHeight || 150;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  return { ctx, w, h: hgt };
}

function timeLabel(t, span) {
  const d = new Date(t * 1000);
  const hh = String(d.getHours()).padStart(2, '0');
  const mm = String(d.getMinutes()).padStart(2, '0');
  if (span > 600) return `${hh}:${mm}`;
  return `${hh}:${mm}:${String(d.getSeconds()).padStart(2, '0')}`;
}

function fmt(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-2)) return v.toExponential(1);
  return String(Math.round(v * 1000) / 1000);
}

/// Draws `series` ([{name, points: [[x, y], ...], color, dashed}]) on
/// `canvas`. opts: {time: x is Unix seconds, xMin, xMax, xLabel, yLabel}.
export function lineChart(canvas, series, opts = {}) {
  drawn.set(canvas, () => lineChart(canvas, series, opts));
  const { ctx, w, h } = prepare(canvas);
  const pad = { l: 56, r: 12, t: 10, b: 34 };
  let [x0, x1] = extent(series, 0);
  if (opts.xMin !== undefined) x0 = opts.xMin;
  if (opts.xMax !== undefined) x1 = opts.xMax;
  if (!(x1 > x0)) x1 = x0 + 1;
  const [y0, y1] = extent(series, 1);
  const yt = ticks(y0, y1, Math.max(2, Math.floor((h - pad.t - pad.b) / 40)));
  const ylo = Math.min(y0, yt[0]);
  const yhi = Math.max(y1, yt[yt.length - 1]);
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const Y = (y) => h - pad.b - ((y - ylo) / (yhi - ylo || 1)) * (h - pad.t - pad.b);
  ctx.font = '12px system-ui, sans-serif';
  ctx.lineWidth = 1;
  ctx.strokeStyle = '#c4c7c5';
  ctx.fillStyle = '#1f1f1f';
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const v of yt) {
    const y = Y(v);
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    ctx.fillText(fmt(v), pad.l - 6, y);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  const xt = ticks(x0, x1, Math.max(2, Math.floor((w - pad.l - pad.r) / 90)));
  for (const v of xt) {
    const x = X(v);
    ctx.beginPath(); ctx.moveTo(x, h - pad.b); ctx.lineTo(x, h - pad.b + 4); ctx.stroke();
    ctx.fillText(opts.time ? timeLabel(v, x1 - x0) : fmt(v), x, h - pad.b + 6);
  }
  ctx.strokeStyle = '#444746';
  ctx.beginPath(); ctx.moveTo(pad.l, pad.t); ctx.lineTo(pad.l, h - pad.b); ctx.lineTo(w - pad.r, h - pad.b); ctx.stroke();
  if (opts.xLabel) { ctx.textAlign = 'right'; ctx.fillText(opts.xLabel, w - pad.r, h - 14); }
  if (opts.yLabel) { ctx.textAlign = 'left'; ctx.textBaseline = 'top'; ctx.fillText(opts.yLabel, pad.l + 4, pad.t); }
  ctx.save();
  ctx.beginPath(); ctx.rect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b); ctx.clip();
  series.forEach((s, i) => {
    ctx.strokeStyle = s.color || COLORS[i % COLORS.length];
    ctx.lineWidth = 2;
    ctx.setLineDash(s.dashed ? [6, 4] : []);
    ctx.beginPath();
    let open = false;
    let last = null;
    for (const [x, y] of s.points) {
      if (y === null || !Number.isFinite(y)) { open = false; continue; }
      // A gap of more than opts.gap in x (an offline device) is not bridged.
      if (open && opts.gap && last !== null && x - last > opts.gap) open = false;
      if (open) ctx.lineTo(X(x), Y(y)); else ctx.moveTo(X(x), Y(y));
      open = true;
      last = x;
    }
    ctx.stroke();
  });
  ctx.restore();
  ctx.setLineDash([]);
}

/// A sparkline of plain values (oldest first), with its latest point marked.
export function sparkline(canvas, values) {
  drawn.set(canvas, () => sparkline(canvas, values.slice()));
  const { ctx, w, h } = prepare(canvas);
  const vs = values.filter((v) => Number.isFinite(v));
  if (vs.length < 2) return;
  let lo = Math.min(...vs);
  let hi = Math.max(...vs);
  if (lo === hi) { lo -= 1; hi += 1; }
  const X = (i) => 2 + (i / (values.length - 1)) * (w - 4);
  const Y = (v) => h - 3 - ((v - lo) / (hi - lo)) * (h - 6);
  ctx.strokeStyle = '#0b57d0';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let open = false;
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) { open = false; return; }
    if (open) ctx.lineTo(X(i), Y(v)); else ctx.moveTo(X(i), Y(v));
    open = true;
  });
  ctx.stroke();
  const li = values.length - 1;
  if (Number.isFinite(values[li])) {
    ctx.fillStyle = '#0b57d0';
    ctx.beginPath(); ctx.arc(X(li), Y(values[li]), 2.5, 0, Math.PI * 2); ctx.fill();
  }
}

/// A fixed-size ring of recent values, for sparklines and live charts.
export class Ring {
  constructor(size) { this.size = size; this.items = []; }
  push(v) { this.items.push(v); if (this.items.length > this.size) this.items.shift(); }
  clear() { this.items = []; }
}
