// Pull-through: verified bytes, nothing bad cached, one upstream GET per blob, a tag served from its last digest when
// the upstream is unreachable, the breaker, 429.
// What a real registry does is tested against the real CNCF registry (docker-registry 2.8, over TLS): wrong bytes for
// a digest (one byte flipped in the blob's data file in its storage), the upstream stopped and started again, and its
// access log counting upstream GETs; the last describe adds token auth and a path prefix.
// An in-process fake upstream is used only for what a real registry cannot be made to do: a redirect to a blob storage
// host, a connection cut mid-body, a drip or a slow body, 400/429/500/503 answers, a blob without Content-Length or a
// manifest without layer sizes, a download that fails for one repository only, and a token service that fails.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Breaker } from '../server/mirror/breaker.js';
import { Upstream } from '../server/mirror/upstream.js';
import { RegistryError } from '../server/errors.js';
import { startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { buildImage, fetchManifest, inspectDigest, pushImage } from './harness/images.js';
import { stopAll, track, waitFor } from './harness/proc.js';
import { type HttpResult, type Registry, registryRequest, startRegistry } from './harness/registry.js';

const sha = (b: Buffer): string => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

type Mode = 'ok' | 'wrong-bytes' | 'cut' | 'drip' | 'slow' | 'hang' | '400' | '429' | '500' | '503' | 'redirect' | 'no-length';

// FakeUpstream serves blobs and manifests from memory, misbehaving per digest, and counts requests.
class FakeUpstream {
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, Buffer>();
  readonly tags = new Map<string, string>();
  readonly modes = new Map<string, Mode>();
  readonly hits: string[] = [];
  readonly authorizations: (string | undefined)[] = [];
  redirectTo = '';
  server!: http.Server;
  url = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  count(method: string, fragment: string): number {
    return this.hits.filter((h) => h.startsWith(`${method} `) && h.includes(fragment)).length;
  }

  addBlob(bytes: Buffer): string {
    const d = sha(bytes);
    this.blobs.set(d, bytes);
    return d;
  }

  addImage(repo: string, tag: string, layers: Buffer[]): { manifest: string; layers: string[] } {
    const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', n: crypto.randomBytes(4).toString('hex') }));
    const cd = this.addBlob(cfg);
    const lds = layers.map((l) => this.addBlob(l));
    const m = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length },
        layers: layers.map((l, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: lds[i], size: l.length })),
      }),
    );
    const md = sha(m);
    this.manifests.set(md, m);
    this.tags.set(`${repo}:${tag}`, md);
    return { manifest: md, layers: lds };
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = req.url ?? '';
    this.hits.push(`${req.method} ${url}`);
    this.authorizations.push(req.headers.authorization);
    if (url === '/v2/') return void res.end('{}');
    const stored = /^\/storage\/(sha256:[a-f0-9]{64})\?/.exec(url);
    const storedBytes = stored ? this.blobs.get(stored[1]) : undefined;
    if (storedBytes) {
      res.writeHead(200, { 'content-length': storedBytes.length, 'content-type': 'application/octet-stream' });
      return void res.end(storedBytes);
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/?]+)$/.exec(url);
    if (!m) {
      res.statusCode = 404;
      return void res.end();
    }
    const [, repo, kind, ref] = m;
    const digest = kind === 'manifests' && !ref.startsWith('sha256:') ? this.tags.get(`${repo}:${ref}`) : ref;
    const bytes = digest ? (kind === 'manifests' ? this.manifests.get(digest) : this.blobs.get(digest)) : undefined;
    const mode = (digest && this.modes.get(digest)) ?? this.modes.get(`${repo}:${ref}`) ?? 'ok';
    if (mode === 'redirect' && kind === 'blobs') {
      res.writeHead(307, { location: `${this.redirectTo}/storage/${digest}?signature=abc` });
      return void res.end();
    }
    if (mode === 'hang') {
      // No answer at all, past the read timeout: an upstream that accepts connections and is stuck.
      const timer = setTimeout(() => res.destroy(), 3000);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    if (mode === '429') {
      res.writeHead(429, { 'retry-after': '17', 'content-type': 'application/json' });
      return void res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
    }
    if (mode === '400' || mode === '500' || mode === '503') {
      res.statusCode = Number(mode);
      return void res.end();
    }
    if (!bytes || !digest) {
      res.statusCode = 404;
      return void res.end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}');
    }
    const headers: Record<string, string | number> = { 'docker-content-digest': digest };
    if (mode !== 'no-length') headers['content-length'] = bytes.length;
    headers['content-type'] = kind === 'manifests' ? OCI_MANIFEST : 'application/octet-stream';
    res.writeHead(200, headers);
    if (req.method === 'HEAD') return void res.end();
    if (mode === 'wrong-bytes') {
      const bad = Buffer.from(bytes);
      bad[bad.length >> 1] ^= 0xff;
      return void res.end(bad);
    }
    if (mode === 'cut') {
      res.write(bytes.subarray(0, bytes.length >> 1));
      setTimeout(() => res.destroy(), 50);
      return;
    }
    if (mode === 'slow') {
      // Slow but within the read timeout: the rest comes after 600 ms.
      res.write(bytes.subarray(0, 1024));
      const timer = setTimeout(() => res.end(bytes.subarray(1024)), 600);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    if (mode === 'drip') {
      res.write(bytes.subarray(0, 1024));
      const timer = setTimeout(() => res.end(bytes.subarray(1024)), 3000);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    res.end(bytes);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

let tmp: string;
let fake: FakeUpstream;
let cutManifest: string;
let storage: FakeUpstream;
let t: TestAirlock;
const images: Record<string, { manifest: string; layers: string[]; bytes: Buffer[] }> = {};
// reg is the real registry, configured in airlock as upstream REAL; real holds the images pushed to it.
const REAL = 'registry.acme.test';
let reg: Registry;
const real: Record<string, { manifest: string; layer: string; size: number }> = {};

// realBlobGet fetches a blob of library/<name> at the real registry through airlock, a transport failure as status -1.
async function realBlobGet(name: string, digest: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  try {
    return await t.request('pull', `/v2/${REAL}/library/${name}/blobs/${digest}`, { headers, timeoutMs: 60_000 });
  } catch (err) {
    return { status: -1, headers: {}, body: Buffer.from(String((err as Error).message)) };
  }
}

// registryGets counts the GETs of a path the real registry has answered, once its access log has every answered request.
async function registryGets(urlPath: string): Promise<number> {
  await reg.settle();
  return reg.requests().filter((e) => e.method === 'GET' && e.path === urlPath).length;
}

// corruptBlob flips one byte in the middle of a blob's data file in the real registry's storage (same size), as a
// disk or a tampered mirror would, and returns a function that puts the original bytes back.
function corruptBlob(digest: string): () => void {
  const hex = digest.slice('sha256:'.length);
  const data = path.join(reg.dataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  const original = fs.readFileSync(data);
  const bad = Buffer.from(original);
  bad[bad.length >> 1] ^= 0xff;
  fs.writeFileSync(data, bad);
  return () => fs.writeFileSync(data, original);
}

// whileRegistryStopped runs fn with the real registry stopped, then starts it again on the same port.
async function whileRegistryStopped<T>(fn: () => Promise<T>): Promise<T> {
  const port = reg.port;
  await reg.stop();
  try {
    return await fn();
  } finally {
    await reg.restart();
    track(reg);
    assert.equal(reg.port, port, 'the registry came back on its port, where airlock looks for it');
  }
}

function addImage(name: string, layers: Buffer[]): void {
  const r = fake.addImage(`library/${name}`, 'v1', layers);
  images[name] = { ...r, bytes: layers };
}

// blobGet fetches a blob, reporting a transport failure as status -1 instead of throwing.
async function blobGet(name: string, digest: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  try {
    return await t.request('pull', `/v2/library/${name}/blobs/${digest}`, { headers, timeoutMs: 20000 });
  } catch (err) {
    return { status: -1, headers: {}, body: Buffer.from(String((err as Error).message)) };
  }
}

function tmpFiles(): string[] {
  return fs.readdirSync(path.join(t.dir, 'blobs', 'tmp'));
}

async function assertNothingCached(digest: string): Promise<void> {
  await waitFor(() => tmpFiles().length === 0, { timeoutMs: 5000, what: 'temp files removed' });
  assert.equal(t.airlock.services.blobs.size(digest), null);
  assert.equal(fs.existsSync(t.airlock.services.blobs.pathOf(digest)), false);
}

async function auditEvents(action: string): Promise<{ digest: string | null; reason: string | null }[]> {
  const s = t.airlock.services;
  await s.audit.stored();
  return [...s.auditStore.range('0', '9', Number.MAX_SAFE_INTEGER)].filter((e) => e.action === action);
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-pull-'));
  fake = new FakeUpstream();
  await fake.start();
  // storage is the blob storage host a registry redirects blob GETs to: another origin, which must get no credentials.
  storage = new FakeUpstream();
  await storage.start();
  fake.redirectTo = storage.url;
  addImage('range', [crypto.randomBytes(1_000_000)]);
  addImage('cut', [crypto.randomBytes(2_000_000)]);
  addImage('drip', [crypto.randomBytes(200_000)]);
  addImage('limited', [crypto.randomBytes(1000)]);
  addImage('broken', [crypto.randomBytes(1000)]);
  addImage('stale', [crypto.randomBytes(1000)]);
  addImage('redirected', [crypto.randomBytes(100_000)]);
  addImage('notmp', [crypto.randomBytes(50_000)]);
  addImage('truncated', [crypto.randomBytes(80_000)]);
  addImage('revoked', [crypto.randomBytes(60_000)]);
  // Two repositories with one layer in common, for downloads of one digest from two sources.
  const common = crypto.randomBytes(120_000);
  addImage('shareda', [common]);
  addImage('sharedb', [common]);
  // sizeless: a manifest whose layer descriptor gives no size, served without Content-Length.
  const sizeless = crypto.randomBytes(70_000);
  const sizelessDigest = fake.addBlob(sizeless);
  fake.modes.set(sizelessDigest, 'no-length');
  const cfg = Buffer.from('{"architecture":"amd64","os":"linux","sizeless":true}');
  const sizelessManifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: fake.addBlob(cfg), size: cfg.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sizelessDigest }],
    }),
  );
  fake.manifests.set(sha(sizelessManifest), sizelessManifest);
  images.sizeless = { manifest: sha(sizelessManifest), layers: [sizelessDigest], bytes: [sizeless] };
  // The real registry's images, built in parallel (one work directory each) and pushed over TLS.
  reg = track(await startRegistry({ dir: path.join(tmp, 'registry'), accessLog: true }));
  const realLayers: Record<string, number> = {
    good: 300_000,
    big: 64 * 1024 * 1024,
    poison: 200_000,
    bigpoison: 3 * 1024 * 1024,
    stale: 1000,
    headless: 50_000,
  };
  await Promise.all(
    Object.entries(realLayers).map(async ([name, layerBytes]) => {
      const img = await buildImage(path.join(tmp, 'images', name), { tag: 'v1', files: { '/name.txt': `${name} ${crypto.randomUUID()}\n` }, layerBytes });
      await pushImage(img, `${reg.host}/library/${name}:v1`, { certDir: reg.certDir });
      const m = await fetchManifest(reg, `library/${name}`, 'v1');
      const layer = (JSON.parse(m.bytes.toString()) as { layers: { digest: string; size: number }[] }).layers[0];
      real[name] = { manifest: m.digest, layer: layer.digest, size: layer.size };
    }),
  );
  const pins = Object.entries(images).map(([name, i]) => `docker.io/library/${name}@${i.manifest}`);
  pins.push(...Object.entries(real).map(([name, i]) => `${REAL}/library/${name}@${i.manifest}`));
  // cutmanifest is pinned but not fetched before the tests: its manifest first comes from the upstream in one.
  cutManifest = fake.addImage('library/cutmanifest', 'v1', [crypto.randomBytes(1000)]).manifest;
  pins.push(`docker.io/library/cutmanifest@${cutManifest}`);
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [
      { name: 'docker.io', url: fake.url, insecure: true, readTimeoutMs: 1000, connectTimeoutMs: 1000, usernameEnv: 'FAKE_USER', passwordEnv: 'FAKE_PASS' },
      { name: REAL, url: reg.url, ca: reg.caPath, readTimeoutMs: 5000, connectTimeoutMs: 1000 },
    ],
    pins,
    env: { FAKE_USER: 'mirror', FAKE_PASS: 'upstream-secret' },
  });
  // Every image's manifest is fetched (and so its blobs become reachable) before the blob tests.
  for (const name of Object.keys(images)) {
    const r = await t.request('pull', `/v2/library/${name}/manifests/${images[name].manifest}`);
    assert.equal(r.status, 200, `manifest of ${name}`);
  }
  for (const [name, i] of Object.entries(real)) {
    const r = await t.request('pull', `/v2/${REAL}/library/${name}/manifests/${i.manifest}`);
    assert.equal(r.status, 200, `manifest of ${REAL}/library/${name}: ${r.body.toString()}`);
  }
});

after(async () => {
  await t?.stop();
  await fake?.stop();
  await storage?.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('pull-through', () => {
  test('an uncached blob is streamed, verified, cached, then served without the upstream', async () => {
    const { layer, size } = real.good;
    const upstreamBytes = (await registryRequest(reg, `/v2/library/good/blobs/${layer}`)).body;
    assert.equal(upstreamBytes.length, size);
    const first = await realBlobGet('good', layer);
    assert.equal(first.status, 200);
    assert.deepEqual(first.body, upstreamBytes);
    assert.equal(await registryGets(`/v2/library/good/blobs/${layer}`), 2, 'the test and airlock each asked the registry once');
    await waitFor(() => t.airlock.services.blobs.size(layer) !== null, { timeoutMs: 5000, what: 'blob cached' });
    // With the registry stopped, only the cache can answer.
    const second = await whileRegistryStopped(() => realBlobGet('good', layer));
    assert.equal(second.status, 200, second.body.toString());
    assert.deepEqual(second.body, upstreamBytes);
  });

  test('eight concurrent requests for one uncached 64 MiB blob cause one upstream GET and get identical bytes', async () => {
    const { layer, size } = real.big;
    assert.ok(size > 64 * 1024 * 1024, `the layer holds 64 MiB of random bytes: ${size}`);
    const rssBefore = process.memoryUsage().rss;
    const results = await Promise.all(Array.from({ length: 8 }, () => realBlobGet('big', layer)));
    const rssAfter = process.memoryUsage().rss;
    console.log(`8 x 64 MiB: test-process RSS ${Math.round(rssBefore / 2 ** 20)} -> ${Math.round(rssAfter / 2 ** 20)} MiB (responses are buffered by the test client)`);
    assert.equal(await registryGets(`/v2/library/big/blobs/${layer}`), 1, 'one GET of the blob in the registry access log');
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(sha(r.body), layer);
    }
    assert.equal(results[0].body.length, size);
  });

  test('a redirect to a blob storage host is followed without forwarding the upstream credentials', async () => {
    const { layers, bytes } = images.redirected;
    fake.modes.set(layers[0], 'redirect');
    const blob = bytes[0];
    storage.blobs.set(layers[0], blob);
    const r = await blobGet('redirected', layers[0]);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, blob);
    const at = fake.hits.findIndex((h) => h === `GET /v2/library/redirected/blobs/${layers[0]}`);
    assert.ok(at >= 0);
    assert.match(String(fake.authorizations[at]), /^Basic /, 'the upstream itself got the credentials');
    const stored = storage.hits.findIndex((h) => h.startsWith(`GET /storage/${layers[0]}`));
    assert.ok(stored >= 0, 'the storage host was asked');
    assert.equal(storage.authorizations[stored], undefined, 'the storage host got no credentials');
  });

  test('a Range request on an uncached blob is answered from the download', async () => {
    const { layers, bytes } = images.range;
    const r = await blobGet('range', layers[0], { range: 'bytes=1000-1999' });
    assert.equal(r.status, 206);
    assert.deepEqual(r.body, bytes[0].subarray(1000, 2000));
    assert.equal(r.headers['content-range'], `bytes 1000-1999/${bytes[0].length}`);
  });

  test('wrong bytes for a large blob abort the client mid-stream, one byte short', async () => {
    const { manifest, layer: bd } = real.bigpoison;
    const restore = corruptBlob(bd);
    try {
      assert.equal((await t.request('pull', `/v2/${REAL}/library/bigpoison/manifests/${manifest}`)).status, 200);
      const r = await realBlobGet('bigpoison', bd);
      assert.equal(r.status, -1, 'headers were sent, so the connection is aborted rather than ended cleanly');
      await assertNothingCached(bd);
    } finally {
      restore();
    }
  });

  test('wrong bytes for a digest abort the client, cache nothing and are audited', async () => {
    const d = real.poison.layer;
    const restore = corruptBlob(d);
    try {
      const r = await realBlobGet('poison', d);
      assert.ok(r.status === -1 || r.status === 503, `the client gets no complete response (aborted, or 503 before the first byte): ${r.status}`);
      await assertNothingCached(d);
      await waitFor(async () => (await auditEvents('upstream.fault')).some((e) => e.digest === d && e.reason === 'digest_mismatch'), { timeoutMs: 3000, what: 'fault audited' });
      const log = fs.readFileSync(t.logPath, 'utf8');
      assert.match(log, new RegExp(`"digest":"${d}"[^\\n]*"fault":"digest_mismatch"`));
    } finally {
      restore();
    }
    const again = await realBlobGet('poison', d);
    assert.equal(again.status, 200);
    assert.equal(sha(again.body), d);
  });

  test('a Range of a blob whose size nothing tells is answered with the whole blob, from one download, even when the cache cannot keep it', async () => {
    const s = t.airlock.services;
    const { layers, bytes } = images.sizeless;
    const limit = s.blobs.maxBytes;
    s.blobs.maxBytes = 1024;
    try {
      const r = await blobGet('sizeless', layers[0], { range: 'bytes=0-9' });
      assert.equal(r.status, 200, r.body.toString());
      assert.deepEqual(r.body, bytes[0]);
      assert.equal(fake.count('GET', layers[0]), 1);
      assert.equal(s.blobs.size(layers[0]), null, 'larger than the cache: not kept');
    } finally {
      s.blobs.maxBytes = limit;
    }
  });

  test('a pinned manifest is fetched by digest even when another manifest of the repository lists its digest as a layer', async () => {
    const s = t.airlock.services;
    const pinnedImage = fake.addImage('library/listed', 'v1', [crypto.randomBytes(2000)]);
    s.policyStore.addPin({ repository: 'docker.io/library/listed', digest: pinnedImage.manifest, tag: null, note: null, source: 'api', createdBy: 'test' });
    s.policy.changed();
    // A manifest nobody admitted, naming the pinned manifest's digest as one of its layers.
    const { parseManifest } = await import('../server/registry/manifest.js');
    const decoy = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(Buffer.from('{}')), size: 2 },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: pinnedImage.manifest, size: 100 }],
      }),
    );
    const p = parseManifest(decoy, null);
    s.content.saveManifest('docker.io/library/listed', { digest: sha(decoy), mediaType: p.mediaType, size: decoy.length, bytes: decoy }, p.refs, p.subject, p.artifactType);
    const r = await t.request('pull', `/v2/library/listed/manifests/${pinnedImage.manifest}`);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['docker-content-digest'], pinnedImage.manifest);
  });

  test('a connection cut mid-blob aborts the client and caches nothing', async () => {
    const d = images.cut.layers[0];
    fake.modes.set(d, 'cut');
    const r = await blobGet('cut', d);
    assert.ok(r.status === -1 || r.status === 503, `the client connection is aborted: ${r.status}`);
    await assertNothingCached(d);
    fake.modes.delete(d);
  });

  test('a manifest body cut off mid-way is UNAVAILABLE and an upstream fault, and stores nothing', async () => {
    fake.modes.set(cutManifest, 'cut');
    const r = await t.request('pull', `/v2/library/cutmanifest/manifests/${cutManifest}`);
    assert.equal(r.status, 503, r.body.toString());
    assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'UNAVAILABLE');
    const faults = (await auditEvents('upstream.fault')).filter((e) => e.digest === cutManifest);
    assert.deepEqual(
      faults.map((e) => e.reason),
      ['transfer_failed'],
    );
    fake.modes.delete(cutManifest);
    const again = await t.request('pull', `/v2/library/cutmanifest/manifests/${cutManifest}`);
    assert.equal(again.status, 200);
    assert.equal(sha(again.body), cutManifest);
  });

  test('a download failing from one repository before it began does not fail a client of another that joined it', async () => {
    const d = images.shareda.layers[0];
    assert.equal(d, images.sharedb.layers[0]);
    // shareda's upstream does not answer within the read timeout; sharedb's client joins that download meanwhile.
    fake.modes.set(`library/shareda:${d}`, 'hang');
    const a = blobGet('shareda', d);
    await waitFor(() => fake.count('GET', `/library/shareda/blobs/${d}`) === 1, { timeoutMs: 5000, what: "shareda's download under way" });
    const b = await blobGet('sharedb', d);
    assert.equal(b.status, 200);
    assert.deepEqual(b.body, images.sharedb.bytes[0]);
    assert.equal(fake.count('GET', `/library/sharedb/blobs/${d}`), 1, 'sharedb asked its own source once the joined download failed');
    const failed = await a;
    assert.ok(failed.status === -1 || failed.status === 503, `shareda's client fails with its own source: ${failed.status}`);
    fake.modes.delete(`library/shareda:${d}`);
    await waitFor(() => t.airlock.services.blobs.size(d) === images.sharedb.bytes[0].length, { timeoutMs: 5000, what: 'the verified download cached' });
  });

  test('a slow drip past the read timeout aborts the client and caches nothing', async () => {
    const d = images.drip.layers[0];
    fake.modes.set(d, 'drip');
    const r = await blobGet('drip', d);
    assert.ok(r.status === -1 || r.status === 503, `aborted, or refused before the body: ${r.status}`);
    await assertNothingCached(d);
    fake.modes.delete(d);
  });

  test('a 429 from the upstream becomes TOOMANYREQUESTS with Retry-After', async () => {
    fake.modes.set('library/limited:v2', '429');
    const r = await t.request('pull', '/v2/library/limited/manifests/v2');
    assert.equal(r.status, 429);
    assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'TOOMANYREQUESTS');
    assert.equal(r.headers['retry-after'], '17');
  });

  test('an unpinned tag is resolved upstream, and served from its last digest when the upstream fails', async () => {
    const ok = await t.request('pull', `/v2/${REAL}/library/stale/manifests/v1`);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['docker-content-digest'], real.stale.manifest);
    await reg.settle();
    assert.ok(reg.requests().some((e) => e.path === '/v2/library/stale/manifests/v1' && e.status === 200), 'the tag was resolved at the registry');
    // The upstream unreachable: the registry stopped.
    const stale = await whileRegistryStopped(() => t.request('pull', `/v2/${REAL}/library/stale/manifests/v1`));
    assert.equal(stale.status, 200, stale.body.toString());
    assert.equal(stale.headers['docker-content-digest'], real.stale.manifest);
  });

  test('an unpinned tag is served from its last digest when the upstream answers 500', async () => {
    // Not unreachable, but an upstream answering with a server error (which a real registry gives only for faults of its own).
    const ok = await t.request('pull', '/v2/library/stale/manifests/v1');
    assert.equal(ok.status, 200);
    fake.modes.set('library/stale:v1', '500');
    try {
      const stale = await t.request('pull', '/v2/library/stale/manifests/v1');
      assert.equal(stale.status, 200);
      assert.equal(stale.headers['docker-content-digest'], images.stale.manifest);
    } finally {
      fake.modes.delete('library/stale:v1');
    }
  });

  test('another 4xx for a tag is passed on as MANIFEST_UNKNOWN, not served from its last digest', async () => {
    const ok = await t.request('pull', '/v2/library/stale/manifests/v1');
    assert.equal(ok.status, 200);
    // distribution answers 400 MANIFEST_INVALID to an Accept it cannot convert a manifest for.
    fake.modes.set('library/stale:v1', '400');
    try {
      const refused = await t.request('pull', '/v2/library/stale/manifests/v1');
      assert.equal(refused.status, 404, refused.body.toString());
      const e = JSON.parse(refused.body.toString()).errors[0];
      assert.equal(e.code, 'MANIFEST_UNKNOWN');
      assert.match(e.message, /HTTP 400/);
    } finally {
      fake.modes.delete('library/stale:v1');
    }
  });

  test('HEAD of an uncached blob asks the upstream: UNAVAILABLE while it fails, the size once it answers', async () => {
    const { layer: d, size } = real.headless;
    const failed = await whileRegistryStopped(() => t.request('pull', `/v2/${REAL}/library/headless/blobs/${d}`, { method: 'HEAD' }));
    assert.equal(failed.status, 503);
    const ok = await t.request('pull', `/v2/${REAL}/library/headless/blobs/${d}`, { method: 'HEAD' });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['content-length'], String(size));
  });

  test('a blob that cannot be cached here (its temp folder gone) is UNAVAILABLE, and served once the folder is back', async () => {
    const d = images.notmp.layers[0];
    const tmpDir = path.join(t.dir, 'blobs', 'tmp');
    fs.rmSync(tmpDir, { recursive: true, force: true });
    try {
      const r = await blobGet('notmp', d);
      assert.equal(r.status, 503);
      assert.match(JSON.parse(r.body.toString()).errors[0].message, /cannot be cached here \(ENOENT\)/);
    } finally {
      fs.mkdirSync(tmpDir, { recursive: true });
    }
    const again = await blobGet('notmp', d);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, images.notmp.bytes[0]);
  });

  test('a cached file of another size than the manifest declares is dropped and the blob fetched again', async () => {
    const { layers, bytes } = images.truncated;
    assert.deepEqual((await blobGet('truncated', layers[0])).body, bytes[0]);
    await waitFor(() => t.airlock.services.blobs.size(layers[0]) !== null, { timeoutMs: 5000, what: 'blob cached' });
    // As a power loss before the data reached the disk would leave it (the rename kept, the bytes not).
    fs.truncateSync(t.airlock.services.blobs.pathOf(layers[0]), 1000);
    await t.restart();
    const before = fake.count('GET', layers[0]);
    const again = await blobGet('truncated', layers[0]);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, bytes[0], 'the whole blob, not the short file');
    assert.equal(fake.count('GET', layers[0]), before + 1, 'fetched again from the upstream');
    await waitFor(() => t.airlock.services.blobs.size(layers[0]) === bytes[0].length, { timeoutMs: 5000, what: 'the blob cached again, whole' });
    assert.match(fs.readFileSync(t.logPath, 'utf8'), /cached blob has the wrong size and content/);
  });

  test('a layer still downloading when its image is revoked does not stay in the cache', async () => {
    const { manifest, layers } = images.revoked;
    fake.modes.set(layers[0], 'slow');
    const pulling = blobGet('revoked', layers[0]);
    await waitFor(() => fake.count('GET', layers[0]) > 0, { timeoutMs: 5000, what: 'the download to start' });
    const r = await t.request('admin', '/api/v1/images/revoke', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ repository: 'docker.io/library/revoked', digest: manifest, reason: 'test' }),
    });
    assert.equal(r.status, 200, r.body.toString());
    await pulling;
    await waitFor(() => t.airlock.services.mirror.inflight.size === 0, { timeoutMs: 5000, what: 'the download to end' });
    await waitFor(() => t.airlock.services.blobs.size(layers[0]) === null && !fs.existsSync(t.airlock.services.blobs.pathOf(layers[0])), {
      timeoutMs: 5000,
      what: 'the revoked layer to be gone from the cache',
    });
    fake.modes.delete(layers[0]);
  });

  test('a 500 for one request does not open the breaker', async () => {
    const d = images.broken.layers[0];
    fake.modes.set(d, '500');
    for (let i = 0; i < 8; i++) assert.equal((await blobGet('broken', d)).status, 503);
    assert.equal(t.airlock.services.upstreams.get('docker.io')?.breaker.state, 'closed');
    fake.modes.delete(d);
  });

  test('repeated 503s open the breaker, after which clients get UNAVAILABLE at once without an upstream request', async () => {
    const d = images.broken.layers[0];
    fake.modes.set(d, '503');
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) codes.push((await blobGet('broken', d)).status);
    assert.ok(codes.every((c) => c === 503), codes.join(','));
    const before = fake.hits.length;
    const started = performance.now();
    const r = await blobGet('broken', d);
    const ms = performance.now() - started;
    console.log(`answer with the breaker open: ${ms.toFixed(1)} ms`);
    assert.equal(r.status, 503);
    assert.match(JSON.parse(r.body.toString()).errors[0].message, /circuit open/);
    assert.equal(r.headers['cache-control'], undefined, 'an UNAVAILABLE answer must not be cacheable');
    assert.equal(r.headers.etag, undefined);
    assert.equal(fake.hits.length, before);
    const m = await t.airlock.services.metrics.registry.getSingleMetricAsString('airlock_upstream_breaker_open');
    assert.match(m, /airlock_upstream_breaker_open\{upstream="docker.io"\} 1/);
    fake.modes.delete(d);
  });

  test('nothing the faults touched was left under its digest', () => {
    const store = path.join(t.dir, 'blobs', 'sha256');
    for (const prefix of fs.readdirSync(store)) {
      for (const hex of fs.readdirSync(path.join(store, prefix))) {
        const bytes = fs.readFileSync(path.join(store, prefix, hex));
        assert.equal(sha(bytes), `sha256:${hex}`, `cached blob ${hex} must hash to its name`);
      }
    }
  });
});

describe('an upstream whose token service fails', () => {
  // A registry that sends every request to its token service, which answers with tokenStatus.
  let tokenStatus = 503;
  let server: http.Server;
  let upstream: Upstream;
  const breaker = new Breaker(2, 100);
  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url?.startsWith('/token')) {
        res.writeHead(tokenStatus, tokenStatus === 429 ? { 'retry-after': '7' } : {});
        return void res.end(tokenStatus === 200 ? JSON.stringify({ token: 'fresh', expires_in: 300 }) : '');
      }
      if (req.headers.authorization !== 'Bearer fresh') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${(server.address() as AddressInfo).port}/token",service="fake"` });
        return void res.end();
      }
      res.writeHead(200, { 'content-length': 2 });
      res.end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    upstream = new Upstream({ name: 'fake', url, username: null, password: null, ca: null, insecure: true, connectTimeoutMs: 1000, readTimeoutMs: 1000 }, { exchange() {}, breaker() {} }, breaker);
  });
  after(async () => {
    await upstream.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const code = async (): Promise<string> => {
    try {
      const res = await upstream.fetch('GET', '/v2/acme/app/manifests/v1', 'acme/app');
      res.body.resume();
      return String(res.status);
    } catch (err) {
      assert.ok(err instanceof RegistryError, String(err));
      return err.code;
    }
  };

  test('a token service that is down counts against the breaker, and a refusal in the trial closes it again', async () => {
    assert.deepEqual([await code(), await code()], ['UNAVAILABLE', 'UNAVAILABLE']);
    assert.equal(breaker.state, 'open');
    tokenStatus = 200;
    assert.equal(await code(), 'UNAVAILABLE', 'while open, nothing is asked');
    await new Promise((r) => setTimeout(r, 120));
    tokenStatus = 403;
    // The half-open trial ends in the token service's refusal: the upstream answered, so the breaker closes.
    assert.equal(await code(), 'DENIED');
    assert.equal(breaker.state, 'closed');
    tokenStatus = 200;
    assert.equal(await code(), '200');
  });

  test("a token service's 429 becomes TOOMANYREQUESTS with its Retry-After", async () => {
    tokenStatus = 429;
    try {
      await upstream.fetch('GET', '/v2/acme/other/manifests/v1', 'acme/other');
      assert.fail('expected a rate-limit error');
    } catch (err) {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.code, 'TOOMANYREQUESTS');
      assert.equal(err.headers['retry-after'], '7');
    }
    assert.equal(breaker.state, 'closed');
  });
});

describe('pull-through from the real CNCF registry with token auth', () => {
  test('an upstream served under a path prefix is asked there, for manifests and blobs', async () => {
    const dir = path.join(tmp, 'prefixed');
    const plain = track(await startRegistry({ dir: path.join(dir, 'plain') }));
    const img = await buildImage(path.join(dir, 'img'), { tag: 'v1', files: { '/hello.txt': `hello ${crypto.randomUUID()}\n` } });
    await pushImage(img, `${plain.host}/acme/app:v1`, { certDir: plain.certDir });
    const digest = await inspectDigest(plain, 'acme/app', 'v1');
    await plain.stop();
    // The same storage, served only under /artifactory/api/docker/remote/v2/, as a repository manager serves a registry.
    const prefixed = track(await startRegistry({ dir: path.join(dir, 'prefixed'), ca: plain.ca, dataDir: plain.dataDir, prefix: '/artifactory/api/docker/remote' }));
    const root = await registryRequest(prefixed, `/v2/acme/app/manifests/${digest}`);
    assert.equal(root.status, 404, 'the registry answers nothing outside its prefix');
    const a = await startTestAirlock({
      dir: path.join(dir, 'airlock'),
      upstreams: [{ name: 'registry.acme.test', url: `${prefixed.url}/artifactory/api/docker/remote/`, ca: prefixed.caPath }],
      pins: [`registry.acme.test/acme/app:v1@${digest}`],
    });
    try {
      const m = await a.request('pull', '/v2/registry.acme.test/acme/app/manifests/v1');
      assert.equal(m.status, 200, m.body.toString());
      assert.equal(m.headers['docker-content-digest'], digest);
      const layer = (JSON.parse(m.body.toString()) as { layers: { digest: string }[] }).layers[0].digest;
      const b = await a.request('pull', `/v2/registry.acme.test/acme/app/blobs/${layer}`);
      assert.equal(b.status, 200);
      assert.equal(sha(b.body), layer);
    } finally {
      await a.stop();
      await prefixed.stop();
    }
  });


  test('airlock answers the bearer challenge, caches the token, and serves verified bytes', async () => {
    const dir = path.join(tmp, 'token');
    const reg = track(await startRegistry({ dir: path.join(dir, 'upstream'), auth: 'token', username: 'mirror', password: 's3cret-token-pass' }));
    const img = await buildImage(path.join(dir, 'img'), { tag: 'v1', files: { '/hello.txt': `hello ${crypto.randomUUID()}\n` } });
    await pushImage(img, `${reg.host}/acme/app:v1`, { certDir: reg.certDir, creds: 'mirror:s3cret-token-pass' });
    const digest = await inspectDigest(reg, 'acme/app', 'v1');
    const a = await startTestAirlock({
      dir: path.join(dir, 'airlock'),
      upstreams: [{ name: 'registry.acme.test', url: reg.url, ca: reg.caPath, usernameEnv: 'UP_USER', passwordEnv: 'UP_PASS' }],
      pins: [`registry.acme.test/acme/app:v1@${digest}`],
      env: { UP_USER: 'mirror', UP_PASS: 's3cret-token-pass' },
    });
    try {
      const tokensBefore = reg.tokenServer?.tokenRequests ?? 0;
      const m = await a.request('pull', '/v2/registry.acme.test/acme/app/manifests/v1');
      assert.equal(m.status, 200);
      assert.equal(m.headers['docker-content-digest'], digest);
      const manifest = JSON.parse(m.body.toString()) as { layers: { digest: string }[] };
      const upstreamLayer = await registryRequest(reg, `/v2/acme/app/blobs/${manifest.layers[0].digest}`);
      const b = await a.request('pull', `/v2/registry.acme.test/acme/app/blobs/${manifest.layers[0].digest}`);
      assert.equal(b.status, 200);
      assert.deepEqual(b.body, upstreamLayer.body);
      const tokens = (reg.tokenServer?.tokenRequests ?? 0) - tokensBefore;
      assert.equal(tokens, 2, 'one token for airlock (cached across manifest and blob) and one for the test client');
      assert.ok(!fs.readFileSync(a.logPath, 'utf8').includes('s3cret-token-pass'), 'the upstream password never reaches the log');
    } finally {
      await a.stop();
    }
  });
});
