// Remembered manifest answers: per request URL, an admitted manifest served by digest or by a pinned tag. Until the
// policy changes, the same URL gets the same bytes and the same decision, so a repeat is answered straight from Node's
// request event: no parsing, routing or policy lookups, and no Fastify request, reply or hooks, which took 9-19 % of
// the request thread's time for such a request (docs/performance.md). Pulls of one image by a fleet repeat the same
// few URLs thousands of times.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { StoredManifest } from '../../storage/content.js';
import { whyRefused } from '../pki/identity.js';
import { crossSite, freshContext, identityOf, type Recorder, routeLabel } from '../record.js';
import type { Services } from '../services.js';
import type { Route } from './names.js';
import { acceptsType, isIndexType } from './manifest.js';
import { manifestHeaders, notModified, REGISTRY_HEADERS } from './send.js';

// MAX_REMEMBERED bounds the remembered answers; past it they are forgotten and relearned. Only URLs a registry client
// sends are remembered (no query but ns, at most MAX_URL characters), and only manifests of at most MAX_BYTES, which the
// mirror keeps one shared copy of: a client varying the query of a large manifest's URL would otherwise pin a copy of
// it per variant (1 MiB a request, measured).
const MAX_REMEMBERED = 10000;
const MAX_URL = 512;
const MAX_BYTES = 256 * 1024;
const PLAIN_QUERY = /^(?:\?ns=[^&]*)?$/;

// Answer is an admitted manifest answer for one request URL, valid while the policy's generation is unchanged.
export interface Answer {
  generation: number;
  route: Route;
  ref: string;
  tag: string | null;
  reason: string;
  manifest: StoredManifest;
  // namespace is the request's ns, echoed in OCI-Namespace; null without one.
  namespace: string | null;
}

// DriftCheck notes, now and then, whether the upstream moved a pinned tag (registry/routes.ts).
export type DriftCheck = (r: Route, tag: string, pinned: string) => void;

// Remembered is an answer with what its responses say besides the body, made once.
interface Remembered {
  answer: Answer;
  // indexType is the media type of an index answered for a pinned tag: a client whose Accept names types but not
  // this one is answered by the full path (registry/routes.ts platformManifest).
  indexType: string | null;
  label: string;
  headers: Record<string, string | number>;
  notModifiedHeaders: Record<string, string>;
}

// RememberedAnswers holds the answers and serves them.
export class RememberedAnswers {
  private readonly answers = new Map<string, Remembered>();
  private readonly s: Services;
  private readonly checkDrift: DriftCheck;
  private readonly record: Recorder;

  constructor(s: Services, checkDrift: DriftCheck, record: Recorder) {
    this.s = s;
    this.checkDrift = checkDrift;
    this.record = record;
  }

  // size is how many answers are remembered.
  get size(): number {
    return this.answers.size;
  }

  // remember keeps the answer the full path just gave for url.
  remember(url: string, answer: Answer): void {
    const q = url.indexOf('?');
    if (url.length > MAX_URL || answer.manifest.size > MAX_BYTES || !PLAIN_QUERY.test(q < 0 ? '' : url.slice(q))) return;
    if (this.answers.size >= MAX_REMEMBERED) this.answers.clear();
    const m = answer.manifest;
    // Fastify's path gets the API version header from the app's onRequest hook.
    const notModifiedHeaders: Record<string, string> = { ...REGISTRY_HEADERS, ...manifestHeaders(m.digest, m.mediaType) };
    if (answer.namespace !== null) notModifiedHeaders['oci-namespace'] = answer.namespace;
    const indexType = answer.tag !== null && isIndexType(m.mediaType) ? m.mediaType : null;
    this.answers.set(url, { answer, indexType, label: routeLabel(url), headers: { ...notModifiedHeaders, 'content-length': m.bytes.length }, notModifiedHeaders });
  }

  // answer serves a remembered answer to a GET or HEAD from a client whose certificate names a role and is not
  // revoked, with the bytes, headers and record the full path gives, and tells whether it did. Anything else (no
  // answer, a changed policy, a certificate without a role or revoked) is left to Fastify, which refuses or answers it.
  answer(req: IncomingMessage, res: ServerResponse): boolean {
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD') return false;
    const url = req.url ?? '';
    const known = this.answers.get(url);
    if (known === undefined || known.answer.generation !== this.s.policy.generation || this.s.audit.full) return false;
    if (known.indexType !== null) {
      const accept = req.headers.accept;
      if (accept !== undefined && !acceptsType(accept, known.indexType)) return false;
    }
    if (crossSite(req.headers) !== null) return false;
    const identity = identityOf(req.socket as TLSSocket);
    if (identity === null || identity.role === null || whyRefused(identity, this.s.revoked) !== null) return false;
    const started = performance.now();
    const a = known.answer;
    const m = a.manifest;
    const status = notModified(req.headers['if-none-match'], m.digest) ? 304 : 200;
    const c = freshContext(identity, known.label);
    c.action = 'pull.manifest';
    c.reference = a.ref;
    c.repository = a.route.repository;
    c.digest = m.digest;
    c.decision = 'allow';
    c.reason = a.reason;
    c.source = 'cache';
    if (status === 200) c.bytes = method === 'HEAD' ? 0 : m.bytes.length;
    const ip = req.socket.remoteAddress ?? null;
    // A response closes once, finished or cut off by the client.
    const recorded = (): void => this.record(c, method, url, ip, status, !res.writableFinished, performance.now() - started);
    res.on('close', recorded);
    try {
      res.writeHead(status, status === 200 ? known.headers : known.notModifiedHeaders);
    } catch {
      // A header Node refuses (it never should be): Fastify's path answers, with its error handling and its record.
      res.off('close', recorded);
      return false;
    }
    res.end(status === 200 && method === 'GET' ? m.bytes : undefined);
    this.s.metrics.decisions.inc('allow', a.reason);
    this.s.metrics.cache.inc('manifest', 'hit');
    if (a.tag !== null) this.checkDrift(a.route, a.tag, m.digest);
    return true;
  }
}
