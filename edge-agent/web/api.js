// The page's calls to the agent's JSON API: same origin, the session cookie,
// and the CSRF token on every state change (docs/security.md, ## Edge).

let csrf = null;
let onUnauthorized = () => {};

export function setCsrf(token) { csrf = token; }
export function whenUnauthorized(f) { onUnauthorized = f; }

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

export async function api(method, path, body) {
  const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET' && csrf) opts.headers['X-CSRF-Token'] = csrf;
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'the gateway does not answer');
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && !path.endsWith('/login')) onUnauthorized(data && data.message);
  if (!r.ok) {
    throw new ApiError(r.status, data && data.error, (data && data.message) || `${r.status} ${r.statusText}`);
  }
  return data;
}
