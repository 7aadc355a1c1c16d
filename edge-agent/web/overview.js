// The overview: the gateway's links (hub, buffer, MQTT), alarms, active runs,
// and one card per device with its state, last error, round trips, bad
// points, live values and sparklines of the last minutes (as this page saw
// them, one value a second).

import { h, clear, setText, num, unitText, ago, duration, bytes, stateBadge } from './dom.js';
import { sparkline, Ring } from './chart.js';

/// Sparklines per card, and how many seconds they show.
const SPARKS = 3;
const SPARK_SECONDS = 300;

export function render(main, app) {
  document.title = 'Overview · Gateway';
  const status = h('section', { class: 'grid status', 'aria-label': 'Gateway status' });
  const alarms = h('section', { class: 'card', 'aria-labelledby': 'alarms-h' }, h('h2', { id: 'alarms-h', text: 'Alarms' }));
  const alarmList = h('ul', { class: 'plain', id: 'alarm-list' });
  alarms.append(alarmList);
  const devices = h('section', { class: 'grid devices', id: 'devices', 'aria-label': 'Devices' });
  main.append(h('h1', { text: 'Overview' }), status, alarms, h('h2', { text: 'Devices' }), devices);

  const tiles = {
    hub: tile('Hub link'),
    buffer: tile('Buffer'),
    mqtt: tile('MQTT clients'),
    runs: tile('Runs'),
  };
  status.append(...Object.values(tiles).map((t) => t.el));
  const cards = new Map();
  let ids = '';

  function update(snap) {
    const now = snap.time_ms;
    const up = snap.uplink;
    tiles.hub.set(up.state === 'connected' ? 'connected' : `${up.state}: hub unreachable`, [
      `last ack ${ago(up.last_ack_ms, now)}`,
      `lag ${snap.backlog_age_s ? duration(snap.backlog_age_s) : '0 s'}`,
      up.hub_url,
    ], up.state === 'connected' ? 'ok' : 'bad');
    const b = snap.buffer;
    tiles.buffer.set(`${b.backlog} waiting`, [
      `oldest ${snap.backlog_age_s ? duration(snap.backlog_age_s) : '—'}`,
      `disk ${bytes(b.disk_bytes)}`,
      `dropped ${b.dropped + b.expired}, refused ${b.rejected}`,
    ], b.dropped + b.rejected + b.expired > 0 ? 'warn' : 'ok');
    tiles.mqtt.set(snap.mqtt ? String(snap.mqtt.clients) : 'no bus', [snap.mqtt ? 'connected now' : 'this gateway runs no MQTT bus'], 'ok');
    const active = snap.runs.filter((r) => r.state === 'running' || r.state === 'paused');
    tiles.runs.set(`${active.length} active`, active.slice(0, 2).map((r) => `${r.protocol} on ${r.bench}: ${r.steps_done}/${r.executed_steps}`), 'ok');

    clear(alarmList);
    const on = snap.alarms.filter((a) => a.active);
    if (on.length === 0) {
      alarmList.append(h('li', { class: 'muted', text: snap.alarms.length ? `No active alarm (${snap.alarms.length} alarm points watched).` : 'No alarm points on this gateway.' }));
    }
    for (const a of on) {
      alarmList.append(h('li', { class: 'alarm' }, h('strong', { text: `${a.device} · ${a.point}` }), ` = ${num(a.value)}`, a.description ? ` — ${a.description}` : ''));
    }

    const newIds = snap.devices.map((d) => d.device_id).join('\n');
    if (newIds !== ids) {
      ids = newIds;
      clear(devices);
      cards.clear();
      for (const d of snap.devices) {
        const c = card(d);
        cards.set(d.device_id, c);
        devices.append(c.el);
      }
    }
    for (const d of snap.devices) cards.get(d.device_id).update(d, now);
  }

  return { update, reconnected() { for (const c of cards.values()) c.gap(); } };
}

function tile(title) {
  const main = h('p', { class: 'big' });
  const lines = h('ul', { class: 'plain small' });
  const el = h('div', { class: 'card tile' }, h('h2', { text: title }), main, lines);
  return {
    el,
    set(text, details, level) {
      setText(main, text);
      el.className = `card tile lvl-${level}`;
      clear(lines);
      for (const d of details) if (d) lines.append(h('li', { text: d }));
    },
  };
}

function card(d) {
  const id = d.device_id;
  const badge = stateBadge(d.state);
  const err = h('p', { class: 'error small' });
  const meta = h('p', { class: 'small muted' });
  const bad = h('p', { class: 'small warn-text' });
  const sparks = h('div', { class: 'sparks' });
  const table = h('table', { class: 'values' }, h('caption', { class: 'sr-only', text: `Values of ${id}` }));
  const tbody = h('tbody');
  table.append(tbody);
  const el = h('article', { class: `card device st-${d.state}`, id: `device-${id}`, 'data-state': d.state, 'aria-labelledby': `dev-h-${id}` },
    h('header', { class: 'row' }, h('h3', { id: `dev-h-${id}` }, h('a', { href: `#/device/${encodeURIComponent(id)}`, text: id })), badge),
    meta, err, bad, sparks, table);
  const rows = new Map();
  const rings = new Map();
  const sparkEls = new Map();
  return {
    el,
    gap() { for (const r of rings.values()) r.push(NaN); },
    update(d, now) {
      el.className = `card device st-${d.state}`;
      el.dataset.state = d.state;
      setText(badge, d.state);
      badge.className = `badge st-${d.state}`;
      setText(err, d.last_error ? `Last error: ${d.last_error}` : '');
      const rtt = d.avg_round_trip_ms !== null && d.avg_round_trip_ms !== undefined ? `round trip ${num(d.last_round_trip_ms)} ms (avg ${num(d.avg_round_trip_ms)})` : 'no round trip yet';
      setText(meta, `${d.profile} · ${rtt} · last poll ${ago(d.last_success_ms, now)}`);
      const badN = d.bad_points.length + d.refused_registers.length;
      setText(bad, badN ? `Bad points: ${d.bad_points.map((b) => b.point).join(', ') || '—'}${d.refused_registers.length ? ` (+${d.refused_registers.length} refused register ranges)` : ''}` : '');
      const names = Object.keys(d.values);
      for (const name of names) {
        const v = d.values[name];
        let row = rows.get(name);
        if (!row) {
          const val = h('td', { class: 'num' });
          row = { val, tr: h('tr', { 'data-point': name }, h('th', { scope: 'row', text: name }), val, h('td', { class: 'unit', text: unitText(v.unit) })) };
          rows.set(name, row);
          tbody.append(row.tr);
        }
        setText(row.val, v.value !== undefined ? num(v.value) : (v.text || '—'));
        row.tr.classList.toggle('bad', d.bad_points.some((b) => b.point === name));
        if (v.value !== undefined && (rings.size < SPARKS || rings.has(name))) {
          if (!rings.has(name)) {
            rings.set(name, new Ring(SPARK_SECONDS));
            const c = h('canvas', { class: 'spark', role: 'img', 'aria-label': `${name}, last ${SPARK_SECONDS / 60} minutes` });
            sparkEls.set(name, c);
            sparks.append(h('div', { class: 'spark-box' }, h('span', { class: 'small muted', text: name }), c));
          }
          // An offline device's last value is not live: a gap, not a flat line.
          rings.get(name).push(d.state === 'offline' || d.state === 'error' ? NaN : v.value);
        }
      }
      for (const [name, c] of sparkEls) sparkline(c, rings.get(name).items);
    },
  };
}
