// A minimal OCI Distribution client for publishing: read manifests and blobs, upload blobs
// monolithically (POST then PUT) and put manifests, with token or basic auth and custom TLS trust.
import crypto from 'node:crypto';
import tls from 'node:tls';
import { Agent, request } from 'undici';
import type { IncomingHttpHeaders } from 'undici/types/header.js';
import { parseChallenge, schemeAllowed, TokenCache } from '../mirror/auth.js';

const USER_AGENT = 'airlock/0.1 (sign)';
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const MANIFEST_LIMIT = 4 * 1024 * 1024;
const ERROR_BODY_LIMIT = 64 * 1024;
const TOKEN_LIMIT = 1024 * 1024;
const CONNECT_TIMEOUT_MS = 15_000;
const IO_TIMEOUT_MS = 60_000;

// ANY_MANIFEST is an Accept header naming every manifest media type a registry may store.
export const ANY_MANIFEST = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

const TLS_TRUST_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

// RegistryClientOptions says which registry to talk to and how to authenticate to it.
export interface RegistryClientOptions {
  /** registry is host[:port]. */
  registry: string;
  /** ca is PEM text of extra trusted CAs, added to Node's root certificates. */
  ca?: string;
  /** clientCert is a PEM certificate and key presented for mutual TLS. */
  clientCert?: { cert: string; key: string };
  username?: string;
  password?: string;
  /** insecureHttp talks plain http instead of https. */
  insecureHttp?: boolean;
}

// FetchedManifest is a manifest as the registry served it, with the sha256 of its exact bytes.
export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

// RegistryRequestError is a failed registry exchange: status is the HTTP status, or null when no answer came.
export class RegistryRequestError extends Error {
  readonly status: number | null;

  constructor(message: string, status: number | null) {
    super(message);
    this.name = 'RegistryRequestError';
    this.status = status;
  }
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  // origin is where the answer came from: the registry, or a host it redirected to.
  origin: string;
}

interface SendOptions {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT';
  headers?: Record<string, string>;
  body?: Buffer;
  /** limit caps the response body; larger answers fail. */
  limit?: number;
}

function sha256Hex(bytes: Buffer): string {
  return `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') {
    return err.code;
  }
  return err instanceof Error ? err.name : 'error';
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

// Summarises an OCI error body ("CODE: message; …"), else the start of whatever text came back.
function describeErrorBody(body: Buffer): string {
  if (body.length === 0) {
    return '';
  }
  const text = body.toString('utf8');
  try {
    const doc: unknown = JSON.parse(text);
    if (typeof doc === 'object' && doc !== null && 'errors' in doc && Array.isArray(doc.errors)) {
      const parts = doc.errors.map((e: unknown) => {
        if (typeof e !== 'object' || e === null) {
          return '';
        }
        const code = 'code' in e && typeof e.code === 'string' ? e.code : 'UNKNOWN';
        const message = 'message' in e && typeof e.message === 'string' ? e.message : '';
        return message === '' ? code : `${code}: ${message}`;
      });
      return oneLine(parts.filter((p) => p !== '').join('; '), 300);
    }
  } catch {
    // Not JSON: fall through to the raw text.
  }
  return oneLine(text, 200);
}

// Reads a response body of at most limit bytes; a longer one fails, or is cut short when truncate is set.
async function readBody(
  body: AsyncIterable<Buffer> & { destroy(): void },
  limit: number,
  truncate = false,
): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      if (truncate) {
        parts.push(chunk.subarray(0, chunk.length - (size - limit)));
        break;
      }
      throw new Error(`the answer is larger than ${limit} bytes`);
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

// RegistryClient pushes to and reads from one registry; close it when done.
export class RegistryClient {
  readonly registry: string;
  private readonly origin: string;
  private readonly agent: Agent;
  private readonly tokens = new TokenCache();
  private readonly basic: string | null;
  private readonly hasCredentials: boolean;
  private readonly hasClientCert: boolean;
  private readonly secure: boolean;
  private preferBasic = false;

  constructor(opts: RegistryClientOptions) {
    this.registry = opts.registry;
    // Docker Hub's API lives on a different host than the name users write.
    const apiHost = opts.registry === 'docker.io' || opts.registry === 'index.docker.io' ? 'registry-1.docker.io' : opts.registry;
    this.origin = new URL(`${opts.insecureHttp === true ? 'http' : 'https'}://${apiHost}`).origin;
    this.hasCredentials = opts.username !== undefined;
    this.hasClientCert = opts.clientCert !== undefined;
    this.secure = opts.insecureHttp !== true;
    this.basic =
      opts.username === undefined
        ? null
        : `Basic ${Buffer.from(`${opts.username}:${opts.password ?? ''}`, 'utf8').toString('base64')}`;
    this.agent = new Agent({
      connect: {
        ca: opts.ca === undefined ? undefined : [...tls.rootCertificates, opts.ca],
        cert: opts.clientCert?.cert,
        key: opts.clientCert?.key,
        timeout: CONNECT_TIMEOUT_MS,
      },
      headersTimeout: IO_TIMEOUT_MS,
      bodyTimeout: IO_TIMEOUT_MS,
    });
  }

  // getManifest fetches repo:ref (tag or digest) with the given Accept header; null when the registry has none.
  async getManifest(repo: string, ref: string, accept: string): Promise<FetchedManifest | null> {
    const what = `GET manifest ${repo}${ref.startsWith('sha256:') ? '@' : ':'}${ref}`;
    const res = await this.send(repo, `/v2/${repo}/manifests/${ref}`, what, {
      method: 'GET',
      headers: { accept },
      limit: MANIFEST_LIMIT,
    });
    if (res.status === 404) {
      return null;
    }
    this.expect(res, [200], what);
    const contentType = headerValue(res.headers, 'content-type') ?? '';
    return { bytes: res.body, mediaType: contentType.split(';')[0].trim(), digest: sha256Hex(res.body) };
  }

  // headManifest returns the digest the registry reports for repo:ref, or null when it has no such manifest.
  async headManifest(repo: string, ref: string): Promise<string | null> {
    const what = `HEAD manifest ${repo}:${ref}`;
    const res = await this.send(repo, `/v2/${repo}/manifests/${ref}`, what, { method: 'HEAD', headers: { accept: ANY_MANIFEST } });
    if (res.status === 404) {
      return null;
    }
    this.expect(res, [200], what);
    const digest = headerValue(res.headers, 'docker-content-digest');
    if (digest !== undefined) {
      return digest;
    }
    // Docker-Content-Digest is optional on HEAD; the bytes settle it.
    return (await this.getManifest(repo, ref, ANY_MANIFEST))?.digest ?? null;
  }

  // blobExists asks whether repo already holds the blob.
  async blobExists(repo: string, digest: string): Promise<boolean> {
    const what = `HEAD blob ${repo}@${digest}`;
    const res = await this.send(repo, `/v2/${repo}/blobs/${digest}`, what, { method: 'HEAD' });
    if (res.status === 404) {
      return false;
    }
    this.expect(res, [200], what);
    return true;
  }

  // getBlob downloads a blob of at most limit bytes and checks it hashes to its sha256 digest.
  async getBlob(repo: string, digest: string, limit = MANIFEST_LIMIT): Promise<Buffer> {
    const what = `GET blob ${repo}@${digest}`;
    const res = await this.send(repo, `/v2/${repo}/blobs/${digest}`, what, { method: 'GET', limit });
    this.expect(res, [200], what);
    if (digest.startsWith('sha256:') && sha256Hex(res.body) !== digest) {
      throw new RegistryRequestError(`registry ${this.registry}: ${what}: the bytes served do not match the digest`, res.status);
    }
    return res.body;
  }

  // pushBlob uploads bytes as digest in one PUT (POST for a session, then PUT ?digest=), unless repo already has it.
  async pushBlob(repo: string, digest: string, bytes: Buffer): Promise<void> {
    if (sha256Hex(bytes) !== digest) {
      throw new Error(`pushBlob: bytes do not hash to ${digest}`);
    }
    if (await this.blobExists(repo, digest)) {
      return;
    }
    const startWhat = `start blob upload to ${repo}`;
    const started = await this.send(repo, `/v2/${repo}/blobs/uploads/`, startWhat, { method: 'POST', body: Buffer.alloc(0) });
    this.expect(started, [202], startWhat);
    const location = headerValue(started.headers, 'location');
    if (location === undefined || location === '') {
      throw new RegistryRequestError(`registry ${this.registry}: ${startWhat}: 202 without a Location header`, started.status);
    }
    const session = new URL(location, this.origin);
    session.hash = '';
    const target = `${session.href}${session.search === '' ? '?' : '&'}digest=${encodeURIComponent(digest)}`;
    const putWhat = `upload blob ${digest} to ${repo}`;
    const done = await this.send(repo, target, putWhat, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: bytes,
    });
    this.expect(done, [201], putWhat);
  }

  // putManifest stores bytes under repo:tag and returns the digest, checked against the Docker-Content-Digest the registry reports.
  async putManifest(repo: string, tag: string, bytes: Buffer, mediaType: string): Promise<string> {
    const what = `PUT manifest ${repo}:${tag}`;
    const res = await this.send(repo, `/v2/${repo}/manifests/${tag}`, what, {
      method: 'PUT',
      headers: { 'content-type': mediaType },
      body: bytes,
    });
    this.expect(res, [201], what);
    const digest = sha256Hex(bytes);
    const reported = headerValue(res.headers, 'docker-content-digest');
    if (reported !== undefined && reported !== digest) {
      throw new RegistryRequestError(
        `registry ${this.registry}: ${what}: registry reports digest ${reported}, but the manifest sent is ${digest}`,
        res.status,
      );
    }
    return digest;
  }

  // close ends the client's connections.
  async close(): Promise<void> {
    await this.agent.close();
  }

  private expect(res: Reply, ok: number[], what: string): void {
    if (ok.includes(res.status)) {
      return;
    }
    const detail = describeErrorBody(res.body);
    const hint = res.status === 401 && !this.hasCredentials ? ' (no registry credentials were given)' : '';
    throw new RegistryRequestError(
      `registry ${this.registry}: ${what} failed: HTTP ${res.status}${detail === '' ? '' : ` ${detail}`}${hint}`,
      res.status,
    );
  }

  private authorization(scope: string): string | null {
    const token = this.tokens.get(scope);
    if (token !== null) {
      return `Bearer ${token}`;
    }
    return this.preferBasic ? this.basic : null;
  }

  // send makes one request with the credentials for repo, answering one 401 challenge and following GET/HEAD redirects.
  private async send(repo: string, pathOrUrl: string, what: string, opts: SendOptions): Promise<Reply> {
    const scope = `repository:${repo}:pull,push`;
    const url = new URL(pathOrUrl, this.origin);
    let res = await this.exchange(url, what, opts, this.authorization(scope));
    // Only the registry's own challenge is answered: one from a host it redirected to must not get its credentials.
    if (res.status === 401 && res.origin === this.origin) {
      const auth = await this.answerChallenge(res, scope, what);
      if (auth !== null) {
        res = await this.exchange(url, what, opts, auth);
      }
    }
    return res;
  }

  private async exchange(start: URL, what: string, opts: SendOptions, auth: string | null): Promise<Reply> {
    let url = start;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...opts.headers };
      // Credentials go only to the registry itself, never to another origin an upload or redirect points at.
      if (auth !== null && url.origin === this.origin) {
        headers.authorization = auth;
      }
      let res: Awaited<ReturnType<typeof request>>;
      try {
        res = await request(url, { method: opts.method, headers, body: opts.body, dispatcher: this.agent });
      } catch (err) {
        throw new RegistryRequestError(`registry ${this.registry}: ${what} failed: ${this.describeNetworkError(err)}`, null);
      }
      const location = headerValue(res.headers, 'location');
      const follow = (opts.method === 'GET' || opts.method === 'HEAD') && REDIRECTS.has(res.statusCode) && location !== undefined;
      if (!follow) {
        const success = res.statusCode >= 200 && res.statusCode < 300;
        let body: Buffer;
        try {
          body =
            opts.method === 'HEAD'
              ? Buffer.alloc(0)
              : await readBody(res.body, success ? (opts.limit ?? ERROR_BODY_LIMIT) : ERROR_BODY_LIMIT, !success);
        } catch (err) {
          throw new RegistryRequestError(`registry ${this.registry}: ${what} failed: ${this.describeNetworkError(err)}`, res.statusCode);
        }
        if (opts.method === 'HEAD') {
          res.body.resume();
        }
        return { status: res.statusCode, headers: res.headers, body, origin: url.origin };
      }
      res.body.resume();
      if (hop >= MAX_REDIRECTS) {
        throw new RegistryRequestError(`registry ${this.registry}: ${what} failed: more than ${MAX_REDIRECTS} redirects`, res.statusCode);
      }
      url = new URL(location, url);
      if (!schemeAllowed(url, !this.secure)) {
        throw new RegistryRequestError(`registry ${this.registry}: ${what} failed: redirect to ${url.protocol === 'http:' ? 'plain http from an https registry' : 'an unsupported URL scheme'}`, res.statusCode);
      }
    }
  }

  // answerChallenge turns a 401's WWW-Authenticate into credentials for scope: a (cached) bearer token or basic auth.
  private async answerChallenge(res: Reply, scope: string, what: string): Promise<string | null> {
    const challenge = parseChallenge(res.headers['www-authenticate']);
    if (challenge === null) {
      return null;
    }
    if (challenge.scheme === 'basic') {
      this.preferBasic = true;
      return this.basic;
    }
    const realm = challenge.params.realm;
    if (realm === undefined || realm === '') {
      return null;
    }
    let tokenUrl: URL;
    try {
      tokenUrl = new URL(realm);
    } catch {
      throw new RegistryRequestError(`registry ${this.registry}: ${what}: the auth challenge names an invalid realm`, 401);
    }
    if (!schemeAllowed(tokenUrl, !this.secure)) {
      throw new RegistryRequestError(`registry ${this.registry}: ${what}: the auth challenge names a token service at a ${tokenUrl.protocol} URL; credentials go over https only`, 401);
    }
    if (challenge.params.service !== undefined) {
      tokenUrl.searchParams.set('service', challenge.params.service);
    }
    tokenUrl.searchParams.set('scope', scope);
    const headers: Record<string, string> = { 'user-agent': USER_AGENT, accept: 'application/json' };
    if (this.basic !== null) {
      headers.authorization = this.basic;
    }
    const tokenWhat = `get a token from ${tokenUrl.origin}${tokenUrl.pathname} for ${what}`;
    let status: number;
    let body: Buffer;
    try {
      const t = await request(tokenUrl, { method: 'GET', headers, dispatcher: this.agent });
      status = t.statusCode;
      body = await readBody(t.body, TOKEN_LIMIT);
    } catch (err) {
      throw new RegistryRequestError(`registry ${this.registry}: ${tokenWhat} failed: ${this.describeNetworkError(err)}`, null);
    }
    if (status !== 200) {
      const refused = status === 401 || status === 403 ? (this.hasCredentials ? ' (credentials refused)' : ' (no registry credentials were given)') : '';
      throw new RegistryRequestError(`registry ${this.registry}: ${tokenWhat} failed: HTTP ${status}${refused}`, status);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      throw new RegistryRequestError(`registry ${this.registry}: ${tokenWhat}: the answer is not JSON`, status);
    }
    const token = this.tokens.put(scope, doc);
    if (token === null) {
      throw new RegistryRequestError(`registry ${this.registry}: ${tokenWhat}: the answer holds no token`, status);
    }
    return `Bearer ${token}`;
  }

  private describeNetworkError(err: unknown): string {
    const code = errorCode(err);
    const message = err instanceof Error ? oneLine(err.message, 200) : String(err);
    if (code === 'Error') {
      return message;
    }
    if (TLS_TRUST_CODES.has(code)) {
      return `the registry's TLS certificate is not trusted (${code}: ${message}); pass the CA that issued it`;
    }
    if (/certificate required|handshake failure|alert/i.test(message) || /ALERT/.test(code)) {
      return `the TLS handshake was refused (${code}: ${message}); the registry may require a client certificate`;
    }
    // A server that demands a client certificate under TLS 1.3 simply closes the connection after the handshake.
    if (code === 'UND_ERR_SOCKET' && this.secure && !this.hasClientCert) {
      return `the registry closed the connection (${code}: ${message}); it may require a client certificate, and none was given`;
    }
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EHOSTUNREACH' || code === 'UND_ERR_CONNECT_TIMEOUT') {
      return `cannot reach the registry (${code}: ${message})`;
    }
    return `${code}: ${message}`;
  }
}
