// node-oidc-provider as the peer of bench/peer_ab.py (not a test, not part of the product).
//
// bench/peer_ab.py installs oidc-provider into bench/.node-peer/ (git-ignored), copies this file
// there (so that `import 'oidc-provider'` resolves) and starts it with one argument: the path of
// a JSON file written by peer_ab.py:
//
//   { "port", "issuer", "workers", "client_id", "client_jwk" (public), "resource",
//     "signing_keys" (private JWKs: one ES256, one RSA for PS256), "at_alg" ("ES256"|"PS256"),
//     "clock_tolerance", "assertion_max_lifetime", "store" ("map"|"lru") }
//
// The configuration, and why each choice (see also peer_ab.py's docstring):
// - cluster: `workers` processes share the port (node's cluster module, round-robin accept in
//   the primary), the same process count as our gunicorn workers. NODE_ENV=production.
// - client credentials grant only; one client, token_endpoint_auth_method private_key_jwt,
//   token_endpoint_auth_signing_alg ES256, its public key the same as our registry's.
// - resource indicators (RFC 8707): exactly one resource server, `resource`, scope "read write",
//   access tokens in the JWT format (RFC 9068, typ at+jwt) signed with `at_alg` by a software
//   key of the provider's keystore, 300 s lifetime (ours: OAUTH_HSM_ACCESS_TOKEN_LIFETIME 300).
// - Client assertions are checked as strictly as the provider allows, to match our checks:
//   signature (the client's key, alg pinned to ES256), iss = client_id, aud accepted by the
//   provider (issuer, token endpoint or this endpoint URL) and, added here, *every* aud value
//   accepted (ours: the fapi2 policy), sub = client_id (RFC 7523 §3), exp required and at most
//   `assertion_max_lifetime` + tolerance ahead, iat/nbf not in the future, jti required, a typ
//   naming another kind of JWT refused (RFC 8725 §3.11), and jti replay detection.
// - Replay store: the provider's ReplayDetection model on an in-memory adapter. The provider's
//   own MemoryAdapter is an LRU of 1,000 entries, so under load it forgets a jti within a
//   fraction of a second; "map" (the default) is the same adapter contract on a Map that keeps
//   every entry until it expires, so a replayed assertion is refused for its whole lifetime, as
//   in our Redis store. Either way the store is per worker process: a replay sent to the other
//   worker is not detected (ours shares one Redis), which favours the peer slightly.
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FOREIGN_TYPS = new Set(['at+jwt', 'dpop+jwt', 'oauth-authz-req+jwt', 'token-introspection+jwt',
  'logout+jwt', 'secevent+jwt', 'jwt-bearer+jwt']);

// The adapter contract (lib/adapters/memory_adapter.js) on a Map with expiry: nothing is evicted
// before it expires. Only what the client credentials grant touches is stored (ReplayDetection;
// JWT-format access tokens are not stored by the provider).
class MapAdapter {
  static store = new Map();

  static sweep() {
    const now = Date.now();
    for (const [k, v] of MapAdapter.store) if (v.expiresAt <= now) MapAdapter.store.delete(k);
  }

  constructor(name) { this.name = name; }

  key(id) { return `${this.name}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    MapAdapter.store.set(this.key(id), { payload, expiresAt });
  }

  async find(id) {
    const entry = MapAdapter.store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      MapAdapter.store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUserCode() { return undefined; }

  async findByUid() { return undefined; }

  async consume(id) {
    const entry = MapAdapter.store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { MapAdapter.store.delete(this.key(id)); }

  async revokeByGrantId() {}
}

async function serve() {
  const { default: Provider, errors } = await import('oidc-provider');
  const tolerance = config.clock_tolerance;

  const provider = new Provider(config.issuer, {
    ...(config.store === 'map' ? { adapter: MapAdapter } : {}),
    clients: [{
      client_id: config.client_id,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [config.client_jwk] },
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'read write',
      id_token_signed_response_alg: 'ES256', // never used (no ID tokens); the default RS256 has no key
    }],
    jwks: { keys: config.signing_keys },
    scopes: ['read', 'write'],
    clockTolerance: tolerance,
    cookies: { keys: ['peer-ab-cookie-key-not-used-by-client-credentials'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.resource,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (resourceIndicator !== config.resource) throw new errors.InvalidTarget();
          return {
            scope: 'read write',
            audience: config.resource,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: config.at_alg } },
          };
        },
      },
    },
    enabledJWA: {
      clientAuthSigningAlgValues: ['ES256', 'PS256'],
    },
    // Runs after the provider's own checks and the signature, before the replay check.
    async assertJwtClientAuthClaimsAndHeader(ctx, claims, header, client) {
      const now = Math.floor(Date.now() / 1000);
      const accepted = ctx.oidc.clientJwtAuthExpectedAudience();
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (!aud.every((v) => accepted.has(v))) throw new errors.InvalidClientAuth('every aud must be accepted');
      if (claims.sub !== client.clientId) throw new errors.InvalidClientAuth('sub must be the client_id');
      if (typeof claims.exp !== 'number' || claims.exp > now + config.assertion_max_lifetime + tolerance) {
        throw new errors.InvalidClientAuth('exp too far in the future');
      }
      for (const name of ['iat', 'nbf']) {
        if (claims[name] !== undefined && (typeof claims[name] !== 'number' || claims[name] > now + tolerance)) {
          throw new errors.InvalidClientAuth(`${name} in the future`);
        }
      }
      if (typeof claims.jti !== 'string' || !claims.jti) throw new errors.InvalidClientAuth('jti missing');
      if (typeof header.typ === 'string' && FOREIGN_TYPS.has(header.typ.toLowerCase().replace(/^application\//, ''))) {
        throw new errors.InvalidClientAuth('typ names another kind of JWT');
      }
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));

  if (config.store === 'map') setInterval(MapAdapter.sweep, 5000).unref();
  const server = provider.listen(config.port, '127.0.0.1');
  server.keepAliveTimeout = 5000; // gunicorn --keep-alive 5 (the default is 5 s as well)
  process.on('SIGTERM', () => {
    server.close();
    setTimeout(() => process.exit(0), 200);
  });
}

if (cluster.isPrimary && config.workers > 1) {
  for (let i = 0; i < config.workers; i += 1) cluster.fork();
  let shuttingDown = false;
  cluster.on('exit', (worker, code, signal) => {
    if (!shuttingDown) console.error(`worker ${worker.process.pid} exited (${code ?? signal})`);
  });
  const stop = () => {
    shuttingDown = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 500);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  await serve();
}
