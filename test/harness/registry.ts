import { createHash, randomBytes, randomUUID, sign, X509Certificate, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { freePort, requireTool, runOk, startProcess, StopWaiting, track, untrack, waitFor, type Proc } from './proc.js';
import { makeServerCert, makeSigningCert, makeTestCa, writeCertDir, type CertPair, type TestCa } from './tls.js';

const REGISTRY_BIN = '/usr/bin/docker-registry';
const HTPASSWD_BIN = '/usr/bin/htpasswd';
const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const TOKEN_SERVICE = 'airlock-test-registry';
const TOKEN_ISSUER = 'airlock-test-token-issuer';
const SETTLE_MARKER = 'airlock-test-settle';

/** RegistryAuth selects how the upstream registry authenticates clients. */
export type RegistryAuth = 'token' | 'htpasswd' | 'none';

/** TokenScope is one parsed `type:name:actions` scope of a token request. */
export interface TokenScope {
  type: string;
  name: string;
  actions: string[];
}

/** TokenGrant decides which actions a token carries for a requested scope (user is undefined when anonymous). */
export type TokenGrant = (scope: TokenScope, user: string | undefined) => string[];

/** TokenRequestRecord is one request the token server answered. */
export interface TokenRequestRecord {
  method: string;
  service: string;
  scopes: TokenScope[];
  user: string | undefined;
  status: number;
}

/** RegistryOptions configures startRegistry. */
export interface RegistryOptions {
  /** dir holds the registry's config, PKI, data and logs; it is created if missing. */
  dir: string;
  /** tls serves https with a server certificate from the CA (default true). */
  tls?: boolean;
  /** auth is 'none' by default. */
  auth?: RegistryAuth;
  /** username/password: required by the token server when set; htpasswd auth always has a user. */
  username?: string;
  password?: string;
  /** tokenGrant overrides the default grant (all requested actions). */
  tokenGrant?: TokenGrant;
  /** tokenTtlSeconds is the token lifetime (default 300). */
  tokenTtlSeconds?: number;
  /** ca reuses an existing CA for the server and token certificates instead of making one in dir. */
  ca?: TestCa;
  /** proxyRemoteUrl runs the registry as a pull-through cache of that remote, which must already answer (it is pinged at start). */
  proxyRemoteUrl?: string;
  proxyUsername?: string;
  proxyPassword?: string;
  /** trustCaPaths are extra CAs the registry process trusts via SSL_CERT_FILE (for example the proxied remote's CA). */
  trustCaPaths?: string[];
  /** logLevel is the registry's log level (default 'info'). */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  /** prefix serves the API under a path (`http.prefix`), as `<prefix>/v2/`. */
  prefix?: string;
  /** dataDir shares another registry's storage (default dir/data). */
  dataDir?: string;
  /** accessLog turns on the registry's access log (off by default), so requests() lists what it was asked. */
  accessLog?: boolean;
}

/** AccessLogEntry is one request in a registry's access log. */
export interface AccessLogEntry {
  method: string;
  /** path is the request target as sent, query included. */
  path: string;
  status: number;
}

/** TokenServer is the in-process token issuer for a registry with `auth: token`. */
export interface TokenServer {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** tokenRequests counts every request to the token endpoint, refused ones included. */
  readonly tokenRequests: number;
  readonly requests: readonly TokenRequestRecord[];
  reset(): void;
  stop(): Promise<void>;
}

/** RegistryEndpoint is what the harness's HTTP helpers need to talk to a registry (upstream or airlock). */
export interface RegistryEndpoint {
  url: string;
  caPath?: string;
  username?: string;
  password?: string;
  clientCertPath?: string;
  clientKeyPath?: string;
}

/** Registry is a running CNCF registry (docker-registry 2.8) used as an upstream. */
export interface Registry extends RegistryEndpoint {
  url: string;
  host: string;
  port: number;
  caPath: string;
  ca: TestCa;
  /** certDir holds `ca.crt`, for skopeo's --src-cert-dir/--dest-cert-dir. */
  certDir: string;
  dir: string;
  dataDir: string;
  configPath: string;
  tokenServer?: TokenServer;
  logs(): string;
  /**
   * requests lists the requests the registry answered, from its access log across restarts (empty unless started
   * with accessLog). A request is logged once answered: call settle() first to be sure every answered request is listed.
   */
  requests(): AccessLogEntry[];
  /** settle sends a marker request and waits until the access log lists it (needs accessLog). */
  settle(): Promise<void>;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

/** HttpResult is a buffered HTTP response. */
export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** RequestOptions configures registryRequest. */
export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  timeoutMs?: number;
  /** answerChallenge runs the Bearer/Basic flow on a 401 (default true); false returns the 401 itself. */
  answerChallenge?: boolean;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function parseScope(raw: string): TokenScope | undefined {
  const first = raw.indexOf(':');
  const last = raw.lastIndexOf(':');
  if (first < 0 || last <= first) {
    return undefined;
  }
  return {
    type: raw.slice(0, first),
    name: raw.slice(first + 1, last),
    actions: raw.slice(last + 1).split(',').filter((a) => a !== ''),
  };
}

function safeEqual(a: string, b: string): boolean {
  const x = createHash('sha256').update(a).digest();
  const y = createHash('sha256').update(b).digest();
  return timingSafeEqual(x, y);
}

function parseBasic(header: string | undefined): { user: string; pass: string } | undefined {
  if (header === undefined || !/^basic /i.test(header)) {
    return undefined;
  }
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString();
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), pass: decoded.slice(colon + 1) };
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      parts.push(b);
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

interface TokenServerOptions {
  dir: string;
  ca: TestCa;
  username?: string;
  password?: string;
  grant?: TokenGrant;
  ttlSeconds: number;
}

async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const tls: CertPair = await makeServerCert(opts.ca, opts.dir, ['127.0.0.1', 'localhost'], 'token-server');
  const signing = await makeSigningCert(opts.ca, opts.dir, 'airlock-test-token-signer', 'token-signing');
  const signingKey = fs.readFileSync(signing.keyPath, 'utf8');
  const x5c = new X509Certificate(fs.readFileSync(signing.certPath)).raw.toString('base64');
  const grant: TokenGrant = opts.grant ?? ((scope) => scope.actions);
  const requests: TokenRequestRecord[] = [];
  let count = 0;

  const issue = (scopes: TokenScope[], user: string | undefined): Record<string, unknown> => {
    const now = Math.floor(Date.now() / 1000);
    const access = scopes
      .map((s) => ({ type: s.type, name: s.name, actions: grant(s, user) }))
      .filter((a) => a.actions.length > 0);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [x5c] };
    const claims = {
      iss: TOKEN_ISSUER,
      sub: user ?? '',
      aud: TOKEN_SERVICE,
      exp: now + opts.ttlSeconds,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const token = `${input}.${b64url(sign('sha256', Buffer.from(input), signingKey))}`;
    return { token, access_token: token, expires_in: opts.ttlSeconds, issued_at: new Date(now * 1000).toISOString() };
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    count += 1;
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const record: TokenRequestRecord = { method: req.method ?? '', service: '', scopes: [], user: undefined, status: 0 };
    requests.push(record);
    const reply = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    if (url.pathname !== '/token' || (req.method !== 'GET' && req.method !== 'POST')) {
      reply(404, { errors: [{ code: 'NOT_FOUND', message: 'no such endpoint' }] });
      return;
    }
    let params = url.searchParams;
    let basic = parseBasic(req.headers.authorization);
    if (req.method === 'POST') {
      params = new URLSearchParams((await readBody(req, 64 * 1024)).toString());
      const user = params.get('username');
      if (user !== null) {
        basic = { user, pass: params.get('password') ?? '' };
      }
    }
    record.service = params.get('service') ?? '';
    record.scopes = params
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .map(parseScope)
      .filter((s): s is TokenScope => s !== undefined);
    if (opts.username !== undefined) {
      const ok = basic !== undefined && safeEqual(basic.user, opts.username) && safeEqual(basic.pass, opts.password ?? '');
      if (!ok) {
        reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad or missing credentials' }] }, {
          'www-authenticate': 'Basic realm="airlock-test-token"',
        });
        return;
      }
      record.user = basic?.user;
    }
    reply(200, issue(record.scopes, record.user));
  };

  const server = https.createServer({ cert: fs.readFileSync(tls.certPath), key: fs.readFileSync(tls.keyPath) }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(err instanceof Error ? err.message : 'error');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  const tokenServer: TokenServer = {
    realm: `https://127.0.0.1:${port}/token`,
    service: TOKEN_SERVICE,
    issuer: TOKEN_ISSUER,
    get tokenRequests(): number {
      return count;
    },
    requests,
    reset(): void {
      count = 0;
      requests.length = 0;
    },
    async stop(): Promise<void> {
      untrack(tokenServer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return track(tokenServer);
}

function httpError(what: string, res: HttpResult): Error {
  return new Error(`${what}: HTTP ${res.status} ${res.body.toString().slice(0, 500)}`);
}

function rawRequest(target: URL, ep: RegistryEndpoint, opts: RequestOptions): Promise<HttpResult> {
  const body = opts.body === undefined ? undefined : Buffer.from(opts.body);
  const headers: Record<string, string> = { ...opts.headers };
  if (body !== undefined) {
    headers['content-length'] = String(body.length);
  }
  const tlsOptions: https.RequestOptions =
    target.protocol === 'https:'
      ? {
          ca: ep.caPath === undefined ? undefined : fs.readFileSync(ep.caPath),
          cert: ep.clientCertPath === undefined ? undefined : fs.readFileSync(ep.clientCertPath),
          key: ep.clientKeyPath === undefined ? undefined : fs.readFileSync(ep.clientKeyPath),
        }
      : {};
  const lib = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      target,
      { method: opts.method ?? 'GET', headers, agent: false, timeout: opts.timeoutMs ?? 30_000, ...tlsOptions },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request to ${target.href} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  const re = /([a-zA-Z_]+)="([^"]*)"/g;
  for (let m = re.exec(header); m !== null; m = re.exec(header)) {
    const key = m[1];
    const value = m[2];
    if (key !== undefined && value !== undefined) {
      params[key] = value;
    }
  }
  return { scheme, params };
}

function basicHeader(ep: RegistryEndpoint): Record<string, string> {
  return ep.username === undefined
    ? {}
    : { authorization: `Basic ${Buffer.from(`${ep.username}:${ep.password ?? ''}`).toString('base64')}` };
}

/** fetchToken runs the token flow for a Bearer challenge and returns the token. */
export async function fetchToken(ep: RegistryEndpoint, challenge: string): Promise<string> {
  const { params } = parseChallenge(challenge);
  if (params.realm === undefined) {
    throw new Error(`Bearer challenge without realm: ${challenge}`);
  }
  const realm = new URL(params.realm);
  if (params.service !== undefined) {
    realm.searchParams.set('service', params.service);
  }
  if (params.scope !== undefined) {
    for (const s of params.scope.split(' ')) {
      realm.searchParams.append('scope', s);
    }
  }
  const res = await rawRequest(realm, ep, { headers: basicHeader(ep) });
  if (res.status !== 200) {
    throw httpError(`token request to ${realm.origin}${realm.pathname}`, res);
  }
  const parsed = JSON.parse(res.body.toString()) as { token?: string; access_token?: string };
  const token = parsed.token ?? parsed.access_token;
  if (token === undefined) {
    throw new Error('token response has neither token nor access_token');
  }
  return token;
}

/** registryRequest sends one request to a registry, answering a Bearer or Basic challenge once. */
export async function registryRequest(ep: RegistryEndpoint, pathname: string, opts: RequestOptions = {}): Promise<HttpResult> {
  const target = new URL(pathname, ep.url);
  const first = await rawRequest(target, ep, opts);
  const challenge = first.headers['www-authenticate'];
  if (first.status !== 401 || typeof challenge !== 'string' || opts.answerChallenge === false) {
    return first;
  }
  const { scheme } = parseChallenge(challenge);
  let authorization: string;
  if (scheme === 'bearer') {
    authorization = `Bearer ${await fetchToken(ep, challenge)}`;
  } else if (scheme === 'basic' && ep.username !== undefined) {
    authorization = basicHeader(ep).authorization ?? '';
  } else {
    return first;
  }
  return rawRequest(target, ep, { ...opts, headers: { ...opts.headers, authorization } });
}

function writeTrustBundle(file: string, caPaths: readonly string[]): void {
  const parts: string[] = [];
  if (fs.existsSync(SYSTEM_CA_BUNDLE)) {
    parts.push(fs.readFileSync(SYSTEM_CA_BUNDLE, 'utf8').trim());
  }
  for (const p of caPaths) {
    parts.push(fs.readFileSync(p, 'utf8').trim());
  }
  fs.writeFileSync(file, `${parts.join('\n')}\n`);
}

/** startRegistry starts docker-registry 2.8 (`serve config.yml`) and waits until `/v2/` answers. */
export async function startRegistry(opts: RegistryOptions): Promise<Registry> {
  requireTool(REGISTRY_BIN);
  const useTls = opts.tls ?? true;
  const auth = opts.auth ?? 'none';
  const dir = path.resolve(opts.dir);
  const dataDir = opts.dataDir ?? path.join(dir, 'data');
  fs.mkdirSync(dataDir, { recursive: true });
  const ca = opts.ca ?? (await makeTestCa(path.join(dir, 'pki')));
  const certDir = writeCertDir(path.join(dir, 'certs.d'), { caPaths: [ca.certPath] });

  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: opts.logLevel ?? 'info', formatter: 'text', accesslog: { disabled: opts.accessLog !== true } },
    storage: {
      filesystem: { rootdirectory: dataDir },
      delete: { enabled: true },
      cache: { blobdescriptor: 'inmemory' },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: '', secret: randomBytes(16).toString('hex') } as Record<string, unknown>,
    health: { storagedriver: { enabled: false } },
  };
  const httpConfig = config.http as Record<string, unknown>;
  if (opts.prefix !== undefined) httpConfig.prefix = opts.prefix;
  if (useTls) {
    const server = await makeServerCert(ca, path.join(dir, 'tls'));
    httpConfig.tls = { certificate: server.certPath, key: server.keyPath };
  }

  let username = opts.username;
  let password = opts.password;
  let tokenServer: TokenServer | undefined;
  if (auth === 'token') {
    tokenServer = await startTokenServer({
      dir: path.join(dir, 'token'),
      ca,
      username,
      password,
      grant: opts.tokenGrant,
      ttlSeconds: opts.tokenTtlSeconds ?? 300,
    });
    config.auth = {
      token: {
        realm: tokenServer.realm,
        service: tokenServer.service,
        issuer: tokenServer.issuer,
        rootcertbundle: ca.certPath,
      },
    };
  } else if (auth === 'htpasswd') {
    if (!fs.existsSync(HTPASSWD_BIN)) {
      throw new Error(`htpasswd auth needs ${HTPASSWD_BIN} (apache2-utils) for bcrypt hashes; run scripts/test-deps.sh`);
    }
    username ??= 'airlock-test';
    password ??= randomBytes(12).toString('hex');
    const line = await runOk(HTPASSWD_BIN, ['-Bbn', username, password]);
    const htpasswdPath = path.join(dir, 'htpasswd');
    fs.writeFileSync(htpasswdPath, `${line.stdout.trim()}\n`);
    config.auth = { htpasswd: { realm: 'airlock-test-registry', path: htpasswdPath } };
  }

  const env: NodeJS.ProcessEnv = { ...process.env };
  if (opts.proxyRemoteUrl !== undefined) {
    config.proxy = {
      remoteurl: opts.proxyRemoteUrl,
      ...(opts.proxyUsername === undefined ? {} : { username: opts.proxyUsername, password: opts.proxyPassword ?? '' }),
    };
    const bundle = path.join(dir, 'trust-bundle.pem');
    writeTrustBundle(bundle, [ca.certPath, ...(opts.trustCaPaths ?? [])]);
    env.SSL_CERT_FILE = bundle;
  }

  const configPath = path.join(dir, 'config.yml');
  const scheme = useTls ? 'https' : 'http';
  // The access log (Apache combined format, on stdout) is read back from the process log file, which every start of
  // this registry appends to; only what this registry wrote counts.
  const logFile = path.join(dir, 'registry.log');
  const logStart = fs.existsSync(logFile) ? fs.statSync(logFile).size : 0;
  const readAccessLog = (): AccessLogEntry[] => {
    if (!fs.existsSync(logFile)) {
      return [];
    }
    const lines = fs.readFileSync(logFile).subarray(logStart).toString().split('\n');
    lines.pop(); // the last piece has no newline yet: a line still being written, or nothing
    const entries: AccessLogEntry[] = [];
    for (const line of lines) {
      const m = /"([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) /.exec(line);
      if (m?.[1] !== undefined && m[2] !== undefined && m[3] !== undefined) {
        entries.push({ method: m[1], path: m[2], status: Number(m[3]) });
      }
    }
    return entries;
  };
  let port = 0;
  let proc: Proc | undefined;

  const launch = async (): Promise<void> => {
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt += 1) {
      if (port === 0 || attempt > 0) {
        port = await freePort();
      }
      httpConfig.addr = `127.0.0.1:${port}`;
      fs.writeFileSync(configPath, YAML.stringify(config));
      const started = startProcess(REGISTRY_BIN, ['serve', configPath], { name: 'registry', env, cwd: dir, logDir: dir });
      // The Registry object stops its own process; launch stops it itself when it fails.
      untrack(started);
      proc = started;
      const endpoint: RegistryEndpoint = { url: `${scheme}://127.0.0.1:${port}`, caPath: ca.certPath };
      try {
        await waitFor(
          async () => {
            if (!started.running()) {
              throw new StopWaiting(`docker-registry exited before answering:\n${started.output().slice(-2000)}`);
            }
            const res = await rawRequest(new URL(`${opts.prefix ?? ''}/v2/`, endpoint.url), endpoint, { timeoutMs: 1000 });
            return res.status === 200 || res.status === 401;
          },
          { timeoutMs: 15_000, what: `docker-registry on port ${port} to answer /v2/` },
        );
        return;
      } catch (err) {
        lastError = err;
        await started.stop();
        if (!/address already in use/.test(started.output())) {
          break;
        }
      }
    }
    throw lastError;
  };

  try {
    await launch();
  } catch (err) {
    await tokenServer?.stop();
    throw err;
  }
  const registry: Registry = {
    get url(): string {
      return `${scheme}://127.0.0.1:${port}`;
    },
    get host(): string {
      return `127.0.0.1:${port}`;
    },
    get port(): number {
      return port;
    },
    caPath: ca.certPath,
    ca,
    certDir,
    dir,
    dataDir,
    configPath,
    username,
    password,
    tokenServer,
    logs: () => proc?.output() ?? '',
    requests: () => readAccessLog().filter((e) => !e.path.includes(SETTLE_MARKER)),
    async settle(): Promise<void> {
      if (opts.accessLog !== true) {
        throw new Error('settle() needs a registry started with accessLog: true');
      }
      const marker = `${opts.prefix ?? ''}/v2/?${SETTLE_MARKER}=${randomUUID()}`;
      await rawRequest(new URL(marker, registry.url), { url: registry.url, caPath: ca.certPath }, { timeoutMs: 5000 });
      await waitFor(() => readAccessLog().some((e) => e.path === marker), { timeoutMs: 5000, what: 'the registry to log a marker request' });
    },
    async stop(): Promise<void> {
      untrack(registry);
      await proc?.stop();
      await tokenServer?.stop();
    },
    async restart(): Promise<void> {
      await proc?.stop();
      await launch();
    },
  };
  // The Registry object stops its token server, so that needs no separate tracking.
  if (tokenServer !== undefined) {
    untrack(tokenServer);
  }
  return track(registry);
}

/** expectOk throws with the status and body unless the response is 2xx. */
export function expectOk(what: string, res: HttpResult): HttpResult {
  if (res.status < 200 || res.status > 299) {
    throw httpError(what, res);
  }
  return res;
}
