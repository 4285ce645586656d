// Verification of publisher signatures by UpstreamSignatureVerifier over an Upstream, with a real SQLite policy store.
// Legacy cosign `.sig` signatures are published by PUT (blobs, then the manifest under its sha256-<hex>.sig tag) to
// the real CNCF registry (docker-registry 2.8), which also shows how a registry without a referrers API answers; its
// access log counts the requests the verifier makes. An in-process fake upstream serves only what the real one cannot:
// sigstore bundles as OCI 1.1 referrers (distribution 2.8 has no referrers API), a payload blob whose bytes do not
// match its digest, a 500, malformed and oversized manifests.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Upstream } from '../server/mirror/upstream.js';
import { publisherFingerprints, splitPublicKeys, UpstreamSignatureVerifier } from '../server/policy/publishers.js';
import type { Route } from '../server/registry/names.js';
import { buildPayload, buildSignatureArtifact, sha256Digest, sigTag, signPayload } from '../server/signing/cosign.js';
import { keyFingerprint } from '../server/signing/key.js';
import { openDatabase } from '../storage/db.js';
import { createPolicyStore, type PolicyStore, type Publisher } from '../storage/policy.js';
import { stopAll, track } from './harness/proc.js';
import { pushLegacySignature } from './harness/cosign.js';
import { type Registry, startRegistry } from './harness/registry.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const BUNDLE_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const IN_TOTO = 'application/vnd.in-toto+json';
const SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-publishers-'));
// reg is the real registry every legacy-signature case publishes to (each under digests of its own).
let reg: Registry;
before(async () => {
  reg = track(await startRegistry({ dir: path.join(tmp, 'registry'), accessLog: true }));
});
after(async () => {
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Answer {
  status: number;
  type: string;
  body: Buffer;
}

// FakeUpstream serves fixed answers by path (404 otherwise) and counts the requests it gets.
class FakeUpstream {
  readonly answers = new Map<string, Answer>();
  readonly requests: string[] = [];
  private readonly server = http.createServer((req, res) => {
    const url = req.url ?? '';
    this.requests.push(url);
    const a = this.answers.get(url) ?? { status: 404, type: 'application/json', body: Buffer.from('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}') };
    res.writeHead(a.status, { 'content-type': a.type, 'content-length': a.body.length });
    res.end(a.body);
  });

  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  set(urlPath: string, body: Buffer, type = 'application/octet-stream', status = 200): void {
    this.answers.set(urlPath, { status, type, body });
  }
}

interface Setup {
  fake: FakeUpstream;
  port: number;
  store: PolicyStore;
  verifier: UpstreamSignatureVerifier;
  warnings: string[];
  clock: { now: number };
}

let caseCount = 0;

// verifierFor makes a verifier over a fresh SQLite policy store, with upstreamName served by the given upstream.
function verifierFor(t: TestContext, upstreamName: string, upstream: Upstream): Omit<Setup, 'fake' | 'port'> {
  caseCount += 1;
  const db = openDatabase(path.join(tmp, `case-${caseCount}`));
  const store = createPolicyStore(db);
  const warnings: string[] = [];
  const clock = { now: Date.parse('2030-01-01T00:00:00Z') };
  const verifier = new UpstreamSignatureVerifier(new Map([[upstreamName, upstream]]), store, { warn: (_obj, msg) => warnings.push(msg) }, { now: () => clock.now });
  t.after(async () => {
    await upstream.close();
    db.close();
  });
  return { store, verifier, warnings, clock };
}

// setupReal makes a verifier whose upstreamName is the real registry, over TLS with the registry's CA.
function setupReal(t: TestContext, upstreamName = 'docker.io'): Omit<Setup, 'fake' | 'port'> {
  const upstream = new Upstream(
    { name: upstreamName, url: reg.url, username: null, password: null, ca: reg.caPath, insecure: false, connectTimeoutMs: 2000, readTimeoutMs: 5000 },
    { exchange() {}, breaker() {} },
  );
  return verifierFor(t, upstreamName, upstream);
}

// readsOfRegistry counts the GETs and HEADs the real registry has answered (publishing is POSTs and PUTs), once every
// request already answered is in its access log.
async function readsOfRegistry(): Promise<number> {
  await reg.settle();
  return reg.requests().filter((e) => e.method === 'GET' || e.method === 'HEAD').length;
}

// setup starts a fake upstream registered under upstreamName, and a verifier over a fresh SQLite policy store.
async function setup(t: TestContext, upstreamName = 'docker.io'): Promise<Setup> {
  const fake = new FakeUpstream();
  const port = await fake.start();
  const upstream = new Upstream(
    { name: upstreamName, url: `http://127.0.0.1:${port}`, username: null, password: null, ca: null, insecure: true, connectTimeoutMs: 2000, readTimeoutMs: 5000 },
    { exchange() {}, breaker() {} },
  );
  t.after(() => fake.stop());
  return { fake, port, ...verifierFor(t, upstreamName, upstream) };
}

function keyPair(type: 'ec' | 'ed25519' = 'ec'): { privateKey: KeyObject; publicPem: string; fingerprint: string } {
  const { privateKey, publicKey } = type === 'ec' ? crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : crypto.generateKeyPairSync('ed25519');
  return { privateKey, publicPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(), fingerprint: keyFingerprint(publicKey) };
}

function publisher(name: string, publicKey: string, repositories = ['**']): Publisher {
  return { name, publicKey, fingerprint: publisherFingerprints(publicKey)[0], repositories, source: 'api', createdBy: null, createdAt: '2030-01-01T00:00:00.000Z' };
}

function randomDigest(): string {
  return sha256Digest(crypto.randomBytes(32));
}

const alpine: Route = { upstream: 'docker.io', path: 'library/alpine', repository: 'docker.io/library/alpine' };

// publishLegacy stores a cosign .sig manifest and its blobs at the fake, as cosign sign --tlog-upload=false pushes them.
function publishLegacy(fake: FakeUpstream, route: Route, digest: string, entries: { payload: Buffer; signature: string }[]): void {
  const artifact = buildSignatureArtifact(entries);
  fake.set(`/v2/${route.path}/manifests/${sigTag(digest)}`, artifact.manifest, OCI_MANIFEST);
  for (const blob of artifact.blobs) fake.set(`/v2/${route.path}/blobs/${blob.digest}`, blob.bytes);
}

// publishToRegistry pushes a cosign .sig manifest to the real registry as cosign sign --tlog-upload=false does.
const publishToRegistry = (route: Route, digest: string, entries: { payload: Buffer; signature: string }[]): Promise<void> => pushLegacySignature(reg, route.path, digest, entries);

function signedPayload(key: KeyObject, reference: string, digest: string): { payload: Buffer; signature: string } {
  const payload = buildPayload(reference, digest, null);
  return { payload, signature: signPayload(key, payload) };
}

// bundleFor builds, by hand, the sigstore bundle cosign v3 attaches: a DSSE envelope over an in-toto statement.
function bundleFor(key: KeyObject, digest: string, predicateType = SIGN_PREDICATE, subjectName?: string): Buffer {
  const subject = subjectName === undefined ? { digest: { sha256: digest.slice(7) } } : { name: subjectName, digest: { sha256: digest.slice(7) } };
  const statement = Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject: [subject], predicateType, predicate: {} }));
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${IN_TOTO.length} ${IN_TOTO} ${statement.length} `), statement]);
  const sig = key.asymmetricKeyType === 'ed25519' ? crypto.sign(null, pae, key) : crypto.sign('sha256', pae, { key, dsaEncoding: 'der' });
  return Buffer.from(
    JSON.stringify({
      mediaType: BUNDLE_TYPE,
      verificationMaterial: { publicKey: { hint: 'test-key' } },
      dsseEnvelope: { payload: statement.toString('base64'), payloadType: IN_TOTO, signatures: [{ sig: sig.toString('base64'), keyid: '' }] },
    }),
  );
}

// publishBundle stores a bundle manifest at the fake and returns the index that lists it as a referrer of digest.
function publishBundle(fake: FakeUpstream, route: Route, digest: string, bundle: Buffer, listedType = BUNDLE_TYPE): Buffer {
  const empty = Buffer.from('{}');
  fake.set(`/v2/${route.path}/blobs/${sha256Digest(bundle)}`, bundle);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: BUNDLE_TYPE,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256Digest(empty), size: 2 },
      layers: [{ mediaType: BUNDLE_TYPE, digest: sha256Digest(bundle), size: bundle.length }],
      subject: { mediaType: OCI_MANIFEST, digest, size: 1234 },
      annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': SIGN_PREDICATE },
    }),
  );
  const manifestDigest = sha256Digest(manifest);
  fake.set(`/v2/${route.path}/manifests/${manifestDigest}`, manifest, OCI_MANIFEST);
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: manifestDigest, size: manifest.length, artifactType: listedType }],
    }),
  );
}

test('a signature by a candidate key admits the digest with that key fingerprint and records it', async (t) => {
  const { store, verifier } = setupReal(t);
  const key = keyPair();
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(key.privateKey, 'docker.io/library/alpine', digest)]);
  const result = await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]);
  assert.deepEqual(result, { name: 'acme', fingerprint: key.fingerprint });
  assert.equal(store.signatureCheck('docker.io/library/alpine', digest, key.fingerprint), true);
});

test('a signature by a key no candidate holds admits nothing and records the refusal', async (t) => {
  const { store, verifier } = setupReal(t);
  const trusted = keyPair();
  const stranger = keyPair();
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(stranger.privateKey, 'docker.io/library/alpine', digest)]);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', trusted.publicPem)]), null);
  assert.equal(store.signatureCheck('docker.io/library/alpine', digest, trusted.fingerprint), false);
});

test('a payload naming another repository admits nothing', async (t) => {
  const { verifier } = setupReal(t);
  const key = keyPair();
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(key.privateKey, 'docker.io/library/busybox', digest)]);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
});

test('a payload naming another digest admits nothing', async (t) => {
  const { verifier } = setupReal(t);
  const key = keyPair();
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(key.privateKey, 'docker.io/library/alpine', randomDigest())]);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
});

test('a payload blob whose bytes do not match the layer digest is ignored', async (t) => {
  const { fake, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  const listed = buildPayload('docker.io/library/alpine', digest, null);
  const served = buildPayload('docker.io/library/alpine', digest, { note: 'swapped' });
  // The layer lists one payload but the blob served under its digest is another, validly signed one.
  publishLegacy(fake, alpine, digest, [{ payload: listed, signature: signPayload(key.privateKey, served) }]);
  fake.set(`/v2/library/alpine/blobs/${sha256Digest(listed)}`, served);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
});

test('a verified signature is cached, so asking again makes no upstream request', async (t) => {
  const { verifier } = setupReal(t);
  const key = keyPair();
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(key.privateKey, 'docker.io/library/alpine', digest)]);
  const candidates = [publisher('acme', key.publicPem)];
  const before = await readsOfRegistry();
  assert.notEqual(await verifier.verify(alpine, digest, candidates), null);
  const seen = await readsOfRegistry();
  assert.ok(seen > before);
  assert.deepEqual(await verifier.verify(alpine, digest, candidates), { name: 'acme', fingerprint: key.fingerprint });
  assert.equal(await readsOfRegistry(), seen);
});

test('a refusal is not asked again for ten minutes, then a signature published meanwhile admits the digest', async (t) => {
  const { verifier, clock } = setupReal(t);
  const key = keyPair();
  const digest = randomDigest();
  const candidates = [publisher('acme', key.publicPem)];
  assert.equal(await verifier.verify(alpine, digest, candidates), null);
  await publishToRegistry(alpine, digest, [signedPayload(key.privateKey, 'docker.io/library/alpine', digest)]);
  const seen = await readsOfRegistry();
  clock.now += 9 * 60 * 1000;
  assert.equal(await verifier.verify(alpine, digest, candidates), null);
  assert.equal(await readsOfRegistry(), seen);
  clock.now += 2 * 60 * 1000;
  assert.deepEqual(await verifier.verify(alpine, digest, candidates), { name: 'acme', fingerprint: key.fingerprint });
});

test('a publisher with two keys is trusted when its second key signed', async (t) => {
  const { verifier } = setupReal(t);
  const first = keyPair();
  const second = keyPair('ed25519');
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(second.privateKey, 'docker.io/library/alpine', digest)]);
  const result = await verifier.verify(alpine, digest, [publisher('acme', first.publicPem + second.publicPem)]);
  assert.deepEqual(result, { name: 'acme', fingerprint: second.fingerprint });
});

test('the first candidate in the given order wins when several signed', async (t) => {
  const { verifier } = setupReal(t);
  const a = keyPair();
  const b = keyPair();
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(a.privateKey, 'docker.io/library/alpine', digest), signedPayload(b.privateKey, 'docker.io/library/alpine', digest)]);
  const result = await verifier.verify(alpine, digest, [publisher('bee', b.publicPem), publisher('ay', a.publicPem)]);
  assert.deepEqual(result, { name: 'bee', fingerprint: b.fingerprint });
});

test('Docker Hub spellings of the repository in the payload are accepted', async (t) => {
  const { verifier } = setupReal(t);
  const key = keyPair();
  for (const reference of ['index.docker.io/library/alpine', 'docker.io/alpine']) {
    const digest = randomDigest();
    await publishToRegistry(alpine, digest, [signedPayload(key.privateKey, reference, digest)]);
    assert.deepEqual(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), { name: 'acme', fingerprint: key.fingerprint }, reference);
  }
});

test('a payload naming the private upstream by its real host and port is accepted', async (t) => {
  const { verifier } = setupReal(t, 'registry.internal');
  const route: Route = { upstream: 'registry.internal', path: 'library/busybox', repository: 'registry.internal/library/busybox' };
  const key = keyPair();
  const digest = randomDigest();
  await publishToRegistry(route, digest, [signedPayload(key.privateKey, `${reg.host}/library/busybox`, digest)]);
  assert.deepEqual(await verifier.verify(route, digest, [publisher('acme', key.publicPem)]), { name: 'acme', fingerprint: key.fingerprint });
  const other = randomDigest();
  await publishToRegistry(route, other, [signedPayload(key.privateKey, `127.0.0.1:${reg.port + 1}/library/busybox`, other)]);
  assert.equal(await verifier.verify(route, other, [publisher('acme', key.publicPem)]), null);
});

test('a sigstore bundle attached as a referrer is verified (DSSE over an in-toto statement)', async (t) => {
  const { fake, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  fake.set(`/v2/library/alpine/referrers/${digest}`, publishBundle(fake, alpine, digest, bundleFor(key.privateKey, digest)), OCI_INDEX);
  assert.deepEqual(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), { name: 'acme', fingerprint: key.fingerprint });
});

test('a bundle whose statement has another subject, or is an attestation rather than a signature, admits nothing', async (t) => {
  const { fake, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  const other = publishBundle(fake, alpine, digest, bundleFor(key.privateKey, randomDigest()));
  const attestation = publishBundle(fake, alpine, digest, bundleFor(key.privateKey, digest, 'https://slsa.dev/provenance/v1'));
  const index = JSON.parse(other.toString()) as { manifests: unknown[] };
  index.manifests.push(...(JSON.parse(attestation.toString()) as { manifests: unknown[] }).manifests);
  fake.set(`/v2/library/alpine/referrers/${digest}`, Buffer.from(JSON.stringify(index)), OCI_INDEX);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
});

test('a bundle whose subject is named as another repository admits nothing', async (t) => {
  const { fake, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  const index = publishBundle(fake, alpine, digest, bundleFor(key.privateKey, digest, SIGN_PREDICATE, 'docker.io/library/busybox'));
  fake.set(`/v2/library/alpine/referrers/${digest}`, index, OCI_INDEX);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
});

test('a bundle signed by another key admits nothing', async (t) => {
  const { fake, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  fake.set(`/v2/library/alpine/referrers/${digest}`, publishBundle(fake, alpine, digest, bundleFor(keyPair().privateKey, digest)), OCI_INDEX);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
});

test('without a referrers API the legacy signature tag is still used', async (t) => {
  // distribution 2.8 has no referrers API: it answers the referrers path 404 with a plain-text body.
  const { verifier } = setupReal(t);
  const key = keyPair();
  const digest = randomDigest();
  await publishToRegistry(alpine, digest, [signedPayload(key.privateKey, 'docker.io/library/alpine', digest)]);
  assert.deepEqual(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), { name: 'acme', fingerprint: key.fingerprint });
  await reg.settle();
  const asked = reg.requests().filter((e) => e.method === 'GET' && e.path === `/v2/library/alpine/referrers/${digest}`);
  assert.deepEqual(asked.map((e) => e.status), [404], 'the referrers API was asked, and the registry has none');
});

test('without a referrers API a bundle under the sha256-<hex> referrers tag is found', async (t) => {
  const { fake, verifier } = await setup(t);
  const key = keyPair('ed25519');
  const digest = randomDigest();
  // go-containerregistry lists the bundle there with the empty config's type, as cosign 2.5 attest --new-bundle-format does.
  const index = publishBundle(fake, alpine, digest, bundleFor(key.privateKey, digest, SIGN_PREDICATE, 'index.docker.io/library/alpine'), 'application/vnd.oci.empty.v1+json');
  fake.set(`/v2/library/alpine/manifests/${digest.replace(':', '-')}`, index, OCI_INDEX);
  assert.deepEqual(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), { name: 'acme', fingerprint: key.fingerprint });
});

test('an unreachable upstream admits nothing and caches nothing', async (t) => {
  const { fake, store, verifier, warnings } = await setup(t);
  await fake.stop();
  const key = keyPair();
  const digest = randomDigest();
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
  assert.equal(store.signatureCheck('docker.io/library/alpine', digest, key.fingerprint), null);
  assert.equal(warnings.length, 1);
});

test('an upstream error while reading signatures caches no refusal, and the next call asks again', async (t) => {
  const { fake, store, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  fake.set(`/v2/library/alpine/manifests/${sigTag(digest)}`, Buffer.from('{}'), 'application/json', 500);
  const candidates = [publisher('acme', key.publicPem)];
  assert.equal(await verifier.verify(alpine, digest, candidates), null);
  assert.equal(store.signatureCheck('docker.io/library/alpine', digest, key.fingerprint), null);
  const seen = fake.requests.length;
  assert.equal(await verifier.verify(alpine, digest, candidates), null);
  assert.ok(fake.requests.length > seen);
});

test('malformed signature manifests, payloads and bundles are not signatures and do not throw', async (t) => {
  const { fake, store, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  fake.set(`/v2/library/alpine/manifests/${sigTag(digest)}`, Buffer.from('{"schemaVersion":2,"layers":"nope"'), OCI_MANIFEST);
  fake.set(`/v2/library/alpine/referrers/${digest}`, Buffer.from('{"manifests":[{"artifactType":"' + BUNDLE_TYPE + '","digest":"sha256:zz"}]}'), OCI_INDEX);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
  assert.equal(store.signatureCheck('docker.io/library/alpine', digest, key.fingerprint), false);
});

test('an oversized signature manifest is ignored', async (t) => {
  const { fake, verifier } = await setup(t);
  const key = keyPair();
  const digest = randomDigest();
  publishLegacy(fake, alpine, digest, [signedPayload(key.privateKey, 'docker.io/library/alpine', digest)]);
  const manifest = fake.answers.get(`/v2/library/alpine/manifests/${sigTag(digest)}`)?.body ?? Buffer.alloc(0);
  // Trailing whitespace keeps it valid JSON, so only the size limit refuses it.
  fake.set(`/v2/library/alpine/manifests/${sigTag(digest)}`, Buffer.concat([manifest, Buffer.alloc(4 * 1024 * 1024, 0x20)]), OCI_MANIFEST);
  assert.equal(await verifier.verify(alpine, digest, [publisher('acme', key.publicPem)]), null);
});

test('splitPublicKeys reads every PUBLIC KEY block and names the problem when none is usable', () => {
  const a = keyPair();
  const b = keyPair('ed25519');
  const keys = splitPublicKeys(`# two keys\n${a.publicPem}\n${b.publicPem}`);
  assert.deepEqual(keys.map(keyFingerprint), [a.fingerprint, b.fingerprint]);
  assert.deepEqual(publisherFingerprints(a.publicPem + a.publicPem), [a.fingerprint]);
  assert.throws(() => splitPublicKeys('not a key'), /no "-----BEGIN PUBLIC KEY-----" PEM block/);
  assert.throws(() => splitPublicKeys('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'), /none of its 1 PUBLIC KEY blocks is usable/);
});

test('the refusals remembered are bounded: past 10,000 the oldest goes, and an insert never scans the map', (t) => {
  const { verifier, clock } = setupReal(t);
  const internals = verifier as unknown as { rememberRefusal(key: string): void; negatives: Map<string, number> };
  for (let i = 0; i < 25_000; i++) {
    clock.now += 1;
    internals.rememberRefusal(`docker.io/library/alpine@sha256:${String(i).padStart(64, '0')} key`);
  }
  assert.equal(internals.negatives.size, 10_000);
  assert.ok(internals.negatives.has(`docker.io/library/alpine@sha256:${String(24_999).padStart(64, '0')} key`), 'the newest is kept');
  assert.ok(!internals.negatives.has(`docker.io/library/alpine@sha256:${String(14_999).padStart(64, '0')} key`), 'the oldest went');
});
