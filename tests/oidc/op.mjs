// A real OpenID Connect provider on loopback for Corolla's integration tests.
//
// Configuration comes from the environment (tests/oidc_provider.py sets it):
//   PORT         port on 127.0.0.1; 0 picks a free one (give the old port on restart)
//   READY_FILE   where to write {"issuer", "port", "resource", "audience", "pid"} once listening
//   JWKS_FILE    {"keys": [private JWKs]}; the first key signs every token
//   AUDIENCE     `aud` of the JWT access tokens (default corolla-exec)
//   RESOURCE     the resource indicator that maps to AUDIENCE (default urn:corolla:exec)
//   AT_TTL       access-token lifetime in seconds (default 3600)
//   POLL_INTERVAL  `interval` (seconds) of device authorization responses (default 1; the
//                  library sends none, which per RFC 8628 means 5)
//   ROTATE_REFRESH_TOKEN  "0" keeps a refresh token valid across refreshes (default "1")
//   EXIT_ON_STDIN_EOF     "1": exit when stdin closes, so the provider dies with its parent
//
// Nothing here is secret: the keys, the cookie key and the client secret are test material.

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// Test users: login -> claims. Any other login signs in too, with no groups.
const USERS = {
  alice: { email: 'alice@example.org', groups: ['researcher'] },
  bob: { email: 'bob@example.org', groups: ['researcher'] },
  carol: { email: 'carol@example.org', groups: ['admin'] },
  dave: { email: 'dave@example.org', groups: ['viewer'] },
  erin: { email: 'erin@example.org', groups: [] },
};

const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const SCOPES = ['openid', 'offline_access', 'profile', 'email', 'groups'];

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

function positiveInt(name, fallback) {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer, got ${process.env[name]}`);
  }
  return value;
}

const config = {
  port: Number(process.env.PORT ?? 0),
  readyFile: required('READY_FILE'),
  jwks: JSON.parse(readFileSync(required('JWKS_FILE'), 'utf8')),
  audience: process.env.AUDIENCE || 'corolla-exec',
  resource: process.env.RESOURCE || 'urn:corolla:exec',
  accessTokenTTL: positiveInt('AT_TTL', 3600),
  pollInterval: positiveInt('POLL_INTERVAL', 1),
  rotateRefreshToken: process.env.ROTATE_REFRESH_TOKEN !== '0',
};

if (!Array.isArray(config.jwks.keys) || config.jwks.keys.length === 0) {
  throw new Error('JWKS_FILE must hold {"keys": [at least one private JWK]}');
}
const signingKey = config.jwks.keys[0];
if (!signingKey.kid || !signingKey.alg) {
  throw new Error('the signing key (the first in JWKS_FILE) needs a kid and an alg');
}

function claimsOf(accountId) {
  const user = USERS[accountId];
  return {
    sub: accountId,
    preferred_username: accountId,
    email: user?.email ?? `${accountId}@example.org`,
    groups: [...(user?.groups ?? [])],
  };
}

function providerConfiguration() {
  return {
    clients: [
      {
        // The flwr CLI: a public client on the device authorization grant.
        client_id: 'flwr-cli',
        client_name: 'Flower CLI',
        token_endpoint_auth_method: 'none',
        grant_types: [DEVICE_CODE, 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      {
        // A confidential client, e.g. for the SuperLink to introspect or get its own tokens.
        client_id: 'superlink',
        client_secret: 'superlink-test-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks: config.jwks,
    cookies: { keys: ['corolla-oidc-test-cookie-key'] },
    clockTolerance: 0,
    // The ID token carries the claims of the granted scopes (profile, email, groups): the
    // userinfo endpoint refuses the access tokens, whose audience is the resource server.
    conformIdTokenClaims: false,
    scopes: SCOPES,
    claims: {
      openid: ['sub'],
      profile: ['preferred_username'],
      email: ['email'],
      groups: ['groups'],
    },
    clientDefaults: {
      id_token_signed_response_alg: signingKey.alg,
    },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => claimsOf(sub),
    }),
    extraTokenClaims: async (_ctx, token) => (
      token.accountId ? { groups: claimsOf(token.accountId).groups } : undefined
    ),
    formats: {
      customizers: {
        // The library sets iat and exp but not nbf; validators may require it.
        jwt: async (_ctx, _token, jwt) => {
          jwt.payload.nbf = jwt.payload.iat;
        },
      },
    },
    // Always a refresh token for clients allowed the grant, whatever the consent said.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => config.rotateRefreshToken,
    ttl: {
      AccessToken: config.accessTokenTTL,
      ClientCredentials: config.accessTokenTTL,
      DeviceCode: 600,
      Grant: 86400,
      IdToken: 3600,
      Interaction: 600,
      RefreshToken: 86400,
      Session: 86400,
    },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => config.resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (resourceIndicator !== config.resource) {
            throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
          }
          return {
            scope: SCOPES.join(' '),
            audience: config.audience,
            accessTokenTTL: config.accessTokenTTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: signingKey.alg, kid: signingKey.kid } },
          };
        },
      },
    },
  };
}

function writeReadyFile(data) {
  const partial = `${config.readyFile}.partial`;
  writeFileSync(partial, JSON.stringify(data));
  renameSync(partial, config.readyFile);
}

const server = createServer();

server.on('error', (err) => {
  console.error(`oidc test provider: ${err.message}`);
  process.exit(1);
});

server.listen(config.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const op = new Provider(issuer, providerConfiguration());
  op.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/device/auth' && ctx.status === 200 && ctx.body?.device_code) {
      ctx.body = { ...ctx.body, interval: config.pollInterval };
    }
  });
  op.on('server_error', (_ctx, err) => console.error('oidc test provider server_error:', err));
  server.on('request', op.callback());
  writeReadyFile({
    issuer, port, resource: config.resource, audience: config.audience, pid: process.pid,
  });
  console.error(`oidc test provider listening at ${issuer}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
}
