// Protocol runs on this gateway: start one from a template (operators),
// follow it live (step, cycle, chamber curve against its setpoint, latest IV
// curve), abort it with confirmation, read its values and provisional
// verdicts, and the hub's verdict of record and certificate once the hub
// has sent them (kept by the agent: shown while the hub is unreachable).
// The engine validates every start (docs/runs.md); the page shows its
// answer as it is.

import { h, clear, setText, num, duration } from './dom.js';
import { lineChart, COLORS } from './chart.js';

export function render(main, app, runId) {
  return runId ? detail(main, app, runId) : list(main, app);
}

function list(main, app) {
  document.title = 'Runs · Gateway';
  const tbody = h('tbody');
  const table = h('table', { class: 'runs' },
    h('caption', { text: 'Runs of this agent process (finished runs of earlier ones are at the hub)' }),
    h('thead', {}, h('tr', {}, ...['Run', 'Protocol', 'Bench', 'Sample', 'State', 'Progress', 'Hub verdict'].map((t) => h('th', { scope: 'col', text: t })))),
    tbody);
  main.append(h('h1', { text: 'Runs' }));
  if (app.canOperate()) main.append(startForm(app));
  main.append(h('div', { class: 'scroll' }, table));
  let shown = '';
  function update(snap) {
    const key = JSON.stringify(snap.runs.map((r) => [r.id, r.state, r.steps_done, r.hub_verdict]));
    if (key === shown) return;
    shown = key;
    clear(tbody);
    if (!snap.runs.length) tbody.append(h('tr', {}, h('td', { colspan: '7', class: 'muted', text: 'No run yet.' })));
    for (const r of snap.runs.slice().reverse()) {
      tbody.append(h('tr', {},
        h('td', {}, h('a', { href: `#/runs/${r.id}`, text: r.id.slice(0, 8) })),
        h('td', { text: r.protocol }), h('td', { text: r.bench }), h('td', { text: r.sample_id }),
        h('td', {}, h('span', { class: `badge run-${r.state}`, text: r.state })),
        h('td', { text: `${r.steps_done} / ${r.executed_steps}` }),
        h('td', {}, r.hub_verdict ? verdictBadge(r.hub_verdict) : h('span', { class: 'muted', text: 'not yet' }))));
    }
  }
  return { update };
}

// A verdict as a badge: the gateway's ("no verdict") and the hub's
// ("no_verdict") share their colours.
function verdictBadge(v) {
  return h('span', { class: `badge v-${v.replace(/[\s_]+/g, '-')}`, text: v.replace(/_/g, ' ') });
}

// What the hub said of the run: its verdict of record and the certificate,
// a plain link to the hub's public verification page.
function showHub(el, hub) {
  clear(el);
  if (!hub) {
    el.append(h('p', { class: 'muted', id: 'hub-none', text: 'The hub has not sent its verdict of this run yet (it evaluates a run once the gateway has delivered it).' }));
    return;
  }
  const rows = [
    ['Verdict of record', h('span', { id: 'hub-verdict' }, verdictBadge(hub.final_verdict))],
    ['Criteria computed', hub.computed.replace(/_/g, ' ')],
    ['Evaluated', `${hub.evaluated_at ? new Date(hub.evaluated_at).toLocaleString() : '—'} (evaluation ${hub.evaluation_id})`],
  ];
  if (hub.decided_by) rows.push(['Decided by', hub.decided_by]);
  if (hub.certificate_id) {
    const cert = hub.verification_url
      ? h('a', { id: 'hub-certificate', href: hub.verification_url, rel: 'noopener noreferrer', target: '_blank', text: hub.certificate_id })
      : h('span', { id: 'hub-certificate', text: hub.certificate_id });
    rows.push(['Certificate', h('span', {}, cert, ' ', h('span', { class: `badge cert-${hub.certificate_state}`, text: hub.certificate_state }))]);
  } else {
    rows.push(['Certificate', 'none issued yet']);
  }
  el.append(h('table', {}, h('tbody', {}, ...rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row', text: k }), typeof v === 'string' ? h('td', { text: v }) : h('td', {}, v))))));
  if (hub.certificate_id) el.append(h('p', { class: 'small muted', text: 'The certificate link opens the hub\'s public verification page: this device needs to reach the hub for it to open.' }));
}

function startForm(app) {
  const proto = h('select', { id: 'run-protocol', required: true });
  const bench = h('select', { id: 'run-bench', required: true });
  const sample = h('input', { id: 'run-sample', required: true, placeholder: 'sample:MOD-0001', pattern: 'sample:.+', autocomplete: 'off' });
  const params = h('div', { class: 'params', id: 'run-params' });
  const msg = h('p', { class: 'error', role: 'alert', id: 'run-error' });
  const info = h('p', { class: 'small muted' });
  let protocols = [];
  const form = h('form', { class: 'card', id: 'start-form', onsubmit: async (e) => {
    e.preventDefault();
    setText(msg, '');
    const p = protocols.find((x) => x.id === proto.value);
    const values = {};
    for (const q of (p ? p.parameters : [])) {
      const input = document.getElementById(`param-${q.name}`);
      if (input.value.trim() !== '') values[q.name] = Number(input.value);
    }
    const body = { protocol: proto.value, bench: bench.value, sample_id: sample.value.trim(), parameters: values };
    const ok = await app.confirm('Start this run?', `${body.protocol} on bench ${body.bench} for ${body.sample_id}. The bench's instruments will be driven by the protocol.`, { ok: 'Start run' });
    if (!ok) return;
    try {
      const run = await app.api('POST', '/api/v1/runs', body);
      location.hash = `#/runs/${run.id}`;
    } catch (ex) {
      // The engine's own validation, word for word (bad_parameter, over_limit, bench_busy, ...).
      setText(msg, `Not started: ${ex.message}`);
    }
  } },
  h('h2', { text: 'Start a run' }),
  h('div', { class: 'fields' },
    h('p', {}, h('label', { for: 'run-protocol', text: 'Protocol' }), proto),
    h('p', {}, h('label', { for: 'run-bench', text: 'Bench' }), bench),
    h('p', {}, h('label', { for: 'run-sample', text: 'Sample (twin id)' }), sample)),
  info, params, msg,
  h('button', { type: 'submit', class: 'primary', id: 'run-start', text: 'Start run…' }));

  function showParams() {
    const p = protocols.find((x) => x.id === proto.value);
    clear(params);
    if (!p) return;
    setText(info, `${p.name} ${p.version}${p.standard ? ` (${p.standard})` : ''}: ${p.executed_steps} steps, nominal ${duration(p.nominal_duration_s)}. ${p.description || ''}`);
    for (const q of p.parameters) {
      const id = `param-${q.name}`;
      const range = [q.min !== null && q.min !== undefined ? `min ${q.min}` : '', q.max !== null && q.max !== undefined ? `max ${q.max}` : ''].filter(Boolean).join(', ');
      params.append(h('p', {},
        h('label', { for: id, text: `${q.name}${q.unit ? ` (${q.unit})` : ''}` }),
        h('input', { id, type: 'number', step: 'any', inputmode: 'decimal', class: 'narrow', placeholder: q.default !== null && q.default !== undefined ? String(q.default) : 'required', 'aria-describedby': `${id}-help` }),
        h('span', { class: 'small muted block', id: `${id}-help`, text: [q.description, range, q.default !== null && q.default !== undefined ? `default ${q.default}` : 'no default: required'].filter(Boolean).join(' · ') })));
    }
  }
  proto.addEventListener('change', showParams);
  (async () => {
    try {
      const [p, b] = await Promise.all([app.api('GET', '/api/v1/protocols'), app.api('GET', '/api/v1/benches')]);
      protocols = p.protocols;
      for (const x of protocols) proto.append(h('option', { value: x.id, text: `${x.id} — ${x.name}` }));
      for (const x of b.benches) bench.append(h('option', { value: x.id, text: x.unavailable ? `${x.id} (unavailable)` : x.id, disabled: !!x.unavailable }));
      showParams();
    } catch (ex) {
      setText(msg, ex.message);
    }
  })();
  return form;
}

/// The bench point a run's chamber chart shows: the chamber's temperature
/// when the bench maps one, else the first point with both a read and a write.
function chamberPoint(benchDef) {
  if (!benchDef) return null;
  const pts = Object.entries(benchDef.points || {});
  const pick = pts.find(([n, p]) => n === 'chamber.temperature' && p.write) || pts.find(([, p]) => p.read && p.write);
  return pick ? { name: pick[0], ...pick[1] } : null;
}

function detail(main, app, id) {
  document.title = `Run ${id.slice(0, 8)} · Gateway`;
  const stateEl = h('span', { class: 'badge' });
  const prog = h('progress', { id: 'run-progress', max: '1', value: '0', 'aria-label': 'Steps done' });
  const progText = h('p', { id: 'run-step' });
  const meta = h('p', { class: 'muted' });
  const message = h('p', { class: 'error', id: 'run-message' });
  const abortBtn = h('button', { type: 'button', class: 'danger', id: 'run-abort', text: 'Abort run…', hidden: true });
  const abortStatus = h('p', { role: 'status', class: 'small' });
  const chamberCanvas = h('canvas', { class: 'chart', id: 'chamber-chart', role: 'img', 'aria-label': 'Chamber temperature and setpoint' });
  const chamberLegend = h('p', { class: 'small legend' });
  const ivCanvas = h('canvas', { class: 'chart', id: 'iv-chart', role: 'img', 'aria-label': 'Latest IV curve' });
  const ivNote = h('p', { class: 'small muted', text: 'No IV curve swept yet in this run.' });
  const values = h('tbody');
  const verdicts = h('tbody');
  const hubEl = h('div', { id: 'hub-verdict-card' });
  const events = h('ol', { class: 'events small' });
  main.append(
    h('p', {}, h('a', { href: '#/runs', text: '← Runs' })),
    h('h1', {}, `Run ${id.slice(0, 8)} `, stateEl),
    meta, h('div', { class: 'row' }, prog, progText), message,
    app.canOperate() ? h('p', {}, abortBtn) : null, abortStatus,
    h('div', { class: 'grid two' },
      h('section', { class: 'card', 'aria-labelledby': 'ch-h' }, h('h2', { id: 'ch-h', text: 'Chamber: reading against setpoint' }), chamberCanvas, chamberLegend),
      h('section', { class: 'card', 'aria-labelledby': 'iv-h' }, h('h2', { id: 'iv-h', text: 'Latest IV curve' }), ivCanvas, ivNote)),
    h('div', { class: 'grid two' },
      h('section', { class: 'card', 'aria-labelledby': 'val-h' }, h('h2', { id: 'val-h', text: 'Values recorded' }), h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Series' }), h('th', { scope: 'col', text: 'Value' }))), values)),
      h('section', { class: 'card', 'aria-labelledby': 'ver-h' }, h('h2', { id: 'ver-h', text: 'Verdicts (provisional)' }),
        h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Criterion' }), h('th', { scope: 'col', text: 'Verdict' }), h('th', { scope: 'col', text: 'Why' }))), verdicts)),
        h('p', { class: 'small muted', text: 'Computed on the gateway from the values above. The verdict of record and the certificate are the hub\'s, below.' }))),
    h('section', { class: 'card', 'aria-labelledby': 'hub-h' }, h('h2', { id: 'hub-h', text: 'Verdict of record (hub)' }), hubEl),
    h('section', { class: 'card', 'aria-labelledby': 'ev-h' }, h('h2', { id: 'ev-h', text: 'Latest events' }), events));

  let run = null;
  let point = null;
  let benchLoaded = false;
  const chamber = { read: [], write: [] };
  let disposed = false;

  abortBtn.addEventListener('click', async () => {
    const ok = await app.confirm('Abort this run?', `The bench is put in the protocol's safe state and run ${id.slice(0, 8)} ends ABORTED. This cannot be undone.`, { ok: 'Abort run', input: 'Reason (optional)' });
    if (!ok) { setText(abortStatus, 'Abort cancelled.'); return; }
    try {
      await app.api('POST', `/api/v1/runs/${encodeURIComponent(id)}/abort`, { reason: ok.value });
      setText(abortStatus, 'Abort requested: the safe state is being applied.');
    } catch (e) {
      setText(abortStatus, `Not aborted: ${e.message}`);
    }
  });

  async function loadBench() {
    try {
      const b = await app.api('GET', '/api/v1/benches');
      point = chamberPoint(b.benches.find((x) => x.id === run.bench));
      benchLoaded = true;
      if (point) {
        const since = Math.max(60, Math.ceil((Date.now() - Date.parse(run.started_at)) / 1000) + 10);
        const hist = await app.api('GET', `/api/v1/history?device=${encodeURIComponent(point.device)}&seconds=${Math.min(3600, since)}`);
        chamber.read = (hist.points[point.read] || []).slice();
        chamber.write = (hist.points[point.write] || []).slice();
      }
    } catch (e) { /* the chart stays empty; the rest of the page works */ }
  }

  async function poll() {
    if (disposed) return;
    try {
      run = await app.api('GET', `/api/v1/runs/${encodeURIComponent(id)}`);
      if (!benchLoaded) await loadBench();
      show();
    } catch (e) {
      setText(message, e.status === 404 ? 'No such run on this gateway (runs of earlier agent processes are at the hub).' : e.message);
    }
    if (!disposed) setTimeout(poll, 2000);
  }

  function show() {
    stateEl.className = `badge run-${run.state}`;
    setText(stateEl, run.state);
    setText(meta, `${run.protocol} ${run.protocol_version} on ${run.bench} for ${run.sample_id}, started ${new Date(run.started_at).toLocaleString()} by ${run.operator}; time scale ${run.time_scale}x`);
    prog.max = Math.max(1, run.executed_steps);
    prog.value = run.steps_done;
    const cycle = (run.step.match(/:(\d+)/) || [])[1];
    setText(progText, `Step ${run.step || '—'} (${run.step_kind || '—'})${cycle ? `, cycle ${cycle}` : ''} · ${run.steps_done} of ${run.executed_steps} steps · ${duration(run.elapsed_s)} simulated${run.paused_by ? ` · paused: ${run.paused_by}` : ''}`);
    setText(message, run.message || '');
    abortBtn.hidden = !(run.state === 'running' || run.state === 'paused');
    clear(values);
    for (const [k, v] of Object.entries(run.values)) {
      if (k.endsWith('.curve')) continue;
      values.append(h('tr', {}, h('th', { scope: 'row', text: k }), h('td', { class: 'num', text: num(v) })));
    }
    if (!values.firstChild) values.append(h('tr', {}, h('td', { colspan: '2', class: 'muted', text: 'Nothing recorded yet.' })));
    clear(verdicts);
    for (const v of run.verdicts) {
      verdicts.append(h('tr', {}, h('th', { scope: 'row', text: v.criterion }),
        h('td', {}, h('span', { class: `badge v-${v.verdict.replace(/\s+/g, '-')}`, text: v.verdict })), h('td', { class: 'small', text: v.explanation })));
    }
    if (!run.verdicts.length) verdicts.append(h('tr', {}, h('td', { colspan: '3', class: 'muted', text: run.known_from === 'hub' ? 'Not kept on the gateway for a run of an earlier agent process.' : 'This protocol has no criteria.' })));
    showHub(hubEl, run.hub);
    clear(events);
    for (const e of run.events.slice(-12).reverse()) {
      events.append(h('li', {}, h('span', { class: 'muted', text: `${new Date(e.at).toLocaleTimeString()} ` }), h('strong', { text: e.kind }), ` ${e.step} ${e.message}`));
    }
    if (run.latest_iv) {
      setText(ivNote, `${run.latest_iv.label}, ${new Date(run.latest_iv.at).toLocaleTimeString()}: ${run.latest_iv.points.length} points`);
      lineChart(ivCanvas, [{ name: 'I(V)', points: run.latest_iv.points, color: COLORS[2] }], { xLabel: 'V', yLabel: 'A' });
    }
    drawChamber();
  }

  function drawChamber() {
    if (!point) { setText(chamberLegend, benchLoaded ? 'This bench maps no point with a setpoint.' : ''); return; }
    const from = Date.parse(run.started_at) / 1000 - 30;
    const cut = (s) => s.filter((p) => p[0] >= from);
    lineChart(chamberCanvas, [
      { name: 'reading', points: cut(chamber.read), color: COLORS[1] },
      { name: 'setpoint', points: cut(chamber.write), color: COLORS[0], dashed: true },
    ], { time: true, yLabel: point.unit || '' });
    setText(chamberLegend, `${point.name}: solid red = reading (${point.device}.${point.read}), dashed blue = setpoint (${point.device}.${point.write})`);
  }

  function update(snap) {
    if (!point) return;
    const d = snap.devices.find((x) => x.device_id === point.device);
    if (!d) return;
    for (const [key, arr] of [['read', chamber.read], ['write', chamber.write]]) {
      const v = d.values[point[key]];
      if (v && v.value !== undefined && (!arr.length || arr[arr.length - 1][0] < v.ts_ms / 1000)) arr.push([v.ts_ms / 1000, v.value]);
      while (arr.length > 4000) arr.shift();
    }
    if (run) drawChamber();
  }

  poll();
  return { update, dispose() { disposed = true; } };
}
