// A real OpenID Provider for signout's tests: panva's oidc-provider (npm, version 9),
// on a loopback port, with a TEST-ONLY control API under /__test/. Started and driven by
// tests/oidc_provider.py; never shipped, never exposed beyond 127.0.0.1.
//
//   node tests/oidc/provider.mjs '<json config>'      (or the config in $OIDC_TEST_CONFIG)
//
// The config (every key optional):
//   port                        0 = a free port (the one used is printed)
//   client_id, client_secret    the confidential client (client_secret_basic; _post is accepted too)
//   redirect_uris, post_logout_redirect_uris, backchannel_logout_uri
//   backchannel_logout_session_required   default true (the logout token carries sid)
//   extra_clients               more client metadata objects, as oidc-provider takes them
//   resource                    the resource indicator (audience) of the JWT access tokens
//   resource_scope              the scopes of that resource, space separated
//   alg                         signing alg of every key and token: RS256 (default), PS256, ES256, EdDSA
//   access_token_ttl            seconds, default 600
//   access_token_sid            put the session's sid in access tokens from a login (default true)
//
// On stdout, one line when it listens: "ready <port> <issuer>". Logs go to stderr.
//
// The control API (JSON in, JSON out; all on the issuer's port):
//   POST /__test/configure                 {"backchannel_logout_uri": ..., ...}: changes the client
//                                          metadata above (redirect_uris, post_logout_redirect_uris,
//                                          backchannel_logout_uri, backchannel_logout_session_required,
//                                          extra_clients); sessions and tokens survive
//   GET  /__test/keys                      the public JWKS as published and the signing kid
//   POST /__test/rotate                    {"keep_old": true, "sign_with_new": true}: a new key;
//                                          keep_old false drops every old key; sign_with_new
//                                          false publishes the new key last (pre-announced)
//   POST /__test/backchannel-logout        {"sub": ..., "sid": ..., "client_id": ...}: the real
//                                          Client#backchannelLogout(sub, sid); answers
//                                          {"ok", "status", "error"}
//   GET  /__test/deliveries                every outgoing fetch of the OP (back-channel logout
//                                          deliveries, also those an end-session triggers)
//   GET  /__test/jwks-requests             {"count"}: GET /jwks requests served since the last reset
//   POST /__test/jwks-mode                 {"mode": "ok"|"fail"|"hang"|"delay"|"garbage"|"huge",
//                                          "status": 503, "delay_ms": 500, "size": 2000000}
//   POST /__test/reset                     mode ok, counters and deliveries cleared (keys kept)
//   GET  /__test/interaction/<uid>         the login/consent "UI": logs in params.login_hint,
//                                          grants every requested scope, redirects on

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? process.env.OIDC_TEST_CONFIG ?? '{}');
const HOST = '127.0.0.1';
const ALG = config.alg ?? 'RS256';
const RESOURCE = config.resource ?? 'https://api.test';
const RESOURCE_SCOPE = config.resource_scope ?? 'api:read api:write';
const ACCESS_TOKEN_TTL = config.access_token_ttl ?? 600;
const ACCESS_TOKEN_SID = config.access_token_sid ?? true;
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];

const CONFIGURABLE = new Set([
  'redirect_uris', 'post_logout_redirect_uris', 'backchannel_logout_uri',
  'backchannel_logout_session_required', 'extra_clients',
]);

const log = (...args) => console.error('[test-op]', ...args);

// ---- keys -------------------------------------------------------------------------------

let keySerial = 0;

function generateKey() {
  keySerial += 1;
  let pair;
  switch (ALG) {
    case 'RS256':
    case 'PS256':
      pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      break;
    case 'ES256':
      pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      break;
    case 'EdDSA':
      pair = crypto.generateKeyPairSync('ed25519');
      break;
    default:
      throw new Error(`unsupported alg ${ALG}`);
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  const kid = `test-op-${keySerial}-${crypto.randomBytes(4).toString('hex')}`;
  return { ...jwk, kid, alg: ALG, use: 'sig' };
}

/** Private JWKs; the first one signs (oidc-provider signs with the first key that fits the alg). */
let keys = [generateKey()];

// ---- the provider (rebuilt on rotation; its storage, the memory adapter, is process-wide) ---

const state = {
  jwksRequests: 0,
  jwksMode: { mode: 'ok' },
  held: new Set(),
  deliveries: [],
};

function resourceServer() {
  return {
    scope: RESOURCE_SCOPE,
    audience: RESOURCE,
    accessTokenTTL: ACCESS_TOKEN_TTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: ALG } },
  };
}

function clients() {
  const main = {
    client_id: config.client_id ?? 'signout-test-client',
    client_secret: config.client_secret ?? 'signout-test-secret-0123456789abcdef',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: config.redirect_uris ?? ['http://127.0.0.1/callback'],
    post_logout_redirect_uris: config.post_logout_redirect_uris ?? [],
    id_token_signed_response_alg: ALG,
  };
  if (config.backchannel_logout_uri) {
    main.backchannel_logout_uri = config.backchannel_logout_uri;
    main.backchannel_logout_session_required = config.backchannel_logout_session_required ?? true;
  }
  return [main, ...(config.extra_clients ?? [])];
}

function build(issuer) {
  const provider = new Provider(issuer, {
    clients: clients(),
    jwks: { keys },
    cookies: { keys: COOKIE_KEYS },
    scopes: ['openid', 'offline_access', ...RESOURCE_SCOPE.split(' ')],
    features: {
      devInteractions: { enabled: false },
      backchannelLogout: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // the confirmation page is only the form; tests/oidc_provider.py submits it
        async logoutSource(ctx, form) {
          ctx.body = `<!DOCTYPE html><html><body>${form}</body></html>`;
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource(ctx, client, oneOf) {
          return oneOf ?? RESOURCE;
        },
        async useGrantedResource() {
          return true;
        },
        async getResourceServerInfo(ctx, indicator) {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return resourceServer();
        },
      },
    },
    interactions: {
      url: (ctx, interaction) => `/__test/interaction/${interaction.uid}`,
    },
    // Keycloak-like: access tokens from a login carry the session's sid (oidc-provider keeps
    // it on the token but leaves it out of JWT access tokens unless told)
    async extraTokenClaims(ctx, token) {
      return ACCESS_TOKEN_SID && token.sid ? { sid: token.sid } : undefined;
    },
    // TEST ONLY: oidc-provider's SSRF guard refuses loopback targets; the back-channel
    // receivers of the tests are on 127.0.0.1. Every outgoing fetch is recorded.
    async fetch(url, options) {
      delete options.dispatcher;
      const delivery = { url: String(url), method: options.method ?? 'GET', at: Date.now() / 1000 };
      state.deliveries.push(delivery);
      try {
        const response = await fetch(url, options);
        delivery.status = response.status;
        return response;
      } catch (err) {
        delivery.error = String(err?.cause ?? err);
        throw err;
      }
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.on('server_error', (ctx, err) => log('server_error', err));
  provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
    log('backchannel.error', client.clientId, accountId, sid, String(err));
  });
  return { provider, handle: provider.callback() };
}

let provider;
let handle;
let issuer;

// ---- the control API ------------------------------------------------------------------------

function send(res, status, body, headers = {}) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain' : 'application/json',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(data);
}

async function readJSON(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function publicJWKS() {
  return keys.map(({ d, p, q, dp, dq, qi, ...pub }) => pub);
}

function releaseHeld() {
  for (const res of state.held) res.socket?.destroy();
  state.held.clear();
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  if (prompt.name === 'login') {
    if (!params.login_hint) return send(res, 400, { error: 'login_hint (the sub to log in) is required' });
    return provider.interactionFinished(req, res, {
      login: { accountId: String(params.login_hint) },
    }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    if (missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    return provider.interactionFinished(req, res, {
      consent: { grantId: await grant.save() },
    }, { mergeWithLastSubmission: true });
  }
  return send(res, 501, { error: `prompt ${prompt.name} not implemented` });
}

async function control(req, res, path) {
  if (path.startsWith('/__test/interaction/') && req.method === 'GET') return interaction(req, res);
  if (path === '/__test/keys' && req.method === 'GET') {
    return send(res, 200, { keys: publicJWKS(), signing_kid: keys[0].kid });
  }
  if (path === '/__test/rotate' && req.method === 'POST') {
    const { keep_old: keepOld = true, sign_with_new: signWithNew = true } = await readJSON(req);
    const fresh = generateKey();
    const old = keepOld ? keys : [];
    keys = signWithNew ? [fresh, ...old] : [...old, fresh];
    ({ provider, handle } = build(issuer));
    return send(res, 200, { keys: publicJWKS(), signing_kid: keys[0].kid, new_kid: fresh.kid });
  }
  if (path === '/__test/configure' && req.method === 'POST') {
    const changes = await readJSON(req);
    const unknown = Object.keys(changes).filter((key) => !CONFIGURABLE.has(key));
    if (unknown.length) return send(res, 400, { error: `not configurable at run time: ${unknown.join(', ')}` });
    Object.assign(config, changes);
    ({ provider, handle } = build(issuer));
    return send(res, 200, { clients: clients().map(({ client_secret: _, ...metadata }) => metadata) });
  }
  if (path === '/__test/backchannel-logout' && req.method === 'POST') {
    const body = await readJSON(req);
    const client = await provider.Client.find(body.client_id ?? clients()[0].client_id);
    if (!client) return send(res, 404, { error: 'no such client' });
    if (!client.backchannelLogoutUri) return send(res, 409, { error: 'the client has no backchannel_logout_uri' });
    const before = state.deliveries.length;
    let ok = true;
    let error;
    try {
      // a JSON null would become a "sub": null claim: absent means absent
      await client.backchannelLogout(body.sub ?? undefined, body.sid ?? undefined);
    } catch (err) {
      ok = false;
      error = String(err?.message ?? err);
    }
    const delivery = state.deliveries.slice(before).at(-1);
    return send(res, 200, { ok, status: delivery?.status ?? null, error: error ?? delivery?.error ?? null });
  }
  if (path === '/__test/deliveries' && req.method === 'GET') return send(res, 200, { deliveries: state.deliveries });
  if (path === '/__test/jwks-requests' && req.method === 'GET') return send(res, 200, { count: state.jwksRequests });
  if (path === '/__test/jwks-mode' && req.method === 'POST') {
    const mode = await readJSON(req);
    if (!['ok', 'fail', 'hang', 'delay', 'garbage', 'huge'].includes(mode.mode)) {
      return send(res, 400, { error: `unknown mode ${mode.mode}` });
    }
    state.jwksMode = mode;
    if (mode.mode !== 'hang') releaseHeld();
    return send(res, 200, state.jwksMode);
  }
  if (path === '/__test/reset' && req.method === 'POST') {
    state.jwksMode = { mode: 'ok' };
    releaseHeld();
    state.jwksRequests = 0;
    state.deliveries = [];
    return send(res, 200, { ok: true });
  }
  return send(res, 404, { error: 'no such control route' });
}

// GET /jwks passes through here: counted, and broken on demand
async function jwks(req, res) {
  state.jwksRequests += 1;
  const { mode, status = 503, delay_ms: delayMs = 500, size = 2_000_000 } = state.jwksMode;
  switch (mode) {
    case 'fail':
      return send(res, status, { error: 'temporarily_unavailable' }, { 'retry-after': '1' });
    case 'hang':
      state.held.add(res);
      res.on('close', () => state.held.delete(res));
      return undefined;
    case 'delay':
      await new Promise((resolve) => { setTimeout(resolve, delayMs); });
      break;
    case 'garbage':
      return send(res, 200, '<html><body>not a JWK Set</body></html>', { 'content-type': 'text/html' });
    case 'huge': {
      const [first] = publicJWKS();
      const many = [];
      let length = 0;
      for (let i = 0; length < size; i += 1) {
        const key = { ...first, kid: `padding-${i}` };
        many.push(key);
        length += JSON.stringify(key).length + 1;
      }
      return send(res, 200, { keys: many }, { 'content-type': 'application/jwk-set+json; charset=utf-8' });
    }
    default:
  }
  return handle(req, res);
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  let handled;
  if (path.startsWith('/__test/')) handled = control(req, res, path);
  else if (path === '/jwks' && (req.method === 'GET' || req.method === 'HEAD')) handled = jwks(req, res);
  else handled = handle(req, res);
  Promise.resolve(handled).catch((err) => {
    log('control error', err);
    if (!res.headersSent) send(res, 500, { error: String(err?.message ?? err) });
  });
});

const requestedPort = Number(config.port ?? process.env.OIDC_TEST_PORT ?? 0);
server.listen(requestedPort, HOST, () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;
  ({ provider, handle } = build(issuer));
  process.stdout.write(`ready ${port} ${issuer}\n`);
});

function shutdown() {
  releaseHeld();
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// the parent (pytest) died or closed our stdin: go too, never an orphan
process.stdin.on('end', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();
