// What a request is to airlock and how it is recorded: the client certificate's identity, the request's context, and
// the one recorder that counts, audits and logs every response (SPEC §7, §8), whether Fastify or a remembered answer
// (registry/remembered.ts) sent it.
import type { IncomingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { requestLog, type RequestLine } from './logging.js';
import { identityFromPeer, type Identity } from './pki/identity.js';
import type { RequestContext, Services } from './services.js';

const identities = new WeakMap<object, Identity | null>();

// identityOf reads (once per connection) the verified client certificate's identity.
export function identityOf(socket: TLSSocket): Identity | null {
  let id = identities.get(socket);
  if (id === undefined) {
    id = typeof socket.getPeerCertificate === 'function' ? identityFromPeer(socket.getPeerCertificate()) : null;
    identities.set(socket, id);
  }
  return id;
}

// freshContext is a request's context before anything is known of it but who sent it.
export function freshContext(identity: Identity | null, routeLabel: string): RequestContext {
  return { identity, action: null, repository: null, reference: null, digest: null, decision: null, reason: null, source: null, bytes: null, routeLabel };
}

// refusedAsAdmin marks a request's context as an admin.refused audit event, naming the request by its method and path
// (or by reference, the route's pattern).
export function refusedAsAdmin(c: RequestContext, method: string, url: string, reason: string, reference = `${method} ${url.split('?')[0].slice(0, 200)}`): void {
  c.action = 'admin.refused';
  c.reference = reference;
  c.decision = 'deny';
  c.reason = reason;
}

// crossSite says why a request comes from another site's page, or null. A browser holding an airlock client
// certificate presents it on every page's requests to airlock, so without this any web page an admin opens could
// approve an image or revoke a certificate through the admin's browser (CSRF), or pull through the mirror in the
// admin's name. Browsers mark such requests with Sec-Fetch-Site and Origin; the console's own requests are
// same-origin, and registry clients, curl and scripts send neither header.
export function crossSite(headers: IncomingHttpHeaders): string | null {
  const site = headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return `the browser marked it ${site}`;
  const origin = headers.origin;
  if (origin === undefined) return null;
  let host: string | null = null;
  try {
    host = new URL(origin).host;
  } catch {
    // "null" (a sandboxed frame, a data: URL) and anything else that is not an origin.
  }
  return host !== null && host === headers.host ? null : `it comes from the page at ${origin.slice(0, 100)}`;
}

// routeLabel names the route of a URL for the metrics.
export function routeLabel(url: string): string {
  if (url.startsWith('/v2')) {
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path === '/v2' || path === '/v2/') return 'v2';
    const m = /\/(manifests|blobs|tags|referrers)\//.exec(path);
    return m ? `v2_${m[1]}` : 'v2_other';
  }
  if (url.startsWith('/api/')) return 'api';
  if (url.startsWith('/ui')) return 'ui';
  if (url.startsWith('/metrics')) return 'metrics';
  if (url.startsWith('/healthz')) return 'healthz';
  return 'other';
}

// MAX_SHOWN bounds the text a client chose that a log line or an audit event repeats (a path, a reference).
const MAX_SHOWN = 300;
// UNSHOWN are the characters such text may not carry into a log line, an audit row or its CSV export: controls, and
// the bidirectional overrides that make a line read otherwise than it is. A reference is decoded from the path before
// it is checked, so a refused one can hold any of them.
const UNSHOWN = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

// shown is a client's text as a record repeats it: at most MAX_SHOWN characters, and none of UNSHOWN.
function shown(text: string | null): string | null {
  if (text === null) return null;
  return (text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text).replace(UNSHOWN, '\ufffd');
}

// Recorder counts, audits and logs one finished (or aborted) request: status is what was sent, ms how long it took.
export type Recorder = (c: RequestContext, method: string, url: string, ip: string | null, status: number, aborted: boolean, ms: number) => void;

// createRecorder makes the one recorder of responses, for Fastify's requests and for remembered answers alike.
export function createRecorder(s: Services): Recorder {
  const logRequest = requestLog(s.logger);
  return (c, method, url, ip, status, aborted, ms) => {
    s.metrics.requests.inc(c.routeLabel, method, aborted ? 'aborted' : String(status));
    s.metrics.requestSeconds.observe({ route: c.routeLabel }, ms / 1000);
    if (c.bytes) s.metrics.bytesServed.add(c.bytes, c.source ?? 'cache');
    const decision = c.decision ?? (status < 400 ? 'allow' : 'deny');
    const reference = shown(c.reference);
    if (c.routeLabel.startsWith('v2') || c.action) {
      s.audit.append({
        action: c.action ?? `${c.routeLabel}.${method.toLowerCase()}`,
        actor: c.identity?.cn ?? null,
        actorSerial: c.identity?.serial ?? null,
        role: c.identity?.role ?? null,
        ip,
        repository: c.repository,
        reference,
        digest: c.digest,
        decision,
        // A request refused by its connection's certificate is cut off on purpose: the reason says why.
        reason: aborted && c.action !== 'tls.refused' ? 'aborted' : c.reason,
        status: aborted ? null : status,
        bytes: aborted ? null : c.bytes,
      });
    }
    const line: RequestLine = {
      actor: c.identity?.cn ?? null,
      serial: c.identity?.serial ?? null,
      role: c.identity?.role ?? null,
      method,
      path: url.length > MAX_SHOWN ? `${url.slice(0, MAX_SHOWN)}…` : url,
      repo: c.repository,
      ref: reference,
      digest: c.digest,
      decision,
      reason: c.reason,
      source: c.source,
      status: aborted ? 'aborted' : status,
      bytes: c.bytes,
      ms: Math.round(ms * 10) / 10,
    };
    logRequest(status >= 500 || aborted, line);
  };
}
