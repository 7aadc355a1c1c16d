// One device: its profile, every point with unit and quality, a chart of
// the last hour (the agent keeps it in memory, one sample per 10 s; this
// page adds the live values it receives each second), and, for operators,
// a confirmed write to each writable point.

import { h, clear, setText, num, unitText, ago, stateBadge } from './dom.js';
import { lineChart, COLORS } from './chart.js';

const HOUR_S = 3600;

export function render(main, app, id) {
  document.title = `${id} · Gateway`;
  const badge = stateBadge('connecting');
  const info = h('p', { class: 'muted' });
  const err = h('p', { class: 'error' });
  const profileEl = h('p', {});
  const pick = h('select', { id: 'chart-point' });
  const canvas = h('canvas', { class: 'chart', id: 'device-chart', role: 'img', 'aria-label': 'Chart of the chosen point over the last hour' });
  const chartNote = h('p', { class: 'small muted', text: 'Last hour, held in the agent’s memory (one sample per 10 s), plus the live values this page receives each second.' });
  const status = h('p', { class: 'small', role: 'status', id: 'write-status' });
  const tbody = h('tbody');
  const table = h('table', { class: 'points' },
    h('caption', { text: 'Points' }),
    h('thead', {}, h('tr', {}, ...['Point', 'Value', 'Unit', 'Quality', 'Updated', ...(app.canOperate() ? ['Write'] : [])].map((t) => h('th', { scope: 'col', text: t })))),
    tbody);
  main.append(
    h('p', {}, h('a', { href: '#/', text: '← Overview' })),
    h('h1', {}, `Device ${id} `, badge),
    info, err, profileEl,
    h('section', { class: 'card', 'aria-labelledby': 'chart-h' },
      h('div', { class: 'row' }, h('h2', { id: 'chart-h', text: 'Last hour' }), h('label', { for: 'chart-point', text: 'Point ' }), pick),
      canvas, chartNote),
    status,
    h('div', { class: 'scroll' }, table));

  let points = [];
  const series = new Map(); // point -> [[t, v]]
  const rows = new Map();
  let disposed = false;

  async function loadHistory() {
    try {
      const hist = await app.api('GET', `/api/v1/history?device=${encodeURIComponent(id)}&seconds=${HOUR_S}`);
      for (const [name, pts] of Object.entries(hist.points)) series.set(name, pts.slice());
      draw();
    } catch (e) {
      setText(chartNote, `History not available: ${e.message}`);
    }
  }

  async function load() {
    try {
      const p = await app.api('GET', `/api/v1/devices/${encodeURIComponent(id)}/points`);
      const m = p.profile;
      setText(profileEl, `Profile in use: ${m.manufacturer} ${m.name} (${m.id}, ${m.device_type})`);
      points = p.points;
      clear(tbody);
      rows.clear();
      for (const pt of points) rows.set(pt.name, row(pt));
      clear(pick);
      for (const pt of points) pick.append(h('option', { value: pt.name, text: `${pt.name}${pt.unit && pt.unit !== '1' ? ` (${pt.unit})` : ''}` }));
      if (app.snap) update(app.snap);
    } catch (e) {
      setText(err, e.status === 404 ? `No polled device ${id} on this gateway.` : e.message);
    }
    await loadHistory();
  }

  function row(pt) {
    const val = h('td', { class: 'num' });
    const quality = h('td', {});
    const when = h('td', { class: 'small' });
    const cells = [h('th', { scope: 'row' }, pt.name, pt.description ? h('span', { class: 'small muted block', text: pt.description }) : null),
      val, h('td', { text: unitText(pt.unit) }), quality, when];
    if (app.canOperate()) {
      if (pt.writable) {
        const inputId = `w-${pt.name}`;
        const input = h('input', { id: inputId, type: 'number', step: 'any', inputmode: 'decimal', class: 'narrow', 'aria-label': `New value for ${pt.name}` });
        const btn = h('button', { type: 'submit', class: 'write', 'data-point': pt.name, text: 'Write…' });
        const form = h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); write(pt, input); } }, input, btn);
        cells.push(h('td', {}, form));
      } else {
        cells.push(h('td', { class: 'muted small', text: 'read only' }));
      }
    }
    const tr = h('tr', { 'data-point': pt.name }, ...cells);
    tbody.append(tr);
    return { val, quality, when, tr };
  }

  async function write(pt, input) {
    const v = Number(input.value);
    if (input.value.trim() === '' || !Number.isFinite(v)) {
      setText(status, `Enter a number for ${pt.name}.`);
      input.focus();
      return;
    }
    const cur = app.snap && app.snap.devices.find((d) => d.device_id === id);
    const now = cur && cur.values[pt.name] ? num(cur.values[pt.name].value) : 'unknown';
    const ok = await app.confirm(`Write ${pt.name}?`, `Set ${id} · ${pt.name} from ${now} to ${num(v)} ${unitText(pt.unit)}. The instrument acts on it at once.`, { ok: 'Write' });
    if (!ok) { setText(status, 'Write cancelled.'); return; }
    setText(status, `Writing ${pt.name}…`);
    try {
      await app.api('POST', `/api/v1/devices/${encodeURIComponent(id)}/write`, { point: pt.name, value: v });
      setText(status, `Written: ${pt.name} = ${num(v)} ${unitText(pt.unit)}.`);
      input.value = '';
    } catch (e) {
      setText(status, `Not written: ${e.message}`);
    }
  }

  function draw() {
    const name = pick.value;
    const pts = series.get(name) || [];
    const now = Date.now() / 1000;
    const unit = (points.find((p) => p.name === name) || {}).unit || '';
    lineChart(canvas, [{ name, points: pts, color: COLORS[0] }], { time: true, xMin: now - HOUR_S, xMax: now, yLabel: unitText(unit), gap: 35 });
    canvas.setAttribute('aria-label', `${name} over the last hour: ${pts.length} samples${pts.length ? `, latest ${num(pts[pts.length - 1][1])} ${unitText(unit)}` : ''}`);
  }
  pick.addEventListener('change', draw);

  function update(snap) {
    const d = snap.devices.find((x) => x.device_id === id);
    if (!d) { setText(err, `No device ${id} on this gateway.`); return; }
    badge.className = `badge st-${d.state}`;
    setText(badge, d.state);
    setText(info, `${d.endpoint} · polls ok ${d.polls_ok}, failed ${d.polls_failed} · round trip ${num(d.last_round_trip_ms)} ms (avg ${num(d.avg_round_trip_ms)})`);
    setText(err, d.last_error ? `Last error: ${d.last_error}` : '');
    for (const [name, r] of rows) {
      const v = d.values[name];
      const bad = d.bad_points.find((b) => b.point === name);
      setText(r.val, v ? (v.value !== undefined ? num(v.value) : v.text) : '—');
      const q = bad ? `bad: ${bad.error}` : !v ? 'no value yet' : d.state === 'online' || d.state === 'degraded' ? 'good' : `stale (device ${d.state})`;
      setText(r.quality, q);
      r.quality.className = bad ? 'error' : q === 'good' ? 'ok-text' : 'warn-text';
      setText(r.when, v ? ago(v.ts_ms, snap.time_ms) : '');
      if (v && v.value !== undefined && (d.state === 'online' || d.state === 'degraded')) {
        const s = series.get(name) || [];
        const t = v.ts_ms / 1000;
        if (!s.length || s[s.length - 1][0] < t) s.push([t, v.value]);
        while (s.length && s[0][0] < t - HOUR_S) s.shift();
        series.set(name, s);
      }
    }
    draw();
  }

  load();
  return {
    update(snap) { if (!disposed) update(snap); },
    reconnected() { loadHistory(); },
    dispose() { disposed = true; },
  };
}
