// The admin API (SPEC §6), /metrics (§8) and the audit export (§7) over real mutual TLS, against content seeded into
// airlock's store; the upstream is unreachable on purpose, so everything served comes from the store.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { verifyAuditExport } from '../server/audit/verify.js';
import { CSV_HEADER } from '../server/audit/format.js';
import type { Role } from '../server/pki/ca.js';
import { parseManifest } from '../server/registry/manifest.js';
import { startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { type HttpResult, registryRequest, type RegistryEndpoint } from './harness/registry.js';
import YAML from 'yaml';

const sha = (b: Buffer): string => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const REPO = 'docker.io/library/app';

let tmp: string;
let t: TestAirlock;

// Image is a seeded manifest and the blobs it references.
interface Image {
  manifest: Buffer;
  digest: string;
  layers: Buffer[];
}

const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
const shared = crypto.randomBytes(1024);

function makeImage(layers: Buffer[]): Image {
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(l), size: l.length })),
    }),
  );
  return { manifest, digest: sha(manifest), layers };
}

// pinned is admitted by a config pin and shares a layer with approved; approved, denied and reversed wait for an admin.
const pinned = makeImage([shared, crypto.randomBytes(512)]);
const approved = makeImage([shared, crypto.randomBytes(700)]);
const denied = makeImage([crypto.randomBytes(300)]);
const reversed = makeImage([crypto.randomBytes(400)]);

// Answer is a response with its JSON body parsed when it has one.
interface Answer extends HttpResult {
  json: Record<string, unknown> & { error?: { code: string; message: string; field?: string } };
}

async function call(role: Role, method: string, pathname: string, body?: unknown, extra: Record<string, string> = {}): Promise<Answer> {
  return callAs(t.bundle(role).endpoint, method, pathname, body, extra);
}

async function callAs(endpoint: RegistryEndpoint, method: string, pathname: string, body?: unknown, extra: Record<string, string> = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...extra };
  const r = await registryRequest(endpoint, pathname, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), answerChallenge: false });
  const type = String(r.headers['content-type'] ?? '');
  const json = type.startsWith('application/json') && r.body.length > 0 ? (JSON.parse(r.body.toString()) as Answer['json']) : {};
  return { ...r, json };
}

const pull = (ref: string): Promise<HttpResult> => t.request('pull', `/v2/library/app/manifests/${ref}`);

async function eventually(what: string, check: () => Promise<boolean>, ms = 1000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`${what} did not happen within ${ms} ms`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-api-'));
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [{ name: 'docker.io', url: 'https://127.0.0.1:1', connectTimeoutMs: 500, readTimeoutMs: 500 }],
    pins: [`${REPO}:stable@${pinned.digest}`],
  });
  const s = t.airlock.services;
  for (const b of [config, ...[pinned, approved, denied, reversed].flatMap((i) => i.layers)]) await s.blobs.put(sha(b), b);
  for (const img of [pinned, approved, denied, reversed]) {
    const p = parseManifest(img.manifest, null);
    s.content.saveManifest(REPO, { digest: img.digest, mediaType: p.mediaType, size: img.manifest.length, bytes: img.manifest }, p.refs, p.subject, p.artifactType);
  }
});

after(async () => {
  await t?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('approval requests', () => {
  let requestId = 0;

  test('a refused pull creates a pending request naming the pulling certificate', async () => {
    const r = await pull(approved.digest);
    assert.equal(r.status, 403);
    const e = JSON.parse(r.body.toString()).errors[0];
    assert.equal(e.code, 'DENIED');
    requestId = e.detail.request;
    const list = await call('admin', 'GET', '/api/v1/requests?status=pending');
    assert.equal(list.status, 200);
    const found = (list.json.requests as { id: number; repository: string; digest: string; requestedBy: string; status: string; count: number }[]).find((q) => q.id === requestId);
    assert.ok(found, 'the request is listed as pending');
    assert.equal(found.repository, REPO);
    assert.equal(found.digest, approved.digest);
    assert.equal(found.requestedBy, 'test-pull');
    assert.equal(found.status, 'pending');
  });

  test('approving a request admits the image at once and signs it', async () => {
    const a = await call('admin', 'POST', `/api/v1/requests/${requestId}/approve`, { note: 'looks fine' });
    assert.equal(a.status, 200);
    assert.equal(a.json.status, 'approved');
    assert.equal(a.json.decidedBy, 'test-admin');
    assert.equal(a.json.note, 'looks fine');
    const images = await call('audit', 'GET', '/api/v1/images');
    const img = (images.json.images as { digest: string; admission: string; approvedBy: string; signature: string | null; signingKey: string }[]).find((i) => i.digest === approved.digest);
    assert.ok(img, 'the approved image is listed before anyone pulled it again');
    assert.equal(img.admission, 'approval');
    assert.equal(img.approvedBy, 'test-admin');
    assert.match(String(img.signature), /^sha256:[a-f0-9]{64}$/);
    assert.equal(img.signingKey, t.airlock.services.signer.keyId);
    const r = await pull(approved.digest);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, approved.manifest);
    const sig = await pull(`sha256-${approved.digest.slice(7)}.sig`);
    assert.equal(sig.status, 200);
    const pins = await call('audit', 'GET', '/api/v1/pins');
    assert.ok((pins.json.pins as { digest: string; source: string; createdBy: string }[]).some((p) => p.digest === approved.digest && p.source === 'approval' && p.createdBy === 'test-admin'));
  });

  test('approving an approved request is a conflict, and an unknown request is not found', async () => {
    const again = await call('admin', 'POST', `/api/v1/requests/${requestId}/approve`);
    assert.equal(again.status, 409);
    assert.equal(again.json.error?.code, 'CONFLICT');
    const unknown = await call('admin', 'POST', '/api/v1/requests/999999/approve', {});
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error?.code, 'NOT_FOUND');
  });

  test('a denied request stays refused, and denying needs a reason', async () => {
    const r = await pull(denied.digest);
    assert.equal(r.status, 403);
    const id = JSON.parse(r.body.toString()).errors[0].detail.request as number;
    const noReason = await call('admin', 'POST', `/api/v1/requests/${id}/deny`, {});
    assert.equal(noReason.status, 400);
    assert.match(String(noReason.json.error?.message), /reason/);
    const d = await call('admin', 'POST', `/api/v1/requests/${id}/deny`, { reason: 'not from a vendor we use' });
    assert.equal(d.status, 200);
    assert.equal(d.json.status, 'denied');
    assert.equal(d.json.note, 'not from a vendor we use');
    const after = await pull(denied.digest);
    assert.equal(after.status, 403);
    assert.match(JSON.parse(after.body.toString()).errors[0].message, /denied/);
    const listed = await call('audit', 'GET', '/api/v1/requests?status=denied');
    assert.ok((listed.json.requests as { id: number }[]).some((q) => q.id === id));
  });

  test('denying an approved request removes its approval pin and refuses the image again', async () => {
    const first = await pull(reversed.digest);
    const id = JSON.parse(first.body.toString()).errors[0].detail.request as number;
    assert.equal((await call('admin', 'POST', `/api/v1/requests/${id}/approve`)).status, 200);
    assert.equal((await pull(reversed.digest)).status, 200);
    const d = await call('admin', 'POST', `/api/v1/requests/${id}/deny`, { reason: 'approved by mistake' });
    assert.equal(d.status, 200);
    assert.equal(d.json.status, 'denied');
    assert.equal((await pull(reversed.digest)).status, 403);
    const pins = await call('audit', 'GET', '/api/v1/pins');
    assert.ok(!(pins.json.pins as { digest: string }[]).some((p) => p.digest === reversed.digest));
    const images = await call('audit', 'GET', '/api/v1/images');
    assert.ok(!(images.json.images as { digest: string }[]).some((i) => i.digest === reversed.digest));
  });

  test('the list answers at most limit requests, newest activity first, and X-Total-Count says how many match', async () => {
    // A pull certificate can leave one request per refused digest: 600 of them here, more than the default page.
    const store = t.airlock.services.policyStore;
    const flood: number[] = [];
    for (let i = 0; i < 600; i++) flood.push(store.recordRefusal(`${REPO}-flood`, sha(Buffer.from(`flood ${i}`)), null, 'test-pull').id);
    const pending = await call('audit', 'GET', '/api/v1/requests?status=pending');
    assert.equal(pending.status, 200);
    const rows = pending.json.requests as { id: number }[];
    assert.equal(rows.length, 500, 'the default page is 500');
    const total = Number(pending.headers['x-total-count']);
    assert.ok(total >= 600, `X-Total-Count ${total} counts every pending request`);
    assert.deepEqual(rows.slice(0, 3).map((r) => r.id), flood.slice(-3).reverse(), 'newest activity first');

    const three = await call('audit', 'GET', '/api/v1/requests?limit=3');
    assert.deepEqual((three.json.requests as { id: number }[]).map((r) => r.id), flood.slice(-3).reverse());
    assert.ok(Number(three.headers['x-total-count']) > total, 'without a status every request counts');
    const denied = await call('audit', 'GET', '/api/v1/requests?status=denied&limit=5000');
    assert.equal(Number(denied.headers['x-total-count']), (denied.json.requests as unknown[]).length);

    for (const bad of ['0', '5001', 'ten', '-1']) {
      const r = await call('audit', 'GET', `/api/v1/requests?limit=${bad}`);
      assert.equal(r.status, 400, `limit=${bad}`);
      assert.equal(r.json.error?.code, 'BAD_REQUEST');
    }
  });
});

describe('pins', () => {
  const digest = sha(Buffer.from('pinned by the api'));
  const other = sha(Buffer.from('another digest'));
  let id = 0;

  test('adding a pin canonicalises the repository and answers 201, and the same pin again answers 200', async () => {
    const a = await call('admin', 'POST', '/api/v1/pins', { repository: 'docker.io/alpine', digest, tag: '3.20', note: 'base image' });
    assert.equal(a.status, 201);
    assert.equal(a.json.repository, 'docker.io/library/alpine');
    assert.equal(a.json.tag, '3.20');
    assert.equal(a.json.source, 'api');
    assert.equal(a.json.createdBy, 'test-admin');
    id = a.json.id as number;
    const again = await call('admin', 'POST', '/api/v1/pins', { repository: 'docker.io/library/alpine', digest, tag: '3.20' });
    assert.equal(again.status, 200);
    assert.equal(again.json.id, id);
    const list = await call('audit', 'GET', '/api/v1/pins');
    assert.ok((list.json.pins as { id: number }[]).some((p) => p.id === id));
  });

  test('pinning a tag that is pinned to another digest is a conflict', async () => {
    const r = await call('admin', 'POST', '/api/v1/pins', { repository: 'docker.io/library/alpine', digest: other, tag: '3.20' });
    assert.equal(r.status, 409);
    assert.equal(r.json.error?.code, 'CONFLICT');
    assert.match(String(r.json.error?.message), new RegExp(digest));
  });

  const bad: [string, Record<string, unknown>, string][] = [
    ['a missing digest', { repository: 'docker.io/library/alpine' }, 'digest'],
    ['a digest that is not sha256', { repository: 'docker.io/library/alpine', digest: 'md5:abc' }, '/digest'],
    ['an upstream that is not configured', { repository: 'quay.io/acme/app', digest: other }, '/repository'],
    ['a malformed repository', { repository: 'docker.io/Bad Name', digest: other }, '/repository'],
    ['a bad tag', { repository: 'docker.io/library/alpine', digest: other, tag: '-x' }, '/tag'],
    ['an unknown property', { repository: 'docker.io/library/alpine', digest: other, colour: 'blue' }, '/colour'],
    // JSON has types: a value of the wrong one is refused, not converted (a number to a string, [x] to x).
    ['a number for a tag', { repository: 'docker.io/library/alpine', digest: other, tag: 7 }, '/tag'],
    ['an array for a repository', { repository: ['docker.io/library/alpine'], digest: other }, '/repository'],
    ['a boolean for a note', { repository: 'docker.io/library/alpine', digest: other, note: false }, '/note'],
  ];
  for (const [what, body, field] of bad) {
    test(`a pin with ${what} is refused with 400 naming the field`, async () => {
      const r = await call('admin', 'POST', '/api/v1/pins', body);
      assert.equal(r.status, 400);
      assert.equal(r.json.error?.code, 'BAD_REQUEST');
      assert.ok(String(r.json.error?.field).includes(field), `field ${String(r.json.error?.field)} names ${field}`);
      assert.ok(String(r.json.error?.message).includes(field.replace('/', '')), String(r.json.error?.message));
    });
  }

  test('a JSON body is still required where the route needs one, and prototype keys are refused', async () => {
    const empty = await call('admin', 'POST', '/api/v1/pins', undefined, { 'content-type': 'application/json' });
    assert.equal(empty.status, 400);
    const plain = await registryRequest(t.bundle('admin').endpoint, '/api/v1/pins', { method: 'POST', headers: { 'content-type': 'application/xml' }, body: '<x/>', answerChallenge: false });
    assert.equal(plain.status, 415);
    assert.equal(JSON.parse(plain.body.toString()).error.code, 'UNSUPPORTED_MEDIA_TYPE');
    const huge = await registryRequest(t.bundle('admin').endpoint, '/api/v1/pins', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ note: 'x'.repeat(2 << 20) }), answerChallenge: false });
    assert.equal(huge.status, 413);
    assert.equal(JSON.parse(huge.body.toString()).error.code, 'PAYLOAD_TOO_LARGE');
    for (const body of ['{"__proto__":{"x":1},"repository":"docker.io/library/alpine"}', '{"constructor":{"prototype":{"x":1}}}', '{not json']) {
      const r = await registryRequest(t.bundle('admin').endpoint, '/api/v1/pins', { method: 'POST', headers: { 'content-type': 'application/json' }, body, answerChallenge: false });
      assert.equal(r.status, 400, body);
      // Valid JSON is not called invalid: the message names what is refused.
      const message = String((JSON.parse(r.body.toString()) as Answer['json']).error?.message);
      if (body === '{not json') assert.match(message, /not valid JSON/);
      else assert.match(message, /__proto__ or constructor\.prototype/, body);
    }
  });

  test('a pin id in the path not written in decimal digits is refused with 400 and deletes nothing', async () => {
    for (const spelling of [`0x${id.toString(16)}`, `${id}e0`, `${id}.0`, `0${id}`, `${id}${'0'.repeat(20)}`]) {
      const r = await call('admin', 'DELETE', `/api/v1/pins/${spelling}`);
      assert.equal(r.status, 400, `${spelling}: ${r.status} ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error?.field, '/id', spelling);
      assert.match(String(r.json.error?.message), /decimal digits/);
    }
    const approve = await call('admin', 'POST', '/api/v1/requests/0x1/approve', {});
    assert.equal(approve.status, 400);
    assert.equal(approve.json.error?.field, '/id');
    const list = await call('audit', 'GET', '/api/v1/pins');
    assert.ok((list.json.pins as { id: number }[]).some((p) => p.id === id), 'the pin is still there');
  });

  test('deleting a pin answers 204, then 404; a pin from the configuration cannot be deleted', async () => {
    // Sent as scripts often do, saying JSON without a body: that is no body, not a malformed one.
    assert.equal((await call('admin', 'DELETE', `/api/v1/pins/${id}`, undefined, { 'content-type': 'application/json' })).status, 204);
    assert.equal((await call('admin', 'DELETE', `/api/v1/pins/${id}`)).status, 404);
    const list = await call('audit', 'GET', '/api/v1/pins');
    const pins = list.json.pins as { id: number; source: string }[];
    assert.ok(!pins.some((p) => p.id === id));
    const seeded = pins.find((p) => p.source === 'config');
    assert.ok(seeded);
    const r = await call('admin', 'DELETE', `/api/v1/pins/${seeded.id}`);
    assert.equal(r.status, 409);
    assert.match(String(r.json.error?.message), /configuration/);
  });
});

describe('publishers', () => {
  const publicKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();

  test('a publisher with a P-256 key is added with its fingerprint and listed', async () => {
    const r = await call('admin', 'POST', '/api/v1/publishers', { name: 'acme', publicKey, repositories: ['ghcr.io/acme/*'] });
    assert.equal(r.status, 201);
    assert.equal(r.json.name, 'acme');
    assert.equal((r.json.fingerprints as string[]).length, 1);
    assert.deepEqual(r.json.repositories, ['ghcr.io/acme/*']);
    assert.equal(r.json.source, 'api');
    const list = await call('audit', 'GET', '/api/v1/publishers');
    assert.ok((list.json.publishers as { name: string }[]).some((p) => p.name === 'acme'));
  });

  test('a second publisher with the same name is a conflict', async () => {
    const r = await call('admin', 'POST', '/api/v1/publishers', { name: 'acme', publicKey, repositories: ['ghcr.io/other/*'] });
    assert.equal(r.status, 409);
  });

  test('a key that does not parse is refused with 422', async () => {
    const r = await call('admin', 'POST', '/api/v1/publishers', { name: 'junk', publicKey: 'not a key', repositories: ['ghcr.io/junk/*'] });
    assert.equal(r.status, 422);
    assert.equal(r.json.error?.code, 'UNPROCESSABLE');
    const broken = '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n';
    assert.equal((await call('admin', 'POST', '/api/v1/publishers', { name: 'junk', publicKey: broken, repositories: ['ghcr.io/junk/*'] })).status, 422);
  });

  test('a glob without a slash or with capitals is refused with 400 naming the field', async () => {
    for (const glob of ['acme', 'GHCR.io/acme/*']) {
      const r = await call('admin', 'POST', '/api/v1/publishers', { name: 'globs', publicKey, repositories: [glob] });
      assert.equal(r.status, 400, glob);
      assert.match(String(r.json.error?.field), /repositories/);
    }
  });

  test('deleting a publisher answers 204, then 404', async () => {
    assert.equal((await call('admin', 'DELETE', '/api/v1/publishers/acme')).status, 204);
    assert.equal((await call('admin', 'DELETE', '/api/v1/publishers/acme')).status, 404);
    const list = await call('audit', 'GET', '/api/v1/publishers');
    assert.ok(!(list.json.publishers as { name: string }[]).some((p) => p.name === 'acme'));
  });
});

describe('images', () => {
  test('the pinned image is listed with its tag pin, signature and cached bytes once pulled', async () => {
    assert.equal((await pull('stable')).status, 200);
    const r = await call('audit', 'GET', '/api/v1/images');
    assert.equal(r.status, 200);
    const img = (r.json.images as { digest: string; tags: string[]; admission: string; signature: string; cachedBytes: number; sizeBytes: number; revoked: boolean }[]).find(
      (i) => i.digest === pinned.digest,
    );
    assert.ok(img);
    assert.deepEqual(img.tags, ['stable']);
    assert.equal(img.admission, 'pin');
    assert.match(img.signature, /^sha256:/);
    const expected = config.length + pinned.layers.reduce((n, l) => n + l.length, 0);
    assert.equal(img.sizeBytes, expected);
    assert.equal(img.cachedBytes, expected);
    assert.equal(img.revoked, false);
  });

  test('a cached blob file removed by hand is no longer counted as cached', async () => {
    const s = t.airlock.services;
    const layer = sha(pinned.layers[0]);
    assert.equal((await t.request('pull', `/v2/library/app/blobs/${layer}`)).status, 200);
    const cached = async (): Promise<number> =>
      ((await call('audit', 'GET', '/api/v1/images')).json.images as { digest: string; cachedBytes: number }[]).find((i) => i.digest === pinned.digest)?.cachedBytes ?? -1;
    const before = await cached();
    fs.rmSync(s.blobs.pathOf(layer));
    assert.equal(await cached(), before - pinned.layers[0].length);
    const metrics = (await call('audit', 'GET', '/metrics')).body.toString();
    assert.equal(Number(/^airlock_blob_cache_bytes (\d+)$/m.exec(metrics)?.[1]), s.blobs.usage().bytes, 'the gauge follows');
    // This upstream is down, so the removed blob is not served from anywhere: the pull fails rather than being told, as
    // the listing said before, that the image is all here.
    assert.equal((await t.request('pull', `/v2/library/app/blobs/${layer}`)).status, 503);
    await s.blobs.put(layer, pinned.layers[0]);
    assert.equal(await cached(), before);
  });

  test('a revoke the database refuses half way stores nothing, answers 503, and applies in full when tried again', async (ctx) => {
    const s = t.airlock.services;
    const repository = 'docker.io/library/half';
    const url = `/v2/library/half/manifests/${pinned.digest}`;
    const p = parseManifest(pinned.manifest, null);
    s.content.saveManifest(repository, { digest: pinned.digest, mediaType: p.mediaType, size: pinned.manifest.length, bytes: pinned.manifest }, p.refs, p.subject, p.artifactType);
    assert.equal((await call('admin', 'POST', '/api/v1/pins', { repository, digest: pinned.digest })).status, 201);
    assert.equal((await t.request('pull', url)).status, 200);
    assert.equal((await t.request('pull', url)).status, 200, 'a remembered answer now');
    // The second write hits a write lock another process holds for longer than the request thread waits.
    const forget = s.policyStore.forgetAdmission;
    const failing = ctx.mock.method(s.policyStore, 'forgetAdmission', () => {
      throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    });
    const body = { repository, digest: pinned.digest, reason: 'CVE-2024-0002' };
    const refused = await call('admin', 'POST', '/api/v1/images/revoke', body);
    assert.equal(refused.status, 503, refused.body.toString());
    assert.equal(refused.json.error?.code, 'UNAVAILABLE');
    assert.equal(s.policyStore.revocation(repository, pinned.digest), null, 'the revocation was not stored without the rest');
    failing.mock.restore();
    assert.equal(s.policyStore.forgetAdmission, forget);
    const revoked = await call('admin', 'POST', '/api/v1/images/revoke', body);
    assert.equal(revoked.status, 200, revoked.body.toString());
    assert.equal((await t.request('pull', url)).status, 403);
    assert.equal((await t.request('pull', `/v2/library/half/manifests/${pinned.digest.replace(':', '-')}.sig`)).status, 404);
  });

  test('revoking an image refuses it at once, drops its signature and the blobs only it used', async () => {
    const s = t.airlock.services;
    const own = sha(approved.layers[1]);
    const r = await call('admin', 'POST', '/api/v1/images/revoke', { repository: 'docker.io/app', digest: approved.digest, reason: 'CVE-2024-0001' });
    assert.equal(r.status, 200);
    assert.equal(r.json.repository, REPO);
    assert.equal(r.json.reason, 'CVE-2024-0001');
    assert.equal(r.json.revokedBy, 'test-admin');
    assert.equal(r.json.removedBlobs, 1);
    await eventually('the revoked image is refused', async () => {
      const g = await pull(approved.digest);
      return g.status === 403 && JSON.parse(g.body.toString()).errors[0].code === 'DENIED';
    });
    assert.equal((await pull(`sha256-${approved.digest.slice(7)}.sig`)).status, 404);
    assert.equal(s.blobs.size(own), null, 'the layer only the revoked image used is gone');
    assert.notEqual(s.blobs.size(sha(shared)), null, 'the layer the pinned image shares stays');
    assert.notEqual(s.blobs.size(sha(config)), null, 'the config the pinned image shares stays');
    const images = await call('audit', 'GET', '/api/v1/images');
    assert.ok(!(images.json.images as { digest: string }[]).some((i) => i.digest === approved.digest));
    assert.ok((images.json.images as { digest: string }[]).some((i) => i.digest === pinned.digest));
    const again = await call('admin', 'POST', '/api/v1/images/revoke', { repository: REPO, digest: approved.digest, reason: 'twice' });
    assert.equal(again.status, 409);
  });

  test('drift lists nothing while no pinned tag moved', async () => {
    const r = await call('audit', 'GET', '/api/v1/drift');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.drift, []);
  });
});

describe('client certificates', () => {
  let issued: { serial: string; certificate: string; privateKey: string; ca: string };
  let endpoint: RegistryEndpoint;

  test('issuing a certificate returns its PEM certificate, key and CA, and it works at once', async () => {
    const r = await call('admin', 'POST', '/api/v1/certs', { name: 'ci-runner', role: 'pull', days: 7 });
    assert.equal(r.status, 201);
    assert.equal(r.headers['cache-control'], 'no-store');
    issued = r.json as unknown as typeof issued;
    assert.equal(r.json.name, 'ci-runner');
    assert.equal(r.json.role, 'pull');
    assert.match(issued.certificate, /BEGIN CERTIFICATE/);
    assert.match(issued.privateKey, /BEGIN PRIVATE KEY/);
    assert.equal(issued.ca, fs.readFileSync(t.caPath, 'utf8'));
    const x509 = new crypto.X509Certificate(issued.certificate);
    assert.ok(new Date(x509.validTo).getTime() - Date.now() < 8 * 24 * 3600 * 1000);
    const dir = path.join(tmp, 'ci-runner');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'client.cert'), issued.certificate);
    fs.writeFileSync(path.join(dir, 'client.key'), issued.privateKey);
    endpoint = { url: t.url, caPath: t.caPath, clientCertPath: path.join(dir, 'client.cert'), clientKeyPath: path.join(dir, 'client.key') };
    assert.equal((await callAs(endpoint, 'GET', '/api/v1/signing-key')).status, 200);
    assert.ok(!fs.readFileSync(t.logPath, 'utf8').includes(issued.privateKey.split('\n')[1]), 'the private key is not logged');
  });

  test('issuing with format=p12 answers a PKCS#12 file protected by the password', async () => {
    const r = await call('admin', 'POST', '/api/v1/certs?format=p12', { name: 'browser', role: 'audit', p12Password: 'secret' });
    assert.equal(r.status, 201);
    assert.equal(r.headers['content-type'], 'application/x-pkcs12');
    assert.equal(r.headers['content-disposition'], 'attachment; filename="browser.p12"');
    assert.doesNotThrow(() => tls.createSecureContext({ pfx: r.body, passphrase: 'secret' }));
    assert.throws(() => tls.createSecureContext({ pfx: r.body, passphrase: 'wrong' }));
    // A password without format=p12 would have the key go out unencrypted: refused, and nothing issued.
    const before = ((await call('admin', 'GET', '/api/v1/certs')).json.certs as unknown[]).length;
    const pem = await call('admin', 'POST', '/api/v1/certs', { name: 'browser-pem', role: 'audit', p12Password: 'secret' });
    assert.equal(pem.status, 400);
    assert.equal(pem.json.error?.field, '/p12Password');
    assert.equal(((await call('admin', 'GET', '/api/v1/certs')).json.certs as unknown[]).length, before);
  });

  test('the certificate list shows issued certificates with their roles', async () => {
    const r = await call('admin', 'GET', '/api/v1/certs');
    assert.equal(r.status, 200);
    const certs = r.json.certs as { serial: string; name: string; role: string; issuedBy: string; revokedAt: string | null }[];
    const ci = certs.find((c) => c.serial === issued.serial);
    assert.ok(ci);
    assert.equal(ci.name, 'ci-runner');
    assert.equal(ci.role, 'pull');
    assert.equal(ci.issuedBy, 'test-admin');
    assert.equal(ci.revokedAt, null);
    assert.ok(certs.some((c) => c.name === 'browser' && c.role === 'audit'));
  });

  test('a certificate request with a bad name or role is refused with 400', async () => {
    assert.equal((await call('admin', 'POST', '/api/v1/certs', { name: 'bad name', role: 'pull' })).status, 400);
    assert.equal((await call('admin', 'POST', '/api/v1/certs', { name: 'x', role: 'root' })).status, 400);
    assert.equal((await call('admin', 'POST', '/api/v1/certs', { name: 'x', role: 'pull', days: 0 })).status, 400);
    // Values of the wrong JSON type are refused, not converted: a number name, a role in an array, days as text.
    for (const [body, field] of [
      [{ name: 12345, role: 'pull' }, '/name'],
      [{ name: 'typed', role: ['admin'] }, '/role'],
      [{ name: 'typed', role: 'pull', days: '5' }, '/days'],
      [{ name: 'typed', role: 'pull', days: true }, '/days'],
    ] as const) {
      const r = await call('admin', 'POST', '/api/v1/certs', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.json.error?.field, field, JSON.stringify(body));
    }
    const certs = (await call('admin', 'GET', '/api/v1/certs')).json.certs as { name: string }[];
    assert.ok(!certs.some((c) => c.name === '12345' || c.name === 'typed'), 'none of them was issued');
  });

  test('a server whose CA key is kept elsewhere, or is not its CA certificate\'s, answers 409 CONFLICT and issues nothing', async () => {
    const keyFile = path.join(t.config.dataDir, 'pki', 'ca.key');
    const kept = fs.readFileSync(keyFile);
    try {
      fs.rmSync(keyFile);
      await t.restart();
      const offline = await call('admin', 'POST', '/api/v1/certs', { name: 'offline', role: 'pull' });
      assert.equal(offline.status, 409);
      assert.equal(offline.json.error?.code, 'CONFLICT');
      assert.match(String(offline.json.error?.message), /no CA key .* where the CA key lives/);
      fs.writeFileSync(keyFile, crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      await t.restart();
      const other = await call('admin', 'POST', '/api/v1/certs', { name: 'offline', role: 'pull' });
      assert.equal(other.status, 409);
      assert.match(String(other.json.error?.message), /not the key of its CA certificate/);
      const certs = (await call('admin', 'GET', '/api/v1/certs')).json.certs as { name: string }[];
      assert.ok(!certs.some((c) => c.name === 'offline'), 'nothing was issued');
    } finally {
      fs.writeFileSync(keyFile, kept, { mode: 0o600 });
      await t.restart();
    }
    assert.equal((await call('admin', 'POST', '/api/v1/certs', { name: 'online-again', role: 'pull' })).status, 201);
  });

  test('a revoked certificate is refused within one second', async () => {
    const r = await call('admin', 'POST', `/api/v1/certs/${issued.serial}/revoke`, { reason: 'runner decommissioned' });
    assert.equal(r.status, 200);
    assert.equal(r.json.revokeReason, 'runner decommissioned');
    assert.ok(r.json.revokedAt);
    await eventually('the revoked certificate is refused', async () => {
      try {
        return (await callAs(endpoint, 'GET', '/api/v1/signing-key')).status === 403;
      } catch {
        return true;
      }
    });
    assert.equal((await call('admin', 'POST', `/api/v1/certs/${issued.serial}/revoke`)).status, 409);
    assert.equal((await call('admin', 'POST', '/api/v1/certs/abcdef0123/revoke')).status, 404);
    assert.equal((await call('admin', 'POST', '/api/v1/certs/not-hex/revoke')).status, 400);
  });
});

describe('roles', () => {
  const digest = sha(Buffer.from('roles'));
  // Every route of the API with a body that passes its schema.
  const routes: [string, string, unknown?][] = [
    ['GET', '/api/v1/requests'],
    ['POST', '/api/v1/requests/1/approve', {}],
    ['POST', '/api/v1/requests/1/deny', { reason: 'r' }],
    ['GET', '/api/v1/pins'],
    ['POST', '/api/v1/pins', { repository: 'docker.io/library/roles', digest }],
    ['DELETE', '/api/v1/pins/1'],
    ['GET', '/api/v1/publishers'],
    ['POST', '/api/v1/publishers', { name: 'p', publicKey: 'x', repositories: ['ghcr.io/p/*'] }],
    ['DELETE', '/api/v1/publishers/p'],
    ['GET', '/api/v1/images'],
    ['POST', '/api/v1/images/revoke', { repository: 'docker.io/library/roles', digest, reason: 'r' }],
    ['GET', '/api/v1/drift'],
    ['GET', '/api/v1/certs'],
    ['POST', '/api/v1/certs', { name: 'n', role: 'pull' }],
    ['POST', '/api/v1/certs/abc/revoke', {}],
    ['GET', '/api/v1/signing-key'],
    ['GET', '/api/v1/client-config?kind=docker'],
    ['GET', '/api/v1/audit'],
    ['GET', '/api/v1/openapi.json'],
    ['GET', '/metrics'],
  ];
  const pullMay = new Set(['/api/v1/signing-key', '/api/v1/client-config?kind=docker']);
  const auditMay = (method: string, p: string): boolean => method === 'GET' && p !== '/api/v1/certs';

  test('a pull certificate is refused every admin route with 403 FORBIDDEN', async () => {
    for (const [method, p, body] of routes) {
      if (pullMay.has(p)) continue;
      const r = await call('pull', method, p, body);
      assert.equal(r.status, 403, `${method} ${p}`);
      assert.equal(r.json.error?.code, 'FORBIDDEN', `${method} ${p}`);
    }
  });

  test("a request from another site's page is refused on every route, even with the admin certificate, and changes nothing", async () => {
    for (const [method, p, body] of routes) {
      for (const headers of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }, { origin: 'null' }] as Record<string, string>[]) {
        const r = await call('admin', method, p, body, headers);
        assert.equal(r.status, 403, `${method} ${p} ${JSON.stringify(headers)}`);
        assert.equal(r.json.error?.code, 'FORBIDDEN');
        assert.match(String(r.json.error?.message), /refused: /);
      }
    }
    // What a page's navigator.sendBeacon sends: a POST with no body and no content type, from the page's origin.
    const issued = await call('admin', 'POST', '/api/v1/certs', { name: 'beacon-target', role: 'pull' });
    assert.equal(issued.status, 201);
    const serial = String(issued.json.serial);
    assert.equal((await call('admin', 'POST', `/api/v1/certs/${serial}/revoke`, undefined, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' })).status, 403);
    const certs = await call('admin', 'GET', '/api/v1/certs');
    assert.equal((certs.json.certs as { serial: string; revokedAt: string | null }[]).find((c) => c.serial === serial)?.revokedAt, null, 'still not revoked');
    // The console's own requests are same-origin.
    const same = await call('admin', 'GET', '/api/v1/pins', undefined, { origin: `https://${t.host}`, 'sec-fetch-site': 'same-origin' });
    assert.equal(same.status, 200);
    await t.airlock.services.audit.stored();
    const refused = [...t.airlock.services.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.action === 'admin.refused' && e.reason?.startsWith('cross-site request'));
    assert.ok(refused.some((e) => e.reference === 'POST /api/v1/certs/:serial/revoke' && e.actor === 'test-admin'), 'the refusal is audited');
  });

  test("another site's page cannot pull through the registry either, remembered answers included, and opens no approval request", async () => {
    const s = t.airlock.services;
    assert.equal((await call('pull', 'GET', '/v2/library/app/manifests/stable')).status, 200, 'a registry client sends neither header');
    assert.equal((await call('pull', 'GET', '/v2/library/app/manifests/stable')).status, 200, 'and is answered from memory the second time');
    const requests = s.policyStore.requests(null, 1000).total;
    const unknown = sha(Buffer.from('a manifest nobody stored'));
    for (const headers of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }] as Record<string, string>[]) {
      for (const p of ['/v2/library/app/manifests/stable', `/v2/library/app/manifests/${unknown}`, `/v2/library/app/blobs/${sha(config)}`]) {
        const r = await call('admin', 'GET', p, undefined, headers);
        assert.equal(r.status, 403, `${p} ${JSON.stringify(headers)}`);
        const e = (r.json.errors as { code: string; message: string }[])[0];
        assert.equal(e.code, 'DENIED');
        assert.match(e.message, /^cross-site request: /);
      }
    }
    assert.equal(s.policyStore.requests(null, 1000).total, requests, 'no approval request was opened');
    await s.audit.stored();
    const audited = [...s.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.action === 'v2_manifests.get' && e.reason?.startsWith('cross-site request: '));
    assert.ok(audited.some((e) => e.actor === 'test-admin' && e.decision === 'deny'), 'the refusal is audited with its reason');
  });

  test("a path whose fixed part is percent-escaped reaches no route: /%762/ is no way past the registry's refusals", async () => {
    const s = t.airlock.services;
    const requests = s.policyStore.requests(null, 1000).total;
    const paths = ['/%762/library/app/manifests/stable', '/v%32/library/app/manifests/stable', `/%762/library/app/blobs/${sha(config)}`, '/%762/library/app/tags/list', '/%61pi/v1/pins', '/api/v1/%70ins'];
    for (const p of paths) {
      for (const headers of [{}, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' }] as Record<string, string>[]) {
        const r = await call('admin', 'GET', p, undefined, headers);
        assert.equal(r.status, 404, `${p} ${JSON.stringify(headers)}: ${r.body.toString().slice(0, 200)}`);
        assert.equal(r.json.error?.code, 'NOT_FOUND', p);
      }
    }
    assert.equal(s.policyStore.requests(null, 1000).total, requests, 'no approval request was opened');
  });

  test('a pull certificate reads the signing key and client configuration', async () => {
    const key = await call('pull', 'GET', '/api/v1/signing-key');
    assert.equal(key.status, 200);
    assert.equal(key.headers['content-type'], 'application/x-pem-file');
    assert.equal(key.body.toString(), t.airlock.services.signer.publicPem);
    assert.equal(key.headers['x-airlock-key-id'], t.airlock.services.signer.keyId);
    for (const kind of ['docker', 'containerd', 'podman']) {
      const r = await call('pull', 'GET', `/api/v1/client-config?kind=${kind}`);
      assert.equal(r.status, 200, kind);
      assert.equal(r.json.kind, kind);
      assert.equal(r.json.address, t.host);
      assert.ok((r.json.files as { path: string; content: string }[]).length > 0);
      // The test server listens on 127.0.0.1, where dockerd sends no client certificate.
      assert.equal((r.json.warnings as string[]).length, kind === 'docker' ? 1 : 0, kind);
      if (kind === 'docker') assert.match((r.json.warnings as string[])[0] ?? '', /loopback address/);
    }
    const containerd = await call('pull', 'GET', '/api/v1/client-config?kind=containerd');
    assert.ok((containerd.json.files as { path: string; content: string }[]).some((f) => f.path.endsWith('docker.io/hosts.toml') && f.content.includes(t.host)));
    assert.equal((await call('pull', 'GET', '/api/v1/client-config?kind=rkt')).status, 400);
  });

  test("the client configuration names this mirror's URL and its host:port in every path and setting", async () => {
    type Files = { path: string; content: string }[];
    const filesOf = async (kind: string): Promise<Map<string, string>> => {
      const r = await call('pull', 'GET', `/api/v1/client-config?kind=${kind}`);
      assert.equal(r.status, 200, kind);
      return new Map((r.json.files as Files).map((f) => [f.path, f.content]));
    };
    // t.host is 127.0.0.1:<the port this test server listens on>, a name its certificate holds.
    const docker = await filesOf('docker');
    assert.deepEqual([...docker.keys()], ['/etc/docker/daemon.json', ...['ca.crt', 'client.cert', 'client.key'].map((f) => `/etc/docker/certs.d/${t.host}/${f}`)]);
    assert.deepEqual(JSON.parse(docker.get('/etc/docker/daemon.json') ?? ''), { 'registry-mirrors': [`https://${t.host}`] });
    for (const f of ['ca.crt', 'client.cert', 'client.key']) assert.equal(docker.get(`/etc/docker/certs.d/${t.host}/${f}`), `# copy /etc/airlock/${f} here\n`);

    const containerd = await filesOf('containerd');
    assert.deepEqual([...containerd.keys()], ['/etc/containerd/certs.d/docker.io/hosts.toml']);
    const hosts = containerd.get('/etc/containerd/certs.d/docker.io/hosts.toml') ?? '';
    const lines = hosts.split('\n');
    assert.ok(lines.includes(`server = "https://${t.host}"`), hosts);
    assert.ok(lines.includes(`[host."https://${t.host}"]`), hosts);

    const podman = await filesOf('podman');
    assert.deepEqual([...podman.keys()], ['/etc/containers/registries.conf.d/airlock.conf', ...['ca.crt', 'client.cert', 'client.key'].map((f) => `/etc/containers/certs.d/${t.host}/${f}`)]);
    const conf = podman.get('/etc/containers/registries.conf.d/airlock.conf') ?? '';
    assert.match(conf, /^prefix = "docker\.io"$/m);
    assert.ok(conf.split('\n').includes(`location = "${t.host}/docker.io"`), conf);
  });

  test('an audit certificate reads everything but the certificates and is refused every change', async () => {
    for (const [method, p, body] of routes) {
      const r = await call('audit', method, p, body);
      if (auditMay(method, p)) assert.equal(r.status, 200, `${method} ${p}`);
      else {
        assert.equal(r.status, 403, `${method} ${p}`);
        assert.equal(r.json.error?.code, 'FORBIDDEN', `${method} ${p}`);
      }
    }
  });

  test('every API answer, an error too, is kept by no cache and never sniffed', async () => {
    for (const [role, p] of [['audit', '/api/v1/pins'], ['audit', '/api/v1/requests'], ['pull', '/api/v1/pins'], ['audit', '/api/v1/nope'], ['audit', '/metrics']] as [Role, string][]) {
      const r = await call(role, 'GET', p);
      assert.equal(r.headers['cache-control'], 'no-store', `${role} ${p}`);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', `${role} ${p}`);
    }
  });

  test('/metrics is Prometheus text for audit', async () => {
    const r = await call('audit', 'GET', '/metrics');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain/);
    assert.match(r.body.toString(), /airlock_requests_total\{/);
  });

  test('the OpenAPI document lists every route with a summary, tags and its role', async () => {
    const r = await call('audit', 'GET', '/api/v1/openapi.json');
    assert.equal(r.status, 200);
    const doc = JSON.parse(r.body.toString()) as { openapi: string; info: { title: string; version: string }; paths: Record<string, Record<string, { summary?: string; tags?: string[]; 'x-airlock-role'?: string }>> };
    assert.match(doc.openapi, /^3\./);
    assert.equal(doc.info.title, 'airlock');
    assert.equal(doc.info.version, (JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version);
    for (const [method, p] of routes) {
      const templated = p.split('?')[0].replace('/requests/1/', '/requests/{id}/').replace('/pins/1', '/pins/{id}').replace('/publishers/p', '/publishers/{name}').replace('/certs/abc/', '/certs/{serial}/');
      const op = doc.paths[templated]?.[method.toLowerCase()];
      assert.ok(op, `${method} ${templated} is documented`);
      assert.ok(op.summary, `${method} ${templated} has a summary`);
      assert.ok(op.tags && op.tags.length > 0, `${method} ${templated} has tags`);
      assert.ok(op['x-airlock-role'], `${method} ${templated} names its role`);
    }
    assert.equal(doc.paths['/api/v1/signing-key']?.get?.['x-airlock-role'], 'pull');
    assert.equal(doc.paths['/api/v1/pins']?.post?.['x-airlock-role'], 'admin');
  });
});

describe('audit export', () => {
  test('the JSONL export ends with a checkpoint and verifies with the mirror key', async () => {
    const r = await call('audit', 'GET', '/api/v1/audit?format=jsonl');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/x-ndjson');
    const lines = r.body.toString().trimEnd().split('\n');
    const last = JSON.parse(lines[lines.length - 1]) as { type: string; keyId: string };
    assert.equal(last.type, 'checkpoint');
    assert.equal(last.keyId, t.airlock.services.signer.keyId);
    const key = crypto.createPublicKey(t.airlock.services.signer.publicPem);
    const result = await verifyAuditExport(
      (async function* () {
        yield* lines;
      })(),
      key,
    );
    assert.equal(result.ok, true, JSON.stringify(result));
    const events = lines.slice(0, -1).map((l) => JSON.parse(l) as { action: string; actor: string; role: string; status: number; repository: string | null; digest: string | null });
    const approve = events.find((e) => e.action === 'admin.approve' && e.status === 200);
    assert.ok(approve, 'the approval is an audit event');
    assert.equal(approve.actor, 'test-admin');
    assert.equal(approve.repository, REPO);
    for (const action of ['admin.deny', 'admin.pin.add', 'admin.pin.delete', 'admin.publisher.add', 'admin.publisher.delete', 'admin.revoke', 'admin.cert.issue', 'admin.cert.revoke']) {
      assert.ok(events.some((e) => e.action === action), `${action} is audited`);
    }
    const refused = events.find((e) => e.action === 'admin.refused' && e.role === 'pull');
    assert.ok(refused, 'a refused call is audited');
    assert.equal(refused.status, 403);
    assert.ok(events.some((e) => e.action === 'admin.pin.add' && e.status === 400), 'a change with a bad body is audited');
  });

  test('the CSV export starts with the header row', async () => {
    const r = await call('audit', 'GET', '/api/v1/audit?format=csv');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/csv/);
    assert.equal(r.body.toString().split('\r\n')[0], CSV_HEADER);
  });

  test('a time range selects events, and a date that is not RFC 3339 is refused with 400', async () => {
    const future = await call('audit', 'GET', '/api/v1/audit?since=2999-01-01T00:00:00Z');
    assert.equal(future.status, 200);
    assert.equal(future.body.length, 0);
    const now = new Date(Date.now() + 60000).toISOString();
    const past = await call('audit', 'GET', `/api/v1/audit?since=2000-01-01T00:00:00%2B02:00&until=${now}`);
    assert.equal(past.status, 200);
    assert.ok(past.body.toString().trimEnd().split('\n').length > 2);
    const bad = await call('audit', 'GET', '/api/v1/audit?since=yesterday');
    assert.equal(bad.status, 400);
    assert.match(String(bad.json.error?.message), /since/);
    const reversed = await call('audit', 'GET', '/api/v1/audit?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z');
    assert.equal(reversed.status, 400);
    assert.equal(reversed.json.error?.field, '/until');
  });
});

describe('what a policy change leaves behind', () => {
  const adopted = makeImage([crypto.randomBytes(333)]);
  const reopened = makeImage([crypto.randomBytes(444)]);
  const seed = async (img: Image): Promise<number> => {
    const s = t.airlock.services;
    for (const l of img.layers) await s.blobs.put(sha(l), l);
    const p = parseManifest(img.manifest, null);
    s.content.saveManifest(REPO, { digest: img.digest, mediaType: p.mediaType, size: img.manifest.length, bytes: img.manifest }, p.refs, p.subject, p.artifactType);
    const refused = await pull(img.digest);
    assert.equal(refused.status, 403);
    return JSON.parse(refused.body.toString()).errors[0].detail.request as number;
  };
  type Listed = { digest: string; admission: string; signature: string };
  const listed = async (img: Image): Promise<Listed | undefined> =>
    ((await call('audit', 'GET', '/api/v1/images')).json.images as Listed[]).find((i) => i.digest === img.digest);

  test("an admin's pin of an approved digest outlives a deny of the request, and the image is signed anew as pinned", async () => {
    const id = await seed(adopted);
    assert.equal((await call('admin', 'POST', `/api/v1/requests/${id}/approve`)).status, 200);
    assert.equal((await pull(adopted.digest)).status, 200);
    const before = await listed(adopted);
    assert.equal(before?.admission, 'approval');
    const p = await call('admin', 'POST', '/api/v1/pins', { repository: REPO, digest: adopted.digest, note: 'kept by hand' });
    assert.equal(p.status, 201);
    assert.equal(p.json.source, 'api');
    assert.equal(p.json.note, 'kept by hand');
    assert.equal((await pull(adopted.digest)).status, 200);
    const now = await listed(adopted);
    assert.equal(now?.admission, 'pin', 'admitted by the pin now, without a restart');
    assert.notEqual(now?.signature, before?.signature, 'and signed anew');
    assert.equal((await call('admin', 'POST', `/api/v1/requests/${id}/deny`, { reason: 'the request was wrong' })).status, 200);
    assert.equal((await pull(adopted.digest)).status, 200, "the admin's pin still admits it");
  });

  test('a request approved and then pinned by hand is pending again once its last pin is deleted', async () => {
    const held = makeImage([crypto.randomBytes(555)]);
    const id = await seed(held);
    assert.equal((await call('admin', 'POST', `/api/v1/requests/${id}/approve`)).status, 200);
    const p = await call('admin', 'POST', '/api/v1/pins', { repository: REPO, digest: held.digest });
    assert.equal(p.status, 201, 'the approval pin becomes an API pin');
    assert.equal((await call('admin', 'DELETE', `/api/v1/pins/${String(p.json.id)}`)).status, 204);
    const pending = (await call('audit', 'GET', '/api/v1/requests?status=pending')).json.requests as { id: number }[];
    assert.ok(pending.some((r) => r.id === id), 'nothing admits it, so the request is pending again');
    assert.equal((await call('admin', 'POST', `/api/v1/requests/${id}/approve`)).status, 200);
  });

  test('deleting the pin an approval made puts its request back to pending, and it can be approved again', async () => {
    const id = await seed(reopened);
    assert.equal((await call('admin', 'POST', `/api/v1/requests/${id}/approve`)).status, 200);
    const pin = ((await call('audit', 'GET', '/api/v1/pins')).json.pins as { id: number; digest: string }[]).find((x) => x.digest === reopened.digest);
    assert.ok(pin);
    assert.equal((await call('admin', 'DELETE', `/api/v1/pins/${pin.id}`)).status, 204);
    assert.equal((await pull(reopened.digest)).status, 403);
    const pending = (await call('audit', 'GET', '/api/v1/requests?status=pending')).json.requests as { id: number; decidedBy: string | null }[];
    assert.ok(pending.some((r) => r.id === id && r.decidedBy === null), 'the request is pending again');
    assert.equal((await call('admin', 'POST', `/api/v1/requests/${id}/approve`)).status, 200);
    assert.equal((await pull(reopened.digest)).status, 200);
  });

  test('a revoked digest cannot be pinned, and a Docker short name is no canonical name for a revocation', async () => {
    const digest = sha(Buffer.from('revoked ahead of time'));
    assert.equal((await call('admin', 'POST', '/api/v1/images/revoke', { repository: REPO, digest, reason: 'known bad' })).status, 200);
    const pin = await call('admin', 'POST', '/api/v1/pins', { repository: REPO, digest });
    assert.equal(pin.status, 409);
    assert.match(String(pin.json.error?.message), /revoked/);
    for (const repository of ['library/app', 'bitnami/redis']) {
      const r = await call('admin', 'POST', '/api/v1/images/revoke', { repository, digest: pinned.digest, reason: 'short name' });
      assert.equal(r.status, 400, repository);
      assert.equal(r.json.error?.field, '/repository');
      assert.match(String(r.json.error?.message), /is not a registry host: give the canonical name, the upstream first, like docker\.io\//);
    }
    assert.equal((await pull(pinned.digest)).status, 200, 'nothing was revoked');
    // A host that is no longer configured may still be revoked ahead of time; a dot-less one when policy still names it.
    assert.equal((await call('admin', 'POST', '/api/v1/images/revoke', { repository: 'quay.io/old/app', digest, reason: 'gone' })).status, 200);
    t.airlock.services.policyStore.addPin({ repository: 'harbor/team/app', digest, tag: null, note: 'from an upstream since removed', source: 'api', createdBy: 'test' });
    assert.equal((await call('admin', 'POST', '/api/v1/images/revoke', { repository: 'harbor/team/app', digest, reason: 'gone too' })).status, 200);
  });

  test('an unknown query parameter is refused with 400 naming it, instead of being ignored', async () => {
    const r = await call('audit', 'GET', '/api/v1/audit?sinse=2030-01-01T00:00:00Z');
    assert.equal(r.status, 400);
    assert.equal(r.json.error?.field, '/sinse');
    assert.match(String(r.json.error?.message), /is not a known query parameter \(known: since, until, format\)/);
    assert.equal((await call('audit', 'GET', '/api/v1/requests?statuss=pending')).status, 400);
  });

  test('a time between two milliseconds counts as the later one in an export range', async () => {
    await t.airlock.services.audit.stored();
    const head = t.airlock.services.audit.head();
    const event = t.airlock.services.auditStore.get(head.seq);
    assert.ok(event);
    const sub = (iso: string): string => iso.replace(/Z$/, '0005Z');
    const until = await call('audit', 'GET', `/api/v1/audit?since=${event.time}&until=${sub(event.time)}`);
    assert.equal(until.status, 200);
    assert.ok(until.body.toString().includes(`"seq":${head.seq},`), 'an event at 10:00:00.000 is before until=10:00:00.0005');
    const since = await call('audit', 'GET', `/api/v1/audit?since=${sub(event.time)}`);
    assert.equal(since.status, 200);
    assert.ok(!since.body.toString().includes(`"seq":${head.seq},`), 'and not after since=10:00:00.0005');
    // RFC 3339 §5.6 allows a lowercase t: the same range, read the same way.
    const lower = (iso: string): string => sub(iso).replace('T', 't');
    assert.ok((await call('audit', 'GET', `/api/v1/audit?since=${event.time}&until=${lower(event.time)}`)).body.toString().includes(`"seq":${head.seq},`));
    assert.ok(!(await call('audit', 'GET', `/api/v1/audit?since=${lower(event.time)}`)).body.toString().includes(`"seq":${head.seq},`));
  });

  test('a time past the year 9999 (a leap second or an offset there) selects no later event than the year 9999 does', async () => {
    // Each is RFC 3339 and falls in the year 10000, whose ISO string sorts before every stored time.
    for (const late of ['9999-12-31T23:59:60Z', '9999-12-31T23:30:00-01:00', '9999-12-31T23:59:59.9995Z']) {
      const since = await call('audit', 'GET', `/api/v1/audit?since=${encodeURIComponent(late)}`);
      assert.equal(since.status, 200, late);
      assert.equal(since.body.length, 0, `since=${late} exports nothing`);
      const until = await call('audit', 'GET', `/api/v1/audit?since=2000-01-01T00:00:00Z&until=${encodeURIComponent(late)}`);
      assert.equal(until.status, 200, late);
      const first = JSON.parse(until.body.toString().split('\n')[0] || '{}') as { seq?: number };
      assert.equal(first.seq, 1, `until=${late} exports from the first event`);
    }
  });

  test('a lone surrogate in an admin\'s text is stored, answered and audited as the same U+FFFD', async () => {
    const odd = makeImage([crypto.randomBytes(557)]);
    const id = await seed(odd);
    const d = await call('admin', 'POST', `/api/v1/requests/${id}/deny`, { reason: 'half a pair \ud800 end' });
    assert.equal(d.status, 200);
    assert.equal(d.json.note, 'half a pair \ufffd end');
    const listed = (await call('audit', 'GET', '/api/v1/requests?status=denied')).json.requests as { id: number; note: string }[];
    assert.equal(listed.find((r) => r.id === id)?.note, 'half a pair \ufffd end');
    await t.airlock.services.audit.stored();
    const event = [...t.airlock.services.auditStore.range('0', '9', Number.MAX_SAFE_INTEGER)].filter((e) => e.action === 'admin.deny').pop();
    assert.equal(event?.reason, 'half a pair \ufffd end');
  });

  test('a publisher key text keeps only its public keys: a private key pasted with one is not stored or shown', async () => {
    const pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const text = `${pair.publicKey.export({ type: 'spki', format: 'pem' })}${pair.privateKey.export({ type: 'pkcs8', format: 'pem' })}`;
    const r = await call('admin', 'POST', '/api/v1/publishers', { name: 'careless', publicKey: text, repositories: ['ghcr.io/careless/*'] });
    assert.equal(r.status, 201);
    const shown = ((await call('audit', 'GET', '/api/v1/publishers')).json.publishers as { name: string; publicKey: string }[]).find((p) => p.name === 'careless');
    assert.ok(shown);
    assert.doesNotMatch(shown.publicKey, /PRIVATE/);
    assert.equal(shown.publicKey, pair.publicKey.export({ type: 'spki', format: 'pem' }));
    assert.doesNotMatch(JSON.stringify(t.airlock.services.policyStore.publisher('careless')), /PRIVATE/);
  });
});

describe('pins of an upstream the configuration no longer names', () => {
  test('a restart after renaming the upstream warns that its pins admit nothing', async () => {
    const other = await startTestAirlock({
      dir: path.join(tmp, 'renamed'),
      upstreams: [{ name: 'docker.io', url: 'https://127.0.0.1:1', connectTimeoutMs: 500, readTimeoutMs: 500 }],
    });
    try {
      const added = await callAs(other.bundle('admin').endpoint, 'POST', '/api/v1/pins', { repository: REPO, digest: pinned.digest });
      assert.equal(added.status, 201, added.body.toString());
      const doc = YAML.parse(fs.readFileSync(other.configPath, 'utf8')) as { upstreams: { name: string }[] };
      doc.upstreams[0].name = 'hub.example';
      fs.writeFileSync(other.configPath, YAML.stringify(doc));
      await other.restart();
      const warnings = fs
        .readFileSync(other.logPath, 'utf8')
        .split('\n')
        .filter((l) => l.includes('pins name an upstream that is not configured'))
        .map((l) => JSON.parse(l) as { level: number; upstream: string; pins: number });
      assert.deepEqual(warnings.map((w) => [w.level, w.upstream, w.pins]), [[40, 'docker.io', 1]]);
    } finally {
      await other.stop();
    }
  });
});
