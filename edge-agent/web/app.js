// The page's shell: login, the session, the live stream from the agent, the
// two banners (hub lost, gateway lost) and the routes (#/, #/device/ID,
// #/runs, #/runs/ID). Each view module renders into <main> and takes the
// live snapshots while it is shown.

import { api, setCsrf, whenUnauthorized, ApiError } from './api.js';
import { h, clear, setText, duration } from './dom.js';
import * as overview from './overview.js';
import * as device from './device.js';
import * as runs from './runs.js';

const main = document.getElementById('main');
const banners = document.getElementById('banners');
/// Seconds without an event before the page says the gateway is lost (the
/// agent sends one each second).
const STALE_MS = 4000;

const app = {
  session: null,
  snap: null,
  view: null,
  source: null,
  lastEvent: 0,
  everConnected: false,
  lostSince: 0,
  canOperate() { return this.session && ['operator', 'engineer', 'admin'].includes(this.session.role); },
  confirm,
  api,
};

// ---- the confirmation dialog ---------------------------------------------

function confirm(title, text, opts = {}) {
  const dlg = document.getElementById('confirm');
  setText(document.getElementById('confirm-title'), title);
  setText(document.getElementById('confirm-text'), text);
  setText(document.getElementById('confirm-ok'), opts.ok || 'Confirm');
  const extra = document.getElementById('confirm-extra');
  const input = document.getElementById('confirm-input');
  extra.hidden = !opts.input;
  input.value = '';
  if (opts.input) setText(document.getElementById('confirm-label'), opts.input);
  return new Promise((resolve) => {
    dlg.returnValue = 'cancel';
    dlg.addEventListener('close', () => {
      resolve(dlg.returnValue === 'ok' ? { value: input.value } : null);
    }, { once: true });
    dlg.showModal();
    (opts.input ? input : document.getElementById('confirm-cancel')).focus();
  });
}

// ---- banners --------------------------------------------------------------

const bannerEls = {};
function banner(key, kind, text) {
  let el = bannerEls[key];
  if (!text) {
    if (el) { el.remove(); delete bannerEls[key]; }
    return;
  }
  if (!el) {
    el = h('p', { class: `banner ${kind}`, id: `banner-${key}` });
    bannerEls[key] = el;
    banners.append(el);
  }
  setText(el, text);
}

function hubBanner(snap) {
  const up = snap.uplink || {};
  if (up.state === 'connected') return banner('hub', 'warn', null);
  const waiting = snap.buffer ? snap.buffer.backlog : 0;
  const age = snap.backlog_age_s ? `, the oldest ${duration(snap.backlog_age_s)} old` : '';
  const why = up.last_error ? ` (${up.last_error})` : '';
  banner('hub', 'warn', `Hub unreachable: the gateway has lost its hub${why}. Data is still recorded on the gateway: ${waiting} readings waiting${age}; they are sent when the hub is back.`);
}

function watchdog() {
  if (!app.session || !app.source) return;
  const late = Date.now() - app.lastEvent > STALE_MS;
  if (late && app.everConnected) {
    if (!app.lostSince) app.lostSince = Date.now();
    banner('gateway', 'error', 'Connection to the gateway lost: the values on this page are not live. Reconnecting…');
    document.body.classList.add('stale');
  }
}
setInterval(watchdog, 1000);

// ---- the live stream ------------------------------------------------------

function closeLive() {
  if (app.source) app.source.close();
  app.source = null;
}

function openLive() {
  closeLive();
  const es = new EventSource('/api/v1/live');
  app.source = es;
  es.addEventListener('snapshot', (e) => {
    let snap;
    try { snap = JSON.parse(e.data); } catch (err) { return; }
    const wasLost = app.lostSince !== 0;
    app.snap = snap;
    app.lastEvent = Date.now();
    app.everConnected = true;
    if (wasLost) {
      app.lostSince = 0;
      banner('gateway', 'error', null);
      document.body.classList.remove('stale');
      if (app.view && app.view.reconnected) app.view.reconnected();
    }
    setText(document.getElementById('gw-name'), snap.gateway_id);
    hubBanner(snap);
    if (app.view && app.view.update) app.view.update(snap);
  });
  es.addEventListener('session_end', (e) => {
    let msg = 'Your session ended; log in again.';
    try { msg = `Session ended: ${JSON.parse(e.data).message}`; } catch (err) { /* keep the default */ }
    loggedOut(msg);
  });
  es.addEventListener('error', () => {
    // An HTTP error (401, 429) closes an EventSource for good; a broken
    // connection is retried by the browser itself.
    if (es.readyState === EventSource.CLOSED && app.source === es) {
      setTimeout(async () => {
        if (app.source !== es) return;
        try {
          await api('GET', '/api/v1/session');
          openLive();
        } catch (err) {
          if (err.status === 0) setTimeout(() => app.source === es && openLive(), 2000);
          else if (err.status === 429) banner('gateway', 'error', err.message);
        }
      }, 2000);
    }
  });
}

// ---- login ----------------------------------------------------------------

function loggedOut(message) {
  closeLive();
  app.session = null;
  app.snap = null;
  app.everConnected = false;
  setCsrf(null);
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  setText(document.getElementById('who'), '');
  banner('hub', 'warn', null);
  banner('gateway', 'error', null);
  showLogin(message);
}

function showLogin(message) {
  if (app.view && app.view.dispose) app.view.dispose();
  app.view = null;
  document.title = 'Log in · Gateway';
  const err = h('p', { class: 'error', id: 'login-error', role: 'alert', text: message || '' });
  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'login card', onsubmit: async (e) => {
    e.preventDefault();
    setText(err, '');
    try {
      const s = await api('POST', '/api/v1/login', { username: user.value, password: pass.value });
      started(s);
    } catch (ex) {
      setText(err, ex.message);
      pass.select();
    }
  } },
  h('h1', { text: 'Log in to the gateway' }),
  h('p', {}, h('label', { for: 'login-user', text: 'User name' }), user),
  h('p', {}, h('label', { for: 'login-pass', text: 'Password' }), pass),
  err,
  h('button', { type: 'submit', class: 'primary', id: 'login-submit', text: 'Log in' }));
  clear(main).append(form);
  user.focus();
}

function started(s) {
  app.session = { user: s.user, role: s.role };
  setCsrf(s.csrf_token);
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  setText(document.getElementById('who'), `${s.user} (${s.role})`);
  openLive();
  route();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/api/v1/logout'); } catch (e) { /* logged out either way */ }
  loggedOut('Logged out.');
});

whenUnauthorized((message) => { if (app.session) loggedOut(message || 'Your session ended; log in again.'); });

// ---- routes ---------------------------------------------------------------

function route() {
  if (!app.session) return;
  if (app.view && app.view.dispose) app.view.dispose();
  const hash = location.hash.replace(/^#/, '') || '/';
  const parts = hash.split('/').filter(Boolean).map(decodeURIComponent);
  clear(main);
  let view;
  if (parts[0] === 'device' && parts[1]) view = device.render(main, app, parts[1]);
  else if (parts[0] === 'runs') view = runs.render(main, app, parts[1]);
  else view = overview.render(main, app);
  app.view = view;
  for (const [id, on] of [['nav-overview', !parts[0] || parts[0] === 'device'], ['nav-runs', parts[0] === 'runs']]) {
    const a = document.getElementById(id);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (app.snap && view.update) view.update(app.snap);
  main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);

(async () => {
  try {
    started(await api('GET', '/api/v1/session'));
  } catch (e) {
    showLogin(e instanceof ApiError && e.status === 401 ? '' : e.message);
  }
})();
