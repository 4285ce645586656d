// Upstream is the client for one configured registry: keep-alive connections, token and basic auth,
// redirects without credentials across hosts, timeouts and a circuit breaker.
import fs from 'node:fs';
import tls from 'node:tls';
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher, request } from 'undici';
import type { IncomingHttpHeaders } from 'undici/types/header.js';
import type { UpstreamConfig } from '../config.js';
import { RegistryError } from '../errors.js';
import { Breaker } from './breaker.js';
import { parseChallenge, schemeAllowed, TokenCache } from './auth.js';
import { addressKind, foreignTargetProblem, guardedLookup, upstreamIsLocal } from './egress.js';

// UpstreamResponse is an upstream's answer; the caller must consume or destroy body.
export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable;
}

// UpstreamHooks report each exchange to metrics and the audit log.
export interface UpstreamHooks {
  exchange(upstream: string, ms: number, outcome: ExchangeOutcome): void;
  breaker(upstream: string, state: string): void;
}

// ExchangeOutcome is how an exchange with an upstream ended, as the upstream error metric counts it.
export type ExchangeOutcome = 'ok' | 'http_error' | 'auth_error' | 'rate_limited' | 'network_error';

// outcomeOf names an upstream's answer for the metrics: a refusal of airlock's credentials (an expired or rotated
// password) and rate limiting are errors an operator must see, though neither says the upstream is down. Without
// credentials, a 401 is the answer to a repository that does not exist or is private: the client's mistake.
function outcomeOf(status: number, credentialed: boolean): ExchangeOutcome {
  if (status === 401 || status === 403) return credentialed ? 'auth_error' : 'ok';
  if (status === 429) return 'rate_limited';
  return status >= 500 ? 'http_error' : 'ok';
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
// DOWN are the answers that say an upstream (or its token service) itself is down; only they count against the breaker.
const DOWN = new Set([502, 503, 504]);
const MAX_REDIRECTS = 5;
// TOKEN_BYTES bounds a token service's answer (a token is a few KiB).
const TOKEN_BYTES = 64 << 10;
const USER_AGENT = 'airlock/0.1 (registry mirror)';

// header reads one value of an upstream response header.
export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

// UpstreamDown is a token service's answer that it is down: it counts against the breaker as a registry's own 502-504.
class UpstreamDown extends RegistryError {}

// Upstream talks to one registry.
export class Upstream {
  readonly name: string;
  readonly origin: string;
  // base is the URL /v2/... paths go under: the origin and the path the configuration gives, if any (a registry served
  // under a prefix, as Artifactory serves one).
  readonly base: string;
  readonly breaker: Breaker;
  // Blob downloads have connections of their own, as many as there are downloads (as Go's registry client has): a
  // manifest or token request must never queue behind downloads of large layers, each holding its connection for as
  // long as its body takes, nor a download behind others.
  private readonly agent: Agent;
  private readonly blobAgent: Agent;
  // Other origins (blob storage an upstream redirects to, a token service on another host) have connections of their
  // own, made only to addresses egress.ts allows.
  private readonly foreignAgent: Agent;
  // local is whether the upstream itself is on this host, found out once, when first needed.
  private local: Promise<boolean> | null = null;
  private readonly url: URL;
  // answerMs bounds the wait for an answer's headers from the call on, time queued for a connection included: undici
  // starts its headers timeout only once a request has a connection, and requests queued behind ones to an upstream
  // that accepts connections but never answers would otherwise each wait a whole timeout more.
  private readonly answerMs: number;
  private readonly tokens = new TokenCache();
  private readonly tokenFlights = new Map<string, Promise<string | null>>();
  private readonly basic: string | null;
  private readonly insecure: boolean;
  private readonly hooks: UpstreamHooks;

  constructor(cfg: UpstreamConfig, hooks: UpstreamHooks, breaker = new Breaker()) {
    this.name = cfg.name;
    const url = new URL(cfg.url);
    this.origin = url.origin;
    this.base = url.origin + url.pathname.replace(/\/+$/, '');
    this.hooks = hooks;
    this.breaker = breaker;
    this.breaker.onChange = (state) => hooks.breaker(cfg.name, state);
    const ca = cfg.ca ? [...tls.rootCertificates, fs.readFileSync(cfg.ca, 'utf8')] : undefined;
    this.url = url;
    const agent = (connections: number | null, lookup?: ReturnType<typeof guardedLookup>): Agent =>
      new Agent({
        connect: { ca, timeout: cfg.connectTimeoutMs, ...(lookup ? { lookup } : {}) },
        headersTimeout: cfg.readTimeoutMs,
        bodyTimeout: cfg.readTimeoutMs,
        keepAliveTimeout: 30000,
        connections,
      });
    this.agent = agent(32);
    this.blobAgent = agent(null);
    this.foreignAgent = agent(null, guardedLookup(() => this.isLocal()));
    this.answerMs = cfg.connectTimeoutMs + cfg.readTimeoutMs;
    this.basic = cfg.username !== null && cfg.password !== null ? `Basic ${Buffer.from(`${cfg.username}:${cfg.password}`).toString('base64')}` : null;
    this.insecure = cfg.insecure;
  }

  // fetch sends one request for repository path (e.g. library/alpine) and handles auth, redirects and the breaker.
  async fetch(method: 'GET' | 'HEAD', urlPath: string, path: string, headers: Record<string, string> = {}): Promise<UpstreamResponse> {
    if (!this.breaker.allow()) {
      throw new RegistryError('UNAVAILABLE', `upstream ${this.name} is unavailable (circuit open after repeated failures; next try in ${Math.ceil(this.breaker.retryInMs() / 1000)} s)`);
    }
    const scope = `repository:${path}:pull`;
    const started = performance.now();
    try {
      const cached = this.tokens.get(scope);
      let res = await this.send(method, this.base + urlPath, headers, cached ? `Bearer ${cached}` : this.basic);
      // Only the upstream's own challenge is answered: a 401 from a host it redirected to (object storage) names a token
      // service the upstream's credentials must never reach, and is passed on as a refusal.
      if (res.status === 401 && res.origin === this.origin) {
        const auth = await this.authorize(res, scope, cached);
        if (auth !== null) res = await this.send(method, this.base + urlPath, headers, auth);
      }
      // Only answers that say the upstream itself is down count against the breaker: a 500 for one odd request (a
      // layer digest asked for as a manifest) must not let any client cut everyone off from the upstream.
      const failed = DOWN.has(res.status);
      if (failed) this.breaker.failure();
      else this.breaker.success();
      this.hooks.exchange(this.name, performance.now() - started, outcomeOf(res.status, this.basic !== null && res.origin === this.origin));
      return res;
    } catch (err) {
      if (err instanceof RegistryError) {
        // The upstream answered, just not with content (a refused token, a redirect loop). The breaker hears of it
        // either way: a half-open trial that ended here unheard would keep every later request out for good.
        if (err instanceof UpstreamDown) this.breaker.failure();
        else this.breaker.success();
        this.hooks.exchange(this.name, performance.now() - started, outcomeOf(err.status, this.basic !== null));
        throw err;
      }
      const code = (err as { code?: string }).code ?? (err as Error).name;
      if (code === 'ERR_UPSTREAM_TARGET') {
        // The upstream answered, pointing airlock somewhere it must not go: not a sign of the upstream being down.
        this.breaker.success();
        this.hooks.exchange(this.name, performance.now() - started, 'http_error');
        throw new RegistryError('UNAVAILABLE', `upstream ${this.name} pointed airlock at a host it does not connect to for an upstream (${(err as Error).message}); refused`);
      }
      this.breaker.failure();
      this.hooks.exchange(this.name, performance.now() - started, 'network_error');
      throw new RegistryError('UNAVAILABLE', `upstream ${this.name} is unreachable (${code})`);
    }
  }

  // send makes a request and follows redirects, dropping credentials when a redirect leaves the upstream's origin; the
  // answer says which origin gave it.
  private async send(method: string, url: string, headers: Record<string, string>, auth: string | null): Promise<UpstreamResponse & { origin: string }> {
    let target = url;
    let credentials = auth;
    const own = /\/blobs\/[^/]+$/.test(new URL(url).pathname) ? this.blobAgent : this.agent;
    for (let hop = 0; ; hop++) {
      const h: Record<string, string> = { 'user-agent': USER_AGENT, ...headers };
      if (credentials) h.authorization = credentials;
      const dispatcher = new URL(target).origin === this.origin ? own : this.foreignAgent;
      const res = await this.answer(target, { method: method as 'GET', headers: h, dispatcher });
      const location = header(res.headers, 'location');
      if (!REDIRECTS.has(res.statusCode) || !location) return { status: res.statusCode, headers: res.headers, body: res.body, origin: new URL(target).origin };
      res.body.resume();
      if (hop >= MAX_REDIRECTS) throw new RegistryError('UNAVAILABLE', `upstream ${this.name} redirected more than ${MAX_REDIRECTS} times`);
      let parsed: URL;
      try {
        parsed = new URL(location, target);
      } catch {
        // Not named: the Location may carry a presigned query. The upstream answered, so it is not down.
        throw new RegistryError('UNAVAILABLE', `upstream ${this.name} redirected to a URL that does not parse`);
      }
      const next = await this.allowedUrl(parsed, 'redirected to');
      if (next.origin !== new URL(target).origin) credentials = null;
      target = next.toString();
    }
  }

  // allowedUrl refuses a URL an upstream points airlock at (a redirect, a token service) that schemeAllowed refuses, or
  // that is on another origin at an IP address egress.ts refuses (a name is checked by what it resolves to, at connect
  // time).
  private async allowedUrl(u: URL, what: string): Promise<URL> {
    if (!schemeAllowed(u, this.insecure)) {
      const why = u.protocol === 'http:' ? 'a plain-http URL, and the upstream is not configured insecure' : 'an unsupported URL scheme';
      throw new RegistryError('UNAVAILABLE', `upstream ${this.name} ${what} ${why}`);
    }
    if (u.origin === this.origin) return u;
    const kind = addressKind(u.hostname);
    if (kind === 'other') return u;
    const problem = foreignTargetProblem(u.hostname, kind === 'loopback' && (await this.isLocal()));
    if (problem !== null) throw new RegistryError('UNAVAILABLE', `upstream ${this.name} ${what} ${u.host}, which is ${problem}; refused`);
    return u;
  }

  private isLocal(): Promise<boolean> {
    this.local ??= upstreamIsLocal(this.url);
    return this.local;
  }

  // authorize answers a 401 challenge: a bearer token for scope (cached until expiry, one fetch at a time), or basic credentials.
  private async authorize(res: UpstreamResponse, scope: string, refused: string | null): Promise<string | null> {
    res.body.resume();
    const challenge = parseChallenge(res.headers['www-authenticate']);
    if (!challenge) return null;
    if (challenge.scheme === 'basic') return this.basic;
    let flight = this.tokenFlights.get(scope);
    if (!flight) {
      flight = this.fetchToken(challenge.params, scope, refused).finally(() => this.tokenFlights.delete(scope));
      this.tokenFlights.set(scope, flight);
    }
    return flight;
  }

  private async fetchToken(params: Record<string, string>, scope: string, refused: string | null): Promise<string | null> {
    const cached = this.tokens.get(scope);
    if (cached && cached !== refused) return `Bearer ${cached}`;
    const challenge = { params };
    const realm = challenge.params.realm;
    if (!realm) return null;
    let u: URL;
    try {
      u = new URL(realm);
    } catch {
      throw new RegistryError('UNAVAILABLE', `upstream ${this.name} names a token service that is not a URL`);
    }
    await this.allowedUrl(u, 'names a token service at');
    if (challenge.params.service) u.searchParams.set('service', challenge.params.service);
    u.searchParams.set('scope', scope);
    const h: Record<string, string> = { 'user-agent': USER_AGENT, accept: 'application/json' };
    if (this.basic) h.authorization = this.basic;
    const t = await this.answer(u, { method: 'GET', headers: h, dispatcher: u.origin === this.origin ? this.agent : this.foreignAgent });
    if (t.statusCode !== 200) {
      t.body.resume();
      const what = `upstream ${this.name} token service`;
      if (t.statusCode === 429) throw rateLimited(this.name, t.headers);
      if (DOWN.has(t.statusCode)) throw new UpstreamDown('UNAVAILABLE', `${what} is unavailable (HTTP ${t.statusCode})`);
      if (t.statusCode >= 500) throw new RegistryError('UNAVAILABLE', `${what} failed (HTTP ${t.statusCode})`);
      throw new RegistryError('DENIED', `${what} refused access (HTTP ${t.statusCode})`);
    }
    let body: unknown = null;
    try {
      const bytes = await readLimited(t.body, TOKEN_BYTES, header(t.headers, 'content-length'));
      if (bytes !== null) body = JSON.parse(bytes.toString('utf8'));
    } catch {
      // An unreadable answer is one without a token, below.
    }
    if (body === null) throw new RegistryError('UNAVAILABLE', `upstream ${this.name} token service sent an unreadable answer (not JSON, or over ${TOKEN_BYTES} bytes)`);
    const token = this.tokens.put(scope, body);
    return token ? `Bearer ${token}` : null;
  }

  // answer sends a request and waits at most answerMs for its headers; the body then has undici's read timeout. The
  // deadline rejects by itself: undici aborts a request still queued for a connection only once it gets one.
  private answer(url: string | URL, opts: { method: 'GET'; headers: Record<string, string>; dispatcher: Agent }): Promise<Dispatcher.ResponseData> {
    const deadline = new AbortController();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = Object.assign(new Error(`no answer within ${this.answerMs} ms`), { code: 'ANSWER_TIMEOUT' });
        deadline.abort(err);
        reject(err);
      }, this.answerMs);
      request(url, { ...opts, signal: deadline.signal }).then(
        (res) => {
          clearTimeout(timer);
          if (deadline.signal.aborted) discard({ status: res.statusCode, headers: res.headers, body: res.body });
          else resolve(res);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  // close ends the connections, cutting off any request still under way (a download the server stopped waiting for).
  async close(): Promise<void> {
    await Promise.all([this.agent.destroy(), this.blobAgent.destroy(), this.foreignAgent.destroy()]);
  }
}

// readLimited reads a whole body, or returns null (and drops the body) when it is larger than limit.
export async function readLimited(body: Readable, limit: number, declaredLength: string | undefined): Promise<Buffer | null> {
  if (declaredLength !== undefined && Number(declaredLength) > limit) {
    dropBody(body);
    return null;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) {
      dropBody(body);
      return null;
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks, size);
}

// upstreamFailure turns an upstream's non-success answer into the OCI error the client gets; it drains the body.
export function upstreamFailure(upstream: string, res: UpstreamResponse, kind: 'manifest' | 'blob', what: string): RegistryError {
  res.body.resume();
  switch (res.status) {
    case 404:
      return new RegistryError(kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `${what} not found at upstream ${upstream}`);
    case 401:
    case 403:
      return new RegistryError('DENIED', `upstream ${upstream} refused access to ${what} (HTTP ${res.status})`);
    case 429:
      return rateLimited(upstream, res.headers);
    default:
      // Another 4xx refuses this request (an Accept the upstream cannot answer), it does not say the upstream is down:
      // the client learns the content cannot be had, and a tag is not served from its last digest instead.
      if (res.status >= 400 && res.status < 500) {
        return new RegistryError(kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `upstream ${upstream} refused ${what} (HTTP ${res.status})`);
      }
      return new RegistryError('UNAVAILABLE', `upstream ${upstream} answered HTTP ${res.status} for ${what}`);
  }
}

// discard lets an upstream answer's body go unread: its connection is closed rather than drained, and the abort
// error that closing raises on the body is expected, not a fault.
export function discard(res: UpstreamResponse): void {
  dropBody(res.body);
}

function dropBody(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

// rateLimited is the error for an upstream's 429, passing on its Retry-After in seconds: given as seconds or as an
// HTTP date (RFC 9110 §10.2.3), at most a day; 60 when it gave none usable.
function rateLimited(upstream: string, headers: IncomingHttpHeaders): RegistryError {
  return new RegistryError('TOOMANYREQUESTS', `upstream ${upstream} is rate-limiting requests`, null, { 'retry-after': String(retryAfterSeconds(header(headers, 'retry-after'))) });
}

export function retryAfterSeconds(value: string | undefined): number {
  if (value === undefined) return 60;
  if (/^[0-9]{1,6}$/.test(value)) return Math.min(Number(value), 86400);
  const at = Date.parse(value);
  if (!/[a-z]/i.test(value) || Number.isNaN(at)) return 60;
  return Math.min(Math.max(Math.ceil((at - Date.now()) / 1000), 0), 86400);
}
