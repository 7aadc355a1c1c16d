// A real OpenID Connect issuer for the hub's single sign-on tests: the npm
// package oidc-provider (installed by scripts/setup-test-peers.sh), with
// client-credentials clients that get JWT access tokens for a resource
// (the audience) carrying the claims the test configures.
//
//   node issuer.mjs --modules DIR --config FILE
//
// DIR is the node_modules folder holding oidc-provider; FILE is JSON:
//   { "port": 1234,
//     "issuer": "http://127.0.0.1:1234",          (optional, that is the default)
//     "resources": ["urn:qi:hub", "urn:qi:other"],
//     "clients": [{ "client_id": "...", "client_secret": "...",
//                   "alg": "RS256" | "ES256" | "EdDSA",   (default RS256)
//                   "ttl_s": 300,                         (access token lifetime)
//                   "claims": { "roles": ["qi-viewer"] }, (added to the token)
//                   "shift": { "nbf": 600, "iat": 600 },  (claim = now + N seconds)
//                   "override": { "iss": "..." } }] }     (replaces a standard claim)
//
// The signing keys are generated at start (nothing secret is stored). Besides
// the provider's own endpoints the script serves, for the tests:
//   POST /admin/rotate?alg=RS256  a new key of that alg goes in front (it signs from
//                                 now on); the old one stays published
//   POST /admin/retire?kid=K      the key K is no longer published
//   GET  /admin/stats             {"jwks_requests": N, "kids": [...]}
// Prints "ready" once listening.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`usage: issuer.mjs --modules DIR --config FILE (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const modules = arg('--modules');
const cfg = JSON.parse(readFileSync(arg('--config'), 'utf8'));
const { default: Provider } = await import(
  pathToFileURL(join(modules, 'oidc-provider/lib/index.js')).href
);

const issuer = cfg.issuer ?? `http://127.0.0.1:${cfg.port}`;
const resources = cfg.resources ?? ['urn:qi:hub'];
const clients = new Map(cfg.clients.map((c) => [c.client_id, c]));

function newKey(alg) {
  let pair;
  if (alg === 'RS256') pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  else if (alg === 'ES256') pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else if (alg === 'EdDSA') pair = generateKeyPairSync('ed25519');
  else throw new Error(`unsupported alg ${alg}`);
  return { ...pair.privateKey.export({ format: 'jwk' }), kid: `${alg}-${randomUUID()}`, alg, use: 'sig' };
}

// Newest first: oidc-provider signs with the first key of the wanted alg.
let keys = [newKey('RS256'), newKey('ES256'), newKey('EdDSA')];

function build() {
  const provider = new Provider(issuer, {
    clients: cfg.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: 'api',
    })),
    jwks: { keys },
    scopes: ['api'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resources[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource, client) => {
          if (!resources.includes(resource)) {
            throw new Provider.errors.InvalidTarget(`unknown resource ${resource}`);
          }
          const c = clients.get(client.clientId) ?? {};
          return {
            scope: 'api',
            audience: resource,
            accessTokenFormat: 'jwt',
            accessTokenTTL: c.ttl_s ?? 300,
            jwt: { sign: { alg: c.alg ?? 'RS256' } },
          };
        },
      },
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'],
    },
    extraTokenClaims: (_ctx, token) => clients.get(token.clientId)?.claims,
    formats: {
      customizers: {
        jwt: (_ctx, token, jwt) => {
          const c = clients.get(token.clientId) ?? {};
          const now = Math.floor(Date.now() / 1000);
          for (const [claim, secs] of Object.entries(c.shift ?? {})) {
            jwt.payload[claim] = now + secs;
          }
          Object.assign(jwt.payload, c.override ?? {});
        },
      },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider.callback();
}

let handler = build();
let jwksRequests = 0;

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/admin/rotate' && req.method === 'POST') {
    const key = newKey(url.searchParams.get('alg') ?? 'RS256');
    keys = [key, ...keys];
    handler = build();
    console.log(`rotated: ${key.kid} signs ${key.alg} tokens now`);
    return reply(res, 200, { kid: key.kid });
  }
  if (url.pathname === '/admin/retire' && req.method === 'POST') {
    const kid = url.searchParams.get('kid');
    keys = keys.filter((k) => k.kid !== kid);
    handler = build();
    console.log(`retired: ${kid}`);
    return reply(res, 200, { kids: keys.map((k) => k.kid) });
  }
  if (url.pathname === '/admin/stats') {
    return reply(res, 200, { jwks_requests: jwksRequests, kids: keys.map((k) => k.kid) });
  }
  if (url.pathname === '/jwks') jwksRequests += 1;
  return handler(req, res);
});

server.listen(cfg.port, '127.0.0.1', () => console.log(`ready: ${issuer}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
