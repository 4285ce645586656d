// Publisher signatures found upstream: cosign's legacy sha256-<hex>.sig simple-signing manifests, and cosign v3's
// sigstore bundles (a DSSE-signed in-toto statement) attached to the image as OCI 1.1 referrers.
import type { KeyObject } from 'node:crypto';
import type { PolicyStore, Publisher } from '../../storage/policy.js';
import { header, readLimited, type Upstream } from '../mirror/upstream.js';
import { isSha256Digest, parseCanonicalReference, sameRepository, type Route } from '../registry/names.js';
import { parsePayload, parseSignatureManifest, sha256Digest, sigTag, verifyPayloadSignature } from '../signing/cosign.js';
import { keyFingerprint, parsePublicKey } from '../signing/key.js';
import type { PublisherVerifier } from './policy.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const BUNDLE_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const EMPTY_TYPE = 'application/vnd.oci.empty.v1+json';
const IN_TOTO = 'application/vnd.in-toto+json';
const STATEMENT_TYPES = new Set(['https://in-toto.io/Statement/v1', 'https://in-toto.io/Statement/v0.1']);
// cosign v3 writes signatures and attestations as the same referrer type; only this predicate is a signature.
const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

const MANIFEST_LIMIT = 4 * 1024 * 1024;
// A bundle's referrer manifest holds one layer (about 1 KiB): 32 of them at MANIFEST_LIMIT would be 128 MiB a look-up.
const BUNDLE_MANIFEST_LIMIT = 64 * 1024;
const PAYLOAD_LIMIT = 64 * 1024;
const BUNDLE_LIMIT = 1024 * 1024;
// A hostile upstream could list thousands of signatures; real images carry a handful.
const MAX_PAYLOADS = 32;
const MAX_BUNDLES = 32;
const NEGATIVE_TTL_MS = 10 * 60 * 1000;
const MAX_REMEMBERED = 10_000;

const NOT_FOUND: ReadonlySet<number> = new Set([404]);
const NO_REFERRERS_API: ReadonlySet<number> = new Set([400, 404, 405]);

// splitPublicKeys parses every "PUBLIC KEY" PEM block of a publisher's key text; it throws when none is usable.
export function splitPublicKeys(pem: string): KeyObject[] {
  const blocks = pem.match(/-----BEGIN PUBLIC KEY-----\r?\n[\s\S]*?-----END PUBLIC KEY-----/g) ?? [];
  const keys: KeyObject[] = [];
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const block of blocks) {
    try {
      const key = parsePublicKey(block);
      const fingerprint = keyFingerprint(key);
      if (!seen.has(fingerprint)) keys.push(key);
      seen.add(fingerprint);
    } catch (err) {
      problems.push(errorText(err));
    }
  }
  if (keys.length === 0) {
    throw new Error(
      blocks.length === 0
        ? 'publisher key: no "-----BEGIN PUBLIC KEY-----" PEM block found'
        : `publisher key: none of its ${blocks.length} PUBLIC KEY blocks is usable (${problems.join('; ')})`,
    );
  }
  return keys;
}

// publisherFingerprints are the fingerprints of every key in a publisher's key text, in order.
export function publisherFingerprints(pem: string): string[] {
  return splitPublicKeys(pem).map(keyFingerprint);
}

// publisherKeys is what airlock keeps of a publisher's key text: its usable public keys, written out again as PEM, and
// their fingerprints. Nothing else of the text is kept or shown (a private key pasted with the public one, say).
export function publisherKeys(pem: string): { publicKey: string; fingerprint: string } {
  const keys = splitPublicKeys(pem);
  return { publicKey: keys.map((k) => k.export({ type: 'spki', format: 'pem' }) as string).join(''), fingerprint: keys.map(keyFingerprint).join(',') };
}

// A message some upstream artifact claims names (repository, digest), with the signatures over it to try.
interface Signed {
  message: Buffer;
  signatures: string[];
}

interface Evidence {
  signed: Signed[];
  complete: boolean;
}

interface Lookup {
  upstream: Upstream;
  route: Route;
  host: string;
  digest: string;
  problems: string[];
}

interface PublisherKey {
  key: KeyObject;
  fingerprint: string;
}

// UpstreamSignatureVerifier checks candidate publishers' keys against the signatures the upstream holds for a digest;
// results are kept per key fingerprint, refusals only for ten minutes, since a publisher may sign later.
export class UpstreamSignatureVerifier implements PublisherVerifier {
  private readonly upstreams: ReadonlyMap<string, Upstream>;
  private readonly store: PolicyStore;
  private readonly log: { warn(obj: object, msg: string): void };
  private readonly now: () => number;
  private readonly negatives = new Map<string, number>();
  private readonly keys = new Map<string, PublisherKey[]>();
  private readonly inflight = new Map<string, Promise<Evidence>>();

  constructor(
    upstreams: ReadonlyMap<string, Upstream>,
    store: PolicyStore,
    log: { warn(obj: object, msg: string): void },
    options: { now?: () => number } = {},
  ) {
    this.upstreams = upstreams;
    this.store = store;
    this.log = log;
    this.now = options.now ?? Date.now;
  }

  // verify returns the first candidate key (in the given order) with a valid signature of digest for the route's repository.
  async verify(route: Route, digest: string, candidates: Publisher[]): Promise<{ name: string; fingerprint: string } | null> {
    if (!isSha256Digest(digest)) return null;
    const pending: { name: string; key: PublisherKey }[] = [];
    for (const publisher of candidates) {
      for (const key of this.keysOf(publisher)) {
        const cached = this.store.signatureCheck(route.repository, digest, key.fingerprint);
        if (cached === true) return { name: publisher.name, fingerprint: key.fingerprint };
        if (cached === false && this.recentlyRefused(route.repository, digest, key.fingerprint)) continue;
        pending.push({ name: publisher.name, key });
      }
    }
    if (pending.length === 0) return null;
    const upstream = this.upstreams.get(route.upstream);
    if (!upstream) {
      this.log.warn({ repo: route.repository, digest, upstream: route.upstream }, 'no upstream configured for this repository; cannot look for publisher signatures');
      return null;
    }
    const evidence = await this.evidence(upstream, route, digest);
    let found: { name: string; fingerprint: string } | null = null;
    for (const { name, key } of pending) {
      const verified = evidence.signed.some((s) => s.signatures.some((sig) => verifyPayloadSignature(key.key, s.message, sig)));
      const remembered = `${route.repository}@${digest} ${key.fingerprint}`;
      if (verified) {
        this.store.saveSignatureCheck(route.repository, digest, key.fingerprint, true);
        this.negatives.delete(remembered);
        found ??= { name, fingerprint: key.fingerprint };
      } else if (evidence.complete) {
        this.store.saveSignatureCheck(route.repository, digest, key.fingerprint, false);
        this.rememberRefusal(remembered);
      }
    }
    return found;
  }

  private keysOf(publisher: Publisher): PublisherKey[] {
    let keys = this.keys.get(publisher.publicKey);
    if (!keys) {
      try {
        keys = splitPublicKeys(publisher.publicKey).map((key) => ({ key, fingerprint: keyFingerprint(key) }));
      } catch (err) {
        this.log.warn({ publisher: publisher.name, err: errorText(err) }, 'publisher has no usable public key; skipping it');
        keys = [];
      }
      if (this.keys.size >= 256) this.keys.clear();
      this.keys.set(publisher.publicKey, keys);
    }
    return keys;
  }

  private recentlyRefused(repository: string, digest: string, fingerprint: string): boolean {
    const at = this.negatives.get(`${repository}@${digest} ${fingerprint}`);
    return at !== undefined && this.now() - at < NEGATIVE_TTL_MS;
  }

  // rememberRefusal notes a refusal; past MAX_REMEMBERED the oldest is forgotten (entries go in in time order), so the
  // map never grows past its bound and no insert scans it.
  private rememberRefusal(remembered: string): void {
    this.negatives.delete(remembered);
    if (this.negatives.size >= MAX_REMEMBERED) this.negatives.delete(this.negatives.keys().next().value as string);
    this.negatives.set(remembered, this.now());
  }

  // evidence fetches the upstream's signatures of digest once, however many callers ask at the same time.
  private evidence(upstream: Upstream, route: Route, digest: string): Promise<Evidence> {
    const key = `${route.upstream}/${route.path}@${digest}`;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.gather({ upstream, route, host: new URL(upstream.origin).host, digest, problems: [] }).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private async gather(lookup: Lookup): Promise<Evidence> {
    const [legacy, bundles] = await Promise.all([this.legacySignatures(lookup), this.bundleSignatures(lookup)]);
    const complete = lookup.problems.length === 0;
    if (!complete) {
      this.log.warn(
        { repo: lookup.route.repository, digest: lookup.digest, upstream: lookup.route.upstream, err: lookup.problems.join('; ') },
        'could not read every publisher signature upstream; refusals are not cached',
      );
    }
    return { signed: [...legacy, ...bundles], complete };
  }

  // legacySignatures reads the sha256-<hex>.sig manifest and keeps the payloads that name the route's repository and digest.
  private async legacySignatures(lookup: Lookup): Promise<Signed[]> {
    const manifest = await this.get(lookup, `/v2/${lookup.route.path}/manifests/${sigTag(lookup.digest)}`, OCI_MANIFEST, MANIFEST_LIMIT, NOT_FOUND);
    if (!Buffer.isBuffer(manifest)) return [];
    let layers: ReturnType<typeof parseSignatureManifest>;
    try {
      layers = parseSignatureManifest(manifest);
    } catch {
      return [];
    }
    const byPayload = new Map<string, string[]>();
    for (const layer of layers) {
      if (!isSha256Digest(layer.payloadDigest)) continue;
      byPayload.set(layer.payloadDigest, [...(byPayload.get(layer.payloadDigest) ?? []), layer.signature]);
    }
    const signed = await Promise.all(
      [...byPayload].slice(0, MAX_PAYLOADS).map(async ([payloadDigest, signatures]) => {
        const payload = await this.blob(lookup, payloadDigest, PAYLOAD_LIMIT);
        return payload && payloadNames(payload, lookup) ? { message: payload, signatures } : null;
      }),
    );
    return signed.filter((s): s is Signed => s !== null);
  }

  // bundleSignatures reads the referrers (or, without that API, the sha256-<hex> referrers tag) for sigstore bundles.
  private async bundleSignatures(lookup: Lookup): Promise<Signed[]> {
    const path = lookup.route.path;
    let index = await this.get(lookup, `/v2/${path}/referrers/${lookup.digest}`, OCI_INDEX, MANIFEST_LIMIT, NO_REFERRERS_API);
    if (index === 'absent') index = await this.get(lookup, `/v2/${path}/manifests/${lookup.digest.replace(':', '-')}`, OCI_INDEX, MANIFEST_LIMIT, NOT_FOUND);
    if (!Buffer.isBuffer(index)) return [];
    const signed = await Promise.all(bundleReferrers(index).slice(0, MAX_BUNDLES).map((d) => this.bundle(lookup, d)));
    return signed.filter((s): s is Signed => s !== null);
  }

  private async bundle(lookup: Lookup, referrer: string): Promise<Signed | null> {
    const manifest = await this.get(lookup, `/v2/${lookup.route.path}/manifests/${referrer}`, OCI_MANIFEST, BUNDLE_MANIFEST_LIMIT, NOT_FOUND);
    if (!Buffer.isBuffer(manifest) || sha256Digest(manifest) !== referrer) return null;
    const layer = bundleLayer(manifest);
    const bundle = layer ? await this.blob(lookup, layer, BUNDLE_LIMIT) : null;
    return bundle ? dsseSigned(bundle, lookup) : null;
  }

  // blob fetches a blob and returns it only when its bytes match the digest.
  private async blob(lookup: Lookup, digest: string, limit: number): Promise<Buffer | null> {
    const bytes = await this.get(lookup, `/v2/${lookup.route.path}/blobs/${digest}`, null, limit, NOT_FOUND);
    return Buffer.isBuffer(bytes) && sha256Digest(bytes) === digest ? bytes : null;
  }

  // get returns a 200's body, 'absent' for the statuses that mean "none here", or null for anything unusable;
  // upstream failures (unreachable, 5xx, refused access) are noted so that no refusal is cached from a partial view.
  private async get(lookup: Lookup, urlPath: string, accept: string | null, limit: number, absent: ReadonlySet<number>): Promise<Buffer | 'absent' | null> {
    try {
      const res = await lookup.upstream.fetch('GET', urlPath, lookup.route.path, accept ? { accept } : {});
      if (res.status === 200) return await readLimited(res.body, limit, header(res.headers, 'content-length'));
      res.body.resume();
      if (absent.has(res.status)) return 'absent';
      lookup.problems.push(`HTTP ${res.status} for ${urlPath}`);
    } catch (err) {
      lookup.problems.push(errorText(err));
    }
    return null;
  }
}

// payloadNames tells whether a simple-signing payload names the lookup's digest and repository.
function payloadNames(payload: Buffer, lookup: Lookup): boolean {
  try {
    const claim = parsePayload(payload);
    return claim.digest === lookup.digest && referenceNames(claim.reference, lookup);
  } catch {
    return false;
  }
}

// referenceNames tells whether a signed reference names the lookup's repository, as airlock names it or as the publisher
// pushed it (the upstream's own host, e.g. 127.0.0.1:5000/library/busybox); Docker Hub spellings fold.
function referenceNames(reference: string, lookup: Lookup): boolean {
  try {
    const ref = parseCanonicalReference(reference);
    if (ref.digest !== null && ref.digest !== lookup.digest) return false;
    return sameRepository(ref.repository, lookup.route.repository) || sameRepository(ref.repository, `${lookup.host}/${lookup.route.path}`);
  } catch {
    return false;
  }
}

// bundleReferrers lists an OCI index's candidate bundle manifests, bundles first; go-containerregistry's referrers-tag
// fallback lists them with the config's artifactType (application/vnd.oci.empty.v1+json), so those are read too.
function bundleReferrers(index: Buffer): string[] {
  const doc = parseJson(index);
  if (!isRecord(doc) || !Array.isArray(doc.manifests)) return [];
  const entries = doc.manifests.filter(isRecord).filter((m) => typeof m.digest === 'string' && isSha256Digest(m.digest));
  const bundles = entries.filter((m) => m.artifactType === BUNDLE_TYPE);
  const untyped = entries.filter((m) => m.artifactType === undefined || m.artifactType === EMPTY_TYPE);
  return [...bundles, ...untyped].map((m) => m.digest as string);
}

// bundleLayer is the digest of a bundle manifest's bundle layer.
function bundleLayer(manifest: Buffer): string | null {
  const doc = parseJson(manifest);
  if (!isRecord(doc) || !Array.isArray(doc.layers)) return null;
  const layer = doc.layers.filter(isRecord).find((l) => l.mediaType === BUNDLE_TYPE);
  return layer && typeof layer.digest === 'string' && isSha256Digest(layer.digest) ? layer.digest : null;
}

// dsseSigned reads a sigstore bundle's DSSE envelope; it yields the envelope's PAE and signatures when the in-toto
// statement is a cosign signature whose subject is the digest (and, when the subject has a name, names the repository).
// Key trust only: transparency-log entries are not required.
function dsseSigned(bundle: Buffer, lookup: Lookup): Signed | null {
  const doc = parseJson(bundle);
  if (!isRecord(doc) || typeof doc.mediaType !== 'string' || !doc.mediaType.startsWith('application/vnd.dev.sigstore.bundle')) return null;
  const envelope = doc.dsseEnvelope;
  if (!isRecord(envelope) || envelope.payloadType !== IN_TOTO || typeof envelope.payload !== 'string' || !Array.isArray(envelope.signatures)) return null;
  const body = Buffer.from(envelope.payload, 'base64');
  const statement = parseJson(body);
  const names =
    isRecord(statement) &&
    typeof statement._type === 'string' &&
    STATEMENT_TYPES.has(statement._type) &&
    statement.predicateType === COSIGN_SIGN_PREDICATE &&
    Array.isArray(statement.subject) &&
    statement.subject.some((subject) => subjectNames(subject, lookup));
  if (!names) return null;
  const signatures = envelope.signatures.flatMap((s) => (isRecord(s) && typeof s.sig === 'string' ? [s.sig] : []));
  // DSSE's pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body, lengths in bytes.
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${Buffer.byteLength(IN_TOTO)} ${IN_TOTO} ${body.length} `), body]);
  return signatures.length > 0 ? { message: pae, signatures } : null;
}

// subjectNames tells whether an in-toto subject is the lookup's digest; cosign v3's sign leaves the name out, attest fills it.
function subjectNames(subject: unknown, lookup: Lookup): boolean {
  if (!isRecord(subject) || !isRecord(subject.digest) || `sha256:${String(subject.digest.sha256)}` !== lookup.digest) return false;
  return subject.name === undefined || subject.name === '' || (typeof subject.name === 'string' && referenceNames(subject.name, lookup));
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
