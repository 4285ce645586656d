// The OCI distribution pull API under /v2/ (SPEC §3, §4): routing, admission, and the exact bytes with every header.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { StoredManifest } from '../../storage/content.js';
import { RegistryError } from '../errors.js';
import type { Source } from '../mirror/mirror.js';
import type { Recorder } from '../record.js';
import type { Services } from '../services.js';
import { acceptsIndexes, acceptsType, defaultPlatform, isIndexType, MEDIA } from './manifest.js';
import { isDigestLike, isTag, parseDigest, type Route, routeName, truncate } from './names.js';
import { parseRange } from './range.js';
import { RememberedAnswers } from './remembered.js';
import { manifestHeaders, notModified, sendBody } from './send.js';

const SIG_TAG_RE = /^sha256-([a-f0-9]{64})\.sig$/;
const TAGS_PAGE_MAX = 10000;

// Parsed is a /v2/ request path taken apart from the right, as names may contain slashes.
type Parsed =
  | { kind: 'ping' }
  | { kind: 'catalog' }
  | { kind: 'manifest'; name: string; ref: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'tags'; name: string }
  | { kind: 'referrers'; name: string; digest: string }
  | { kind: 'upload'; name: string };

// parsePath splits /v2/<name>/<endpoint>; a name with percent-escapes or empty components is NAME_INVALID.
export function parsePath(url: string): Parsed {
  const q = url.indexOf('?');
  const path = q >= 0 ? url.slice(0, q) : url;
  if (path === '/v2' || path === '/v2/') return { kind: 'ping' };
  if (path === '/v2/_catalog') return { kind: 'catalog' };
  const rest = path.slice(4);
  const m = /^(.+)\/(manifests|blobs|tags|referrers)\/(.*)$/.exec(rest);
  if (!m) throw new RegistryError('NAME_UNKNOWN', `"${truncate(rest)}" is not a registry endpoint`);
  const [, name, endpoint, tail] = m;
  if (name.includes('%')) throw new RegistryError('NAME_INVALID', 'repository names cannot contain escaped characters');
  if (endpoint === 'tags') {
    if (tail !== 'list') throw new RegistryError('NAME_UNKNOWN', 'no such endpoint: the tags endpoint is /v2/<name>/tags/list');
    return { kind: 'tags', name };
  }
  if (endpoint === 'blobs' && (tail === 'uploads' || tail.startsWith('uploads/'))) return { kind: 'upload', name };
  if (tail === '' || tail.includes('/')) throw new RegistryError(endpoint === 'manifests' ? 'MANIFEST_UNKNOWN' : 'DIGEST_INVALID', `invalid reference "${truncate(tail)}"`);
  const ref = decodeURIComponentSafe(tail);
  if (endpoint === 'manifests') return { kind: 'manifest', name, ref };
  if (endpoint === 'blobs') return { kind: 'blob', name, digest: ref };
  return { kind: 'referrers', name, digest: ref };
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new RegistryError('DIGEST_INVALID', 'reference is not valid percent-encoding');
  }
}

// registryRoutes registers /v2/ on the app; record is the app's recorder, which remembered answers record with too.
export async function registryRoutes(app: FastifyInstance, s: Services, record: Recorder): Promise<void> {
  // Request bodies under /v2/ are never read: writes are refused before any upload is accepted.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));

  const table = { upstreams: s.config.upstreams.map((u) => u.name), defaultUpstream: s.config.defaultUpstream };
  const lastDriftCheck = new Map<string, number>();

  // route resolves a request's name (and ns) to its upstream; an ns that routed is echoed in OCI-Namespace.
  const route = (req: FastifyRequest, reply: FastifyReply, name: string): Route => {
    const ns = (req.query as Record<string, unknown>).ns;
    // Taken as absent, a repeated ns would route the name to the default upstream instead of the one it names.
    if (Array.isArray(ns)) throw new RegistryError('NAME_INVALID', 'ns is given more than once; give the upstream registry once');
    const r = routeName(name, typeof ns === 'string' ? ns : undefined, table);
    req.airlock.repository = r.repository;
    if (typeof ns === 'string') reply.header('oci-namespace', ns);
    return r;
  };

  const actor = (req: FastifyRequest): string | null => req.airlock.identity?.cn ?? null;

  // admitManifest refuses with DENIED unless policy admits (repository, digest); it names the approval request. A
  // request counts one decision: an admitted index that another manifest is served in place of (final false) is not
  // counted, the decision on what is served is.
  const admitManifest = async (req: FastifyRequest, r: Route, digest: string, tag: string | null, final = true): Promise<void> => {
    const v = await s.policy.admit(r, digest, { tag, actor: actor(req) });
    req.airlock.decision = v.admitted ? 'allow' : 'deny';
    req.airlock.reason = v.reason;
    if (final || !v.admitted) s.metrics.decisions.inc(req.airlock.decision, v.reason);
    if (v.admitted) return;
    if (v.reason === 'revoked') {
      const rev = s.policyStore.revocation(r.repository, digest);
      throw new RegistryError('DENIED', `${r.repository}@${digest} has been revoked${rev ? `: ${rev.reason}` : ''}`, { request: null, repository: r.repository, digest });
    }
    const id = v.request?.id ?? null;
    const why = v.reason === 'denied' ? 'an administrator denied it' : 'it is not pinned, signed by a trusted publisher or approved';
    throw new RegistryError('DENIED', `${r.repository}@${digest} is not admitted: ${why}; approval request ${id}`, { request: id, repository: r.repository, digest });
  };

  // checkDrift notes, at most once a minute per tag, when the upstream moved a pinned tag.
  const checkDrift = (r: Route, tag: string, pinned: string): void => {
    const key = `${r.repository}:${tag}`;
    const t = Date.now();
    if (t - (lastDriftCheck.get(key) ?? -Infinity) < s.driftCheckMs) return;
    lastDriftCheck.set(key, t);
    s.mirror
      .peekTag(r, tag)
      .then(async (upstream) => {
        if (upstream === null) return;
        // A tag pinned to one platform's manifest has not moved while the index the upstream gives for it lists that manifest.
        const moved = upstream !== pinned && !(await listsManifest(r, upstream, pinned));
        // The pin may have been deleted or moved while the upstream answered: drift is only ever of the pin as it is.
        if (s.policy.tagPin(r.repository, tag) !== pinned) return;
        if (!moved) {
          s.policyStore.clearDrift(r.repository, tag);
          return;
        }
        if (s.policyStore.recordDrift(r.repository, tag, pinned, upstream)) {
          s.audit.append({ action: 'tag.drift', repository: r.repository, reference: tag, digest: upstream, decision: null, reason: `pinned to ${pinned}` });
          s.logger.warn({ repo: r.repository, tag, pinned, upstream }, 'pinned tag moved upstream');
        }
      })
      .catch((err: Error) => s.logger.warn({ repo: r.repository, tag, err: err.message }, 'drift check failed'));
  };

  // listsManifest tells whether index (a digest the upstream gives for a tag) is an index listing manifest; the index is
  // fetched, and kept, only when manifest is a single image's, the only kind an index lists. One that cannot be had
  // (a schema 1 manifest, say) lists nothing: the tag has moved.
  const listsManifest = async (r: Route, index: string, manifest: string): Promise<boolean> => {
    try {
      if (isIndexType((await s.mirror.manifest(r, manifest)).manifest.mediaType)) return false;
      if (!isIndexType((await s.mirror.manifest(r, index)).manifest.mediaType)) return false;
    } catch {
      return false;
    }
    return s.content.parents(r.repository, manifest, 'manifest').some((p) => p.digest === index);
  };

  const remembered = new RememberedAnswers(s, checkDrift, record);
  s.answerRemembered = (req, res) => remembered.answer(req, res);

  // isKnownBlob tells whether a digest the repository holds no manifest for is a layer or config of one of its manifests:
  // asked for one as a manifest, distribution answers 500, which would count against the upstream's breaker.
  const isKnownBlob = (r: Route, digest: string): boolean =>
    !s.content.holds(r.repository, digest) && s.content.parents(r.repository, digest, 'blob').length > 0;

  const manifest = async (req: FastifyRequest, reply: FastifyReply, name: string, ref: string, head: boolean): Promise<void> => {
    req.airlock.action = 'pull.manifest';
    req.airlock.reference = ref;
    const r = route(req, reply, name);
    const sig = SIG_TAG_RE.exec(ref);
    if (sig) return signature(req, reply, r, `sha256:${sig[1]}`, head);
    let digest: string;
    let tag: string | null = null;
    let pinnedTag = false;
    // fromMemory: the tag is answered from what airlock knows (a pin, or the last digest while the upstream is down).
    let fromMemory = false;
    const acceptHeader = req.headers.accept;
    const accept = Array.isArray(acceptHeader) ? acceptHeader.join(', ') : acceptHeader ?? null;
    if (isDigestLike(ref)) {
      digest = parseDigest(ref);
      // airlock's own signature, asked for by the digest the referrers API lists: served as under its .sig tag.
      const held = s.content.holds(r.repository, digest);
      if (held?.own && held.subject !== null) return signature(req, reply, r, held.subject, head, digest);
    } else {
      if (!isTag(ref)) throw new RegistryError('MANIFEST_UNKNOWN', `invalid tag "${truncate(ref)}"`);
      tag = ref;
      const pinned = s.policy.tagPin(r.repository, tag);
      if (pinned) {
        digest = pinned;
        pinnedTag = true;
        fromMemory = true;
        checkDrift(r, tag, pinned);
      } else {
        const resolved = await s.mirror.resolveTag(r, tag, accept);
        digest = resolved.digest;
        fromMemory = resolved.source === 'stale';
        // A client that takes no index gets one platform's manifest; it is admitted when listed in an admitted index,
        // which airlock must know whether or not a client that takes indexes pulled the tag before.
        if (accept !== null && !acceptsIndexes(accept) && !(await s.policy.evaluate(r, digest)).admitted) await s.mirror.learnTagIndex(r, tag, digest);
      }
    }
    req.airlock.digest = digest;
    // An admitted digest is asked for whatever lists it: any manifest of the repository, even one no one admitted,
    // could list a digest as a layer and so keep a pinned image from being served.
    if (tag === null && !s.mirror.localManifest(r, digest) && isKnownBlob(r, digest) && !(await s.policy.evaluate(r, digest)).admitted) {
      throw new RegistryError('MANIFEST_UNKNOWN', `${r.repository}@${digest} is a blob, not a manifest`);
    }
    const generation = s.policy.generation;
    let { manifest: m, source } = await s.mirror.manifest(r, digest);
    // A pinned tag is served from the index it is pinned to, and an unpinned one whose upstream is down from the index it
    // last resolved to; to a client whose Accept names types but not that index's type, what the upstream would have
    // answered instead (an unpinned tag otherwise gets that answer from the upstream itself).
    const substituted = fromMemory && accept !== null && isIndexType(m.mediaType) && !acceptsType(accept, m.mediaType);
    await admitManifest(req, r, digest, tag, !substituted);
    if (substituted) ({ manifest: m, source } = await platformManifest(req, r, tag as string, m));
    req.airlock.source = source;
    s.metrics.cache.inc('manifest', source === 'upstream' ? 'miss' : 'hit');
    if ((tag === null || pinnedTag) && !substituted && generation === s.policy.generation) {
      const ns = (req.query as Record<string, unknown>).ns;
      remembered.remember(req.url, { generation, route: r, ref, tag, reason: req.airlock.reason ?? 'pin', manifest: m, namespace: typeof ns === 'string' ? ns : null });
    }
    sendManifest(req, reply, m.digest, m.mediaType, m.bytes, head);
  };

  // platformManifest is distribution's answer for a tag of an index to a client that does not take it: a Docker
  // manifest list's linux/amd64 manifest, admitted as listed in the list; for an OCI index, MANIFEST_UNKNOWN.
  const platformManifest = async (req: FastifyRequest, r: Route, tag: string, index: StoredManifest): Promise<{ manifest: StoredManifest; source: Source }> => {
    if (index.mediaType === MEDIA.ociIndex) throw new RegistryError('MANIFEST_UNKNOWN', `${r.repository}:${tag} is an OCI index, and the Accept header does not take OCI indexes`);
    const child = defaultPlatform(index.bytes);
    if (child === null) throw new RegistryError('MANIFEST_UNKNOWN', `${r.repository}:${tag} is a manifest list without a linux/amd64 manifest, and the Accept header does not take manifest lists`);
    req.airlock.digest = child;
    const answer = await s.mirror.manifest(r, child);
    await admitManifest(req, r, child, tag);
    return answer;
  };

  const sendManifest = (req: FastifyRequest, reply: FastifyReply, digest: string, mediaType: string, bytes: Buffer, head: boolean): void => {
    reply.headers(manifestHeaders(digest, mediaType));
    if (notModified(req.headers['if-none-match'], digest)) {
      reply.code(304).send();
      return;
    }
    reply.header('content-length', bytes.length);
    req.airlock.bytes = head ? 0 : bytes.length;
    if (head) reply.send();
    else reply.send(bytes);
  };

  // signature serves airlock's own cosign signature of an admitted digest; the upstream's .sig is never passed through.
  // Asked for by its own digest (wanted), only the current signature is served: one replaced by re-signing is unknown.
  const signature = async (req: FastifyRequest, reply: FastifyReply, r: Route, digest: string, head: boolean, wanted: string | null = null): Promise<void> => {
    req.airlock.action = 'pull.signature';
    req.airlock.digest = digest;
    // A digest the repository does not hold has no airlock signature yet, and cosign verify IMAGE@<digest> (like an
    // admission controller checking a pod before its node pulls) asks for one before any pull: the manifest is fetched
    // as a pull would fetch it, then signed if admitted. A pinned digest, or one an index the repository holds lists, is
    // fetched once admitted. Any other is fetched before the policy is asked, so that a digest a client makes up ends at
    // the upstream's 404 before publisher signatures are looked for upstream; where no publisher covers the repository,
    // nothing could admit it, and the upstream is not asked at all. Nor is it for a layer (see isKnownBlob).
    if (s.content.holds(r.repository, digest) === null) {
      const known = s.policyStore.pinFor(r.repository, digest) !== null || s.content.parents(r.repository, digest, 'manifest').some((p) => !p.own);
      if (!known && (s.policy.candidates(r.repository).length === 0 || isKnownBlob(r, digest))) {
        req.airlock.decision = 'deny';
        throw new RegistryError('MANIFEST_UNKNOWN', `no airlock signature for ${r.repository}@${digest}`);
      }
      if (!known || (await s.policy.evaluate(r, digest)).admitted) await s.mirror.manifest(r, digest);
    }
    let d = await s.policy.evaluate(r, digest);
    // Admitted another way than the signature says (a pin deleted, a pin added), it is recorded and signed anew first:
    // the signature always says how the digest is admitted now. A digest not admitted opens no approval request here.
    if (d.admitted) d = await s.policy.admit(r, digest, { tag: null, actor: actor(req) });
    const adm = d.admitted ? s.policyStore.admission(r.repository, digest) : null;
    const m = adm?.signature && (wanted === null || adm.signature === wanted) ? s.content.manifest(adm.signature) : null;
    req.airlock.decision = m ? 'allow' : 'deny';
    req.airlock.reason = d.reason;
    if (!m) throw new RegistryError('MANIFEST_UNKNOWN', wanted === null ? `no airlock signature for ${r.repository}@${digest}` : `${r.repository}@${wanted} is not the current airlock signature of an admitted image`);
    req.airlock.source = 'local';
    sendManifest(req, reply, m.digest, m.mediaType, m.bytes, head);
  };

  const blob = async (req: FastifyRequest, reply: FastifyReply, name: string, digestRef: string, head: boolean): Promise<void> => {
    req.airlock.action = 'pull.blob';
    req.airlock.reference = digestRef;
    const r = route(req, reply, name);
    const digest = parseDigest(digestRef);
    req.airlock.digest = digest;
    const parent = await s.policy.blobParent(r, digest);
    if (parent === null) {
      req.airlock.decision = 'deny';
      req.airlock.reason = 'unknown';
      throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is not referenced by an admitted manifest of ${r.repository}`);
    }
    req.airlock.decision = 'allow';
    // The admitting manifest's descriptor says what the blob is and how big it must be.
    const declared = s.content.ref(parent, digest);
    const sizeHint = (): number | null => declared?.size ?? null;
    // A cached file of another size than the manifest declares is hashed again: one that no longer holds the blob (cut
    // short, or truncated on the disk since) is dropped and the blob fetched again. One that does is served as it is.
    const onDisk = s.blobs.size(digest);
    if (onDisk !== null && declared?.size != null && onDisk !== declared.size && !(await s.blobs.intact(digest))) {
      s.logger.warn({ digest, size: onDisk, declared: declared.size }, 'cached blob has the wrong size and content; dropped, to be fetched again');
      await s.blobs.remove(digest);
    }
    const cachedSize = s.mirror.blobSize(digest);
    const size = cachedSize ?? sizeHint();
    const etag = `"${digest}"`;
    reply
      .header('docker-content-digest', digest)
      .header('etag', etag)
      .header('accept-ranges', 'bytes')
      .header('cache-control', 'max-age=31536000')
      .header('content-type', declared?.mediaType ?? 'application/octet-stream')
      // A browser that opens a blob's URL saves it rather than showing it (REGISTRY_HEADERS says why).
      .header('content-disposition', 'attachment');
    if (notModified(req.headers['if-none-match'], digest)) {
      reply.code(304).send();
      return;
    }
    let range = null;
    // Range is defined for GET only (RFC 9110 §14.2): a HEAD answers as the whole blob's GET would, whatever it asks.
    // An If-Range that is not this blob's ETag (another one, or a date: airlock sends no Last-Modified) says the part
    // the client holds is of something else, so it gets the whole blob (§13.1.5).
    const ifRange = req.headers['if-range'];
    if (size !== null && !head && (ifRange === undefined || (typeof ifRange === 'string' && ifRange.trim() === etag))) {
      const parsed = parseRange(req.headers.range, size);
      if (parsed === 'invalid') {
        throw new RegistryError('RANGE_INVALID', `range "${truncate(req.headers.range ?? '')}" is not satisfiable for a blob of ${size} bytes`, null, { 'content-range': `bytes */${size}` });
      }
      range = parsed;
    }
    if (head) {
      if (cachedSize === null) {
        // Not cached: what the manifest says is no answer while the upstream may be down or lack the blob. Open it (one
        // download, shared with the GET that normally follows), then let the download finish in the background.
        const a = await s.mirror.openBlob(r, digest, null, sizeHint);
        a.body.close();
        if (a.size !== null) reply.header('content-length', a.size);
      } else {
        reply.header('content-length', size);
      }
      req.airlock.bytes = 0;
      reply.send();
      return;
    }
    const answer = await s.mirror.openBlob(r, digest, range, sizeHint);
    req.airlock.source = answer.source;
    s.metrics.cache.inc('blob', answer.source === 'upstream' ? 'miss' : 'hit');
    if (range) {
      reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`).header('content-length', range.end - range.start + 1);
    } else if (answer.size !== null) {
      reply.header('content-length', answer.size);
    }
    // sendBody counts the bytes the socket took into req.airlock.bytes: a client that leaves half way is logged and
    // counted with what it was sent, and an upstream that fails before the first byte sends none.
    await sendBody(reply, answer.body);
  };

  const tags = async (req: FastifyRequest, reply: FastifyReply, name: string): Promise<void> => {
    req.airlock.action = 'pull.tags';
    const r = route(req, reply, name);
    const q = req.query as Record<string, unknown>;
    let n: number | null = null;
    if (q.n !== undefined) {
      if (typeof q.n !== 'string' || !/^[0-9]{1,9}$/.test(q.n)) throw new RegistryError('PAGINATION_NUMBER_INVALID', 'n must be a non-negative whole number');
      n = Math.min(Number(q.n), TAGS_PAGE_MAX);
    }
    const last = typeof q.last === 'string' ? q.last : null;
    const candidates = new Map<string, string>();
    for (const t of s.content.tags(r.repository)) candidates.set(t.tag, t.digest);
    for (const p of s.policyStore.pins()) if (p.repository === r.repository && p.tag) candidates.set(p.tag, p.digest);
    const all: string[] = [];
    let decided = 0;
    for (const [tag, digest] of [...candidates].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
      if (last !== null && tag <= last) continue;
      // n + 1 admitted tags tell whether there is a next page: the rest of the list is not decided.
      if (n !== null && all.length > n) break;
      if ((await s.policy.evaluate(r, digest)).admitted) all.push(tag);
      // A repository can hold thousands of tags (any an upstream has, once asked for): they are decided in slices, and
      // other clients are answered in between.
      if (++decided % 100 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    const page = n === null ? all : all.slice(0, n);
    if (n !== null && n > 0 && all.length > n) {
      const base = `/v2/${name}/tags/list`;
      const params = new URLSearchParams({ n: String(n), last: page[page.length - 1] });
      if (typeof q.ns === 'string') params.set('ns', q.ns);
      reply.header('link', `<${base}?${params}>; rel="next"`);
    }
    req.airlock.decision = 'allow';
    reply.header('content-type', 'application/json').send(Buffer.from(JSON.stringify({ name, tags: page })));
  };

  const referrers = async (req: FastifyRequest, reply: FastifyReply, name: string, digestRef: string): Promise<void> => {
    req.airlock.action = 'pull.referrers';
    const r = route(req, reply, name);
    const digest = parseDigest(digestRef);
    req.airlock.digest = digest;
    const q = req.query as Record<string, unknown>;
    const artifactType = typeof q.artifactType === 'string' ? q.artifactType : null;
    const manifests: Record<string, unknown>[] = [];
    // Only a digest the repository holds has referrers here (see signature above).
    if (s.content.holds(r.repository, digest) !== null && (await s.policy.evaluate(r, digest)).admitted) {
      const adm = s.policyStore.admission(r.repository, digest);
      for (const ref of s.content.referrers(r.repository, digest)) {
        const own = s.content.holds(r.repository, ref.digest)?.own ?? false;
        if (own ? adm?.signature !== ref.digest : !(await s.policy.evaluate(r, ref.digest)).admitted) continue;
        const type = ref.artifactType ?? null;
        if (artifactType !== null && type !== artifactType) continue;
        const desc: Record<string, unknown> = { mediaType: ref.mediaType, digest: ref.digest, size: ref.size };
        if (type) desc.artifactType = type;
        const annotations = own ? null : readAnnotations(ref.bytes);
        if (annotations) desc.annotations = annotations;
        manifests.push(desc);
      }
    }
    if (artifactType !== null) reply.header('oci-filters-applied', 'artifactType');
    req.airlock.decision = 'allow';
    reply.header('content-type', MEDIA.ociIndex).send(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests })));
  };

  const dispatch = async (req: FastifyRequest, reply: FastifyReply, head: boolean): Promise<void> => {
    const p = parsePath(req.url);
    switch (p.kind) {
      case 'ping':
        req.airlock.action = 'registry.ping';
        reply.header('content-type', 'application/json').send(head ? undefined : Buffer.from('{}'));
        return;
      case 'catalog':
        throw new RegistryError('UNSUPPORTED', 'the catalog is not offered by this mirror', null, NO_METHODS);
      case 'manifest':
        return manifest(req, reply, p.name, p.ref, head);
      case 'blob':
        return blob(req, reply, p.name, p.digest, head);
      // For HEAD, Node sends the headers of the answer GET would get, Content-Length included, and no body.
      case 'tags':
        return tags(req, reply, p.name);
      case 'referrers':
        return referrers(req, reply, p.name, p.digest);
      case 'upload':
        throw new RegistryError('UNSUPPORTED', 'airlock is a read-only mirror: pushing is not supported', null, NO_METHODS);
    }
  };

  // Handlers return the reply: Fastify then waits for the stream instead of sending an empty body.
  const get = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    await dispatch(req, reply, false);
    return reply;
  };
  const head = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    await dispatch(req, reply, true);
    return reply;
  };
  app.get('/v2', get);
  app.get('/v2/*', get);
  app.head('/v2', head);
  app.head('/v2/*', head);
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
    app.route({
      method,
      url: '/v2/*',
      handler: async (req) => {
        req.airlock.action = 'registry.write';
        // Allow names what the resource takes (RFC 9110 §15.5.6): reads, except where only writes exist.
        let allow = READ_METHODS;
        try {
          const kind = parsePath(req.url).kind;
          if (kind === 'upload' || kind === 'catalog') allow = NO_METHODS;
        } catch {
          // A path that is no endpoint is refused the same way.
        }
        throw new RegistryError('UNSUPPORTED', 'airlock is a read-only mirror: pushing and deleting are not supported', null, allow);
      },
    });
  }
}

// READ_METHODS and NO_METHODS are the Allow headers of 405 answers.
const READ_METHODS: Readonly<Record<string, string>> = { allow: 'GET, HEAD' };
const NO_METHODS: Readonly<Record<string, string>> = { allow: '' };

function readAnnotations(bytes: Buffer): Record<string, string> | null {
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { annotations?: unknown };
    return doc.annotations && typeof doc.annotations === 'object' ? (doc.annotations as Record<string, string>) : null;
  } catch {
    return null;
  }
}

