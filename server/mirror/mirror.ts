// Mirror is the content source behind the registry routes: the local store first, else the upstream, whose
// bytes are verified against their digest before anything is stored or served (distribution's proxy stores, as one).
import crypto from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type { BlobStore } from '../../storage/blobs.js';
import { DigestMismatchError } from '../../storage/blobs.js';
import { type BlobBody, bufferBody } from '../../storage/chunks.js';
import type { ContentStore, StoredManifest } from '../../storage/content.js';
import { RegistryError } from '../errors.js';
import { acceptsIndexes, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, parseManifest, upstreamAccept } from '../registry/manifest.js';
import type { Route } from '../registry/names.js';
import { type Download, followWriter, Inflight } from './inflight.js';
import { discard, header, readLimited, type Upstream, upstreamFailure } from './upstream.js';

const HOT_MANIFEST_BYTES = 32 * 1024 * 1024;
const HOT_MANIFEST_MAX = 256 * 1024;

// Source says where served content came from.
export type Source = 'cache' | 'upstream' | 'local';

// MirrorEvents reports what an operator and the audit log must know about upstream content.
export interface MirrorEvents {
  fault(e: { upstream: string; repository: string; digest: string | null; kind: 'digest_mismatch' | 'transfer_failed' | 'manifest_invalid'; message: string }): void;
  cached(e: { upstream: string; repository: string; digest: string; bytes: number }): void;
}

// BlobAnswer is an opened blob: a body of [start, end] (end null while the size is unknown) and the total size.
export interface BlobAnswer {
  body: BlobBody;
  size: number | null;
  source: Source;
}

// TagAnswer is what a tag resolved to and how fresh that is.
export interface TagAnswer {
  digest: string;
  source: 'upstream' | 'stale';
}

// Mirror serves manifests and blobs from the store, filling it from upstreams on demand.
export class Mirror {
  private readonly content: ContentStore;
  private readonly blobs: BlobStore;
  private readonly upstreams: ReadonlyMap<string, Upstream>;
  private readonly events: MirrorEvents;
  readonly inflight = new Inflight();
  private readonly manifestFlights = new Map<string, Promise<StoredManifest>>();
  private readonly hot = new Map<string, StoredManifest>();
  private hotBytes = 0;

  constructor(content: ContentStore, blobs: BlobStore, upstreams: ReadonlyMap<string, Upstream>, events: MirrorEvents) {
    this.content = content;
    this.blobs = blobs;
    this.upstreams = upstreams;
    this.events = events;
  }

  private upstream(route: Route): Upstream {
    const u = this.upstreams.get(route.upstream);
    if (!u) throw new RegistryError('NAME_UNKNOWN', `no upstream named ${route.upstream}`);
    return u;
  }

  // localManifest returns a manifest the route's repository holds: one fetched from its upstream (or made by airlock).
  // The same digest fetched through another repository does not count: this repository's upstream must have it, or an
  // approval request and a signature would name a repository that never held the image. Manifests are immutable by
  // digest, so the ones served recently are kept in memory too.
  localManifest(route: Route, digest: string): StoredManifest | null {
    const key = `${route.repository}@${digest}`;
    const hot = this.hot.get(key);
    if (hot) return hot;
    if (!this.content.holds(route.repository, digest)) return null;
    const m = this.content.manifest(digest);
    if (!m) return null;
    this.remember(key, m);
    return m;
  }

  private remember(key: string, m: StoredManifest): void {
    if (m.size > HOT_MANIFEST_MAX) return;
    this.hot.set(key, m);
    this.hotBytes += m.size;
    for (const [k, v] of this.hot) {
      if (this.hotBytes <= HOT_MANIFEST_BYTES) break;
      this.hot.delete(k);
      this.hotBytes -= v.size;
    }
  }

  // manifest returns the manifest with digest: from the store, else fetched, verified and stored (one fetch per digest at a time).
  async manifest(route: Route, digest: string): Promise<{ manifest: StoredManifest; source: Source }> {
    const local = this.localManifest(route, digest);
    if (local) return { manifest: local, source: 'cache' };
    const key = `${route.repository}@${digest}`;
    let flight = this.manifestFlights.get(key);
    if (!flight) {
      flight = this.fetchManifest(route, digest, MANIFEST_ACCEPT).finally(() => this.manifestFlights.delete(key));
      this.manifestFlights.set(key, flight);
    }
    return { manifest: await flight, source: 'upstream' };
  }

  // resolveTag asks the upstream what a tag points at (HEAD first, to spare rate limits); when the upstream cannot
  // answer, the digest it last resolved to is used. The client's Accept goes along, as upstreamAccept makes it: a client
  // that takes no index gets one platform's manifest from the upstream, as it would directly, and that answer is not what
  // the tag points at for everyone else, so only an answer to an Accept that takes indexes is kept as the tag's digest.
  async resolveTag(route: Route, tag: string, accept: string | null): Promise<TagAnswer> {
    const upstream = this.upstream(route);
    const urlPath = `/v2/${route.path}/manifests/${tag}`;
    const keep = accept === null || acceptsIndexes(accept);
    const asked = accept === null ? MANIFEST_ACCEPT : upstreamAccept(accept);
    try {
      const head = await upstream.fetch('HEAD', urlPath, route.path, { accept: asked });
      head.body.resume();
      if (head.status === 200) {
        const digest = header(head.headers, 'docker-content-digest');
        if (digest && /^sha256:[a-f0-9]{64}$/.test(digest)) {
          if (keep) this.content.setTag(route.repository, tag, digest);
          return { digest, source: 'upstream' };
        }
        const m = await this.fetchManifest(route, tag, asked);
        if (keep) this.content.setTag(route.repository, tag, m.digest);
        return { digest: m.digest, source: 'upstream' };
      }
      throw upstreamFailure(upstream.name, head, 'manifest', `${route.repository}:${tag}`);
    } catch (err) {
      const known = this.content.tag(route.repository, tag);
      if (known && err instanceof RegistryError && (err.code === 'UNAVAILABLE' || err.code === 'TOOMANYREQUESTS')) {
        return { digest: known, source: 'stale' };
      }
      throw err;
    }
  }

  // learnTagIndex fetches and stores what a tag points at for clients that take indexes, when that is not digest (the
  // platform manifest a client without index support was given): policy then knows that digest is listed in the
  // index, which may be admitted. An upstream that cannot tell leaves things as they were.
  async learnTagIndex(route: Route, tag: string, digest: string): Promise<void> {
    try {
      const full = await this.resolveTag(route, tag, null);
      if (full.digest !== digest) await this.manifest(route, full.digest);
    } catch {
      // The refusal that follows says what is known.
    }
  }

  // peekTag asks the upstream for a tag's digest without fetching the manifest (for drift checks); null when it cannot tell.
  async peekTag(route: Route, tag: string): Promise<string | null> {
    try {
      const head = await this.upstream(route).fetch('HEAD', `/v2/${route.path}/manifests/${tag}`, route.path, { accept: MANIFEST_ACCEPT });
      head.body.resume();
      const digest = header(head.headers, 'docker-content-digest');
      return head.status === 200 && digest && /^sha256:[a-f0-9]{64}$/.test(digest) ? digest : null;
    } catch {
      return null;
    }
  }

  // fetchManifest GETs a manifest by tag or digest, checks its digest over the exact bytes and stores it.
  private async fetchManifest(route: Route, ref: string, accept: string): Promise<StoredManifest> {
    const upstream = this.upstream(route);
    const res = await upstream.fetch('GET', `/v2/${route.path}/manifests/${ref}`, route.path, { accept });
    if (res.status !== 200) throw upstreamFailure(upstream.name, res, 'manifest', `${route.repository}${ref.includes(':') ? '@' : ':'}${ref}`);
    let bytes: Buffer | null;
    try {
      bytes = await readLimited(res.body, MAX_MANIFEST_BYTES, header(res.headers, 'content-length'));
    } catch (err) {
      // The upstream cut the body off or went quiet past the read timeout: it is down for this manifest, as when it
      // does not answer at all, so a tag it last resolved is still served from what is known.
      const message = `manifest ${route.repository}${ref.includes(':') ? '@' : ':'}${ref} from ${upstream.name}: ${(err as Error).message}`;
      this.events.fault({ upstream: upstream.name, repository: route.repository, digest: ref.startsWith('sha256:') ? ref : null, kind: 'transfer_failed', message });
      throw new RegistryError('UNAVAILABLE', `upstream ${upstream.name} stopped sending the manifest ${ref} (${(err as { code?: string }).code ?? (err as Error).name}); nothing was stored`);
    }
    if (bytes === null) throw new RegistryError('MANIFEST_INVALID', `manifest from ${upstream.name} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    const digest = `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
    const announced = header(res.headers, 'docker-content-digest');
    const expected = ref.startsWith('sha256:') ? ref : announced && announced.startsWith('sha256:') ? announced : digest;
    if (digest !== expected) {
      const message = `manifest ${route.repository}@${expected} from ${upstream.name}: bytes hash to ${digest}`;
      this.events.fault({ upstream: upstream.name, repository: route.repository, digest: expected, kind: 'digest_mismatch', message });
      throw new RegistryError('UNAVAILABLE', `upstream ${upstream.name} sent a manifest whose bytes do not match its digest; nothing was stored`);
    }
    let parsed;
    try {
      parsed = parseManifest(bytes, header(res.headers, 'content-type') ?? null);
    } catch (err) {
      this.events.fault({ upstream: upstream.name, repository: route.repository, digest, kind: 'manifest_invalid', message: (err as Error).message });
      throw err;
    }
    const manifest: StoredManifest = { digest, mediaType: parsed.mediaType, size: bytes.length, bytes };
    this.content.saveManifest(route.repository, manifest, parsed.refs, parsed.subject, parsed.artifactType);
    return manifest;
  }

  // blobSize is a blob's size when known locally (cache, or a blob airlock made), else null.
  blobSize(digest: string): number | null {
    const cached = this.blobs.size(digest);
    if (cached !== null) return cached;
    const local = this.content.localBlob(digest);
    return local ? local.bytes.length : null;
  }

  // openBlob opens [start, end] of a blob: cached, made by airlock, or streamed from the upstream while it is cached.
  async openBlob(route: Route, digest: string, range: { start: number; end: number } | null, sizeHint: () => number | null): Promise<BlobAnswer> {
    const cached = this.blobs.size(digest);
    if (cached !== null) {
      const body = this.blobs.open(digest, range?.start ?? 0, range?.end);
      if (body) return { body, size: cached, source: 'cache' };
    }
    const local = this.content.localBlob(digest);
    if (local) {
      const bytes = range ? local.bytes.subarray(range.start, range.end + 1) : local.bytes;
      return { body: bufferBody(bytes), size: local.bytes.length, source: 'local' };
    }
    const start = (): Promise<Download> => this.startDownload(route, digest, sizeHint());
    const joined = this.inflight.join(route.repository, digest, start);
    let d: Download;
    try {
      d = await joined.download;
    } catch (err) {
      // A download another repository started failed before it began (its upstream down, hung, or refusing that
      // repository): this repository's own source may well have the blob, so it is asked once.
      if (joined.source === route.repository) throw err;
      d = await this.inflight.join(route.repository, digest, start).download;
    }
    if (range && d.size === null) {
      await d.done;
      return this.openBlob(route, digest, range, sizeHint);
    }
    return { body: followWriter(d.writer, range?.start ?? 0, range ? range.end : d.size === null ? null : d.size - 1), size: d.size, source: 'upstream' };
  }

  // startDownload GETs a blob from the upstream and writes it to the cache, detached from the client that asked.
  private async startDownload(route: Route, digest: string, sizeHint: number | null): Promise<Download> {
    const upstream = this.upstream(route);
    const res = await upstream.fetch('GET', `/v2/${route.path}/blobs/${digest}`, route.path);
    if (res.status !== 200) throw upstreamFailure(upstream.name, res, 'blob', `${route.repository}@${digest}`);
    const length = header(res.headers, 'content-length');
    let size = length !== undefined && /^[0-9]+$/.test(length) ? Number(length) : null;
    if (size !== null && sizeHint !== null && size !== sizeHint) {
      discard(res);
      const message = `blob ${digest} from ${upstream.name} is ${size} bytes, the manifest says ${sizeHint}`;
      this.events.fault({ upstream: upstream.name, repository: route.repository, digest, kind: 'digest_mismatch', message });
      throw new RegistryError('UNAVAILABLE', `upstream ${upstream.name} sent a blob of the wrong size; nothing was stored`);
    }
    size ??= sizeHint;
    let writer;
    try {
      writer = this.blobs.createWriter(digest, size);
    } catch (err) {
      // The upstream's answer is let go at once: left unread, it would hold one of the upstream's connections.
      discard(res);
      throw new RegistryError('UNAVAILABLE', `blob ${digest} cannot be cached here (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); nothing was stored`);
    }
    const done = (async () => {
      try {
        await pipeline(res.body, writer);
        await writer.commit();
        this.events.cached({ upstream: upstream.name, repository: route.repository, digest, bytes: writer.written });
      } catch (err) {
        await writer.abort(err as Error);
        const mismatch = err instanceof DigestMismatchError;
        this.events.fault({
          upstream: upstream.name,
          repository: route.repository,
          digest,
          kind: mismatch ? 'digest_mismatch' : 'transfer_failed',
          message: (err as Error).message,
        });
        throw err;
      }
    })();
    done.catch(() => {});
    return { digest, size, writer, done };
  }
}
