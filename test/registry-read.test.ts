// The OCI read checklist (PROTOCOL.md §7) against content seeded into airlock's store, over real mutual TLS.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { readRequestLog } from './harness/clients.js';
import { stopAll, track, waitFor } from './harness/proc.js';
import type { AuditEvent } from '../server/audit/chain.js';
import { parseManifest } from '../server/registry/manifest.js';
import { RememberedAnswers } from '../server/registry/remembered.js';
import { type Registry, startRegistry } from './harness/registry.js';

const sha = (b: Buffer): string => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

let tmp: string;
let upstream: Registry;
let t: TestAirlock;
const repo = 'docker.io/library/seeded';
const blob2k = crypto.randomBytes(2048);
const empty = Buffer.alloc(0);
const emptyJson = Buffer.from('{}');
const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
let manifest: Buffer;
let index: Buffer;
let artifact: Buffer;
let unpinned: Buffer;
// Two blobs of several read chunks each, for concurrent downloads through the recycled read buffers.
const bigA = crypto.randomBytes(5 * 1024 * 1024 + 123);
const bigB = crypto.randomBytes(4 * 1024 * 1024 + 77);
// A blob too big to sit in socket buffers, so a client that stops reading leaves the response unfinished.
const huge = crypto.randomBytes(48 * 1024 * 1024);
let bigManifest: Buffer;
// inner is a manifest whose digest an admitted image manifest (layered) lists as a layer: that admits it as a blob,
// never as a manifest.
let inner: Buffer;
let layered: Buffer;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-read-'));
  upstream = track(await startRegistry({ dir: path.join(tmp, 'upstream') }));
  manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(blob2k), size: blob2k.length },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(empty), size: 0 },
        { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(emptyJson), size: 2 },
      ],
    }),
  );
  index = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha(manifest), size: manifest.length, platform: { architecture: 'amd64', os: 'linux' } }] }),
  );
  artifact = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/vnd.example.sbom',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(emptyJson), size: 2 },
      layers: [{ mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(emptyJson), size: 2 }],
      subject: { mediaType: OCI_MANIFEST, digest: sha(manifest), size: manifest.length },
      annotations: { 'org.example': 'sbom' },
    }),
  );
  bigManifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [bigA, bigB, huge].map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(b), size: b.length })),
    }),
  );
  unpinned = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(blob2k), size: 2048 }, layers: [] }));
  inner = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length }, layers: [], annotations: { inner: 'yes' } }));
  layered = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(emptyJson), size: 2 }, layers: [{ mediaType: OCI_MANIFEST, digest: sha(inner), size: inner.length }] }),
  );
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [{ name: 'docker.io', url: upstream.url, ca: upstream.caPath }],
    pins: [`${repo}:1.0@${sha(manifest)}`, `${repo}@${sha(index)}`, `${repo}:art@${sha(artifact)}`, `${repo}@${sha(bigManifest)}`, `${repo}@${sha(layered)}`],
  });
  const s = t.airlock.services;
  for (const b of [blob2k, empty, emptyJson, config, bigA, bigB, huge]) await s.blobs.put(sha(b), b);
  for (const m of [manifest, index, artifact, unpinned, bigManifest, inner, layered]) {
    const p = parseManifest(m, null);
    s.content.saveManifest(repo, { digest: sha(m), mediaType: p.mediaType, size: m.length, bytes: m }, p.refs, p.subject, p.artifactType);
  }
  for (const tag of ['a', 'b', 'c', 'd']) s.policyStore.addPin({ repository: repo, digest: sha(manifest), tag, note: null, source: 'api', createdBy: 'test' });
  s.content.setTag(repo, 'unpinned', sha(unpinned));
  s.policy.changed();
});

after(async () => {
  await t?.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('registry read API', () => {
  test('GET /v2/ answers 200 with Docker-Distribution-API-Version', async () => {
    const r = await t.request('pull', '/v2/');
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  });

  test('an unknown blob digest is 404 BLOB_UNKNOWN on GET and HEAD', async () => {
    const d = sha(Buffer.from('hello world'));
    const g = await t.request('pull', `/v2/library/seeded/blobs/${d}`);
    assert.equal(g.status, 404);
    assert.equal(JSON.parse(g.body.toString()).errors[0].code, 'BLOB_UNKNOWN');
    const h = await t.request('pull', `/v2/library/seeded/blobs/${d}`, { method: 'HEAD' });
    assert.equal(h.status, 404);
    assert.equal(h.body.length, 0);
  });

  test('HEAD of a blob sends Content-Length and Docker-Content-Digest and no body', async () => {
    const r = await t.request('pull', `/v2/library/seeded/blobs/${sha(blob2k)}`, { method: 'HEAD' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], '2048');
    assert.equal(r.headers['docker-content-digest'], sha(blob2k));
    assert.equal(r.body.length, 0);
  });

  test('GET of a blob returns the exact bytes with its digest, ETag and media type', async () => {
    const r = await t.request('pull', `/v2/library/seeded/blobs/${sha(blob2k)}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, blob2k);
    assert.equal(r.headers['content-length'], '2048');
    assert.equal(r.headers['docker-content-digest'], sha(blob2k));
    assert.equal(r.headers.etag, `"${sha(blob2k)}"`);
    // The media type is the admitted manifest's descriptor's, not the unadmitted one that lists the bytes as a config.
    assert.equal(r.headers['content-type'], 'application/vnd.oci.image.layer.v1.tar');
    const c = await t.request('pull', `/v2/library/seeded/blobs/${sha(config)}`, { method: 'HEAD' });
    assert.equal(c.headers['content-type'], 'application/vnd.oci.image.config.v1+json');
  });

  test('bytes declared as a web page are never run as one: nosniff, a sandbox policy and attachment on every /v2 answer', async () => {
    const s = t.airlock.services;
    const page = Buffer.from('<html><script>fetch("/api/v1/certs",{method:"POST"})</script></html>');
    await s.blobs.put(sha(page), page);
      const m = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
        layers: [{ mediaType: 'text/html', digest: sha(page), size: page.length }],
      }),
    );
    const p = parseManifest(m, null);
    s.content.saveManifest(repo, { digest: sha(m), mediaType: p.mediaType, size: m.length, bytes: m }, p.refs, p.subject, p.artifactType);
    s.policyStore.addPin({ repository: repo, digest: sha(m), tag: null, note: null, source: 'api', createdBy: 'test' });
    s.policy.changed();
    const blob = await t.request('pull', `/v2/library/seeded/blobs/${sha(page)}`);
    assert.equal(blob.status, 200);
    assert.equal(blob.headers['content-type'], 'text/html', 'the declared type, as SPEC §4 says');
    assert.equal(blob.headers['content-disposition'], 'attachment');
    for (const path of [`/v2/library/seeded/blobs/${sha(page)}`, `/v2/library/seeded/manifests/${sha(m)}`, `/v2/library/seeded/manifests/${sha(m)}`, '/v2/', '/v2/library/seeded/blobs/sha256:nope']) {
      const r = await t.request('pull', path);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', path);
      assert.equal(r.headers['content-security-policy'], "default-src 'none'; sandbox", path);
    }
  });

  const ranges: [string, number, [number, number] | null][] = [
    ['bytes=500-1499', 206, [500, 1499]],
    ['bytes=500-', 206, [500, 2047]],
    ['bytes=-500', 206, [1548, 2047]],
    ['bytes=2000-5000', 206, [2000, 2047]],
    ['bytes=0-0', 206, [0, 0]],
    ['bytes=500-0', 416, null],
    ['bytes=5000-10000', 416, null],
    ['bytes=2048-', 416, null],
    ['bytes=-0', 416, null],
    ['bytes=1-2,5-6', 200, null],
    ['bytes=99999999999999999999-', 416, null],
    ['bytes=abc', 416, null],
  ];
  for (const [range, status, span] of ranges) {
    test(`Range ${range} answers ${status}`, async () => {
      const r = await t.request('pull', `/v2/library/seeded/blobs/${sha(blob2k)}`, { headers: { range } });
      assert.equal(r.status, status);
      if (status === 200) {
        // Several ranges: the Range header is ignored and the whole blob sent.
        assert.deepEqual(r.body, blob2k);
        assert.equal(r.headers['content-range'], undefined);
      } else if (span) {
        assert.deepEqual(r.body, blob2k.subarray(span[0], span[1] + 1));
        assert.equal(r.headers['content-range'], `bytes ${span[0]}-${span[1]}/2048`);
        assert.equal(r.headers['content-length'], String(span[1] - span[0] + 1));
      } else {
        assert.equal(r.headers['content-range'], 'bytes */2048');
        assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'RANGE_INVALID');
        for (const h of ['etag', 'docker-content-digest', 'cache-control']) assert.equal(r.headers[h], undefined, `an error carries no ${h}`);
      }
    });
  }

  test('concurrent downloads of different blobs, whole and by range, each get exactly their own bytes', async () => {
    // Blob reads recycle 1 MiB buffers between downloads: a buffer handed out while still in use would mix blobs.
    const ranges: [Buffer, string | null][] = [
      [bigA, null],
      [bigB, null],
      [bigA, 'bytes=1048000-3146000'],
      [bigB, 'bytes=1048576-'],
      [bigA, null],
      [bigB, 'bytes=-2097153'],
    ];
    const rs = await Promise.all(
      ranges.map(([b, range]) => t.request('pull', `/v2/library/seeded/blobs/${sha(b)}`, range === null ? {} : { headers: { range } })),
    );
    for (const [i, r] of rs.entries()) {
      const [b, range] = ranges[i];
      if (range === null) {
        assert.equal(r.status, 200);
        assert.equal(sha(r.body), sha(b), `download ${i} is the whole blob`);
        continue;
      }
      assert.equal(r.status, 206);
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(r.headers['content-range']));
      assert.ok(m, `download ${i} has a Content-Range`);
      assert.deepEqual(r.body, b.subarray(Number(m[1]), Number(m[2]) + 1), `download ${i} is exactly its range`);
    }
  });

  test('a download the client stops half way is audited and logged as aborted', async () => {
    const b = t.bundle('pull');
    const before = t.airlock.services.audit.head().seq;
    const u = new URL(`${t.url}/v2/library/seeded/blobs/${sha(huge)}`);
    const received = await new Promise<number>((resolve, reject) => {
      const req = https.get(
        { host: u.hostname, port: u.port, path: u.pathname, ca: fs.readFileSync(b.endpoint.caPath ?? ''), cert: fs.readFileSync(b.endpoint.clientCertPath ?? ''), key: fs.readFileSync(b.endpoint.clientKeyPath ?? '') },
        (res) => {
          res.once('data', (chunk: Buffer) => {
            res.pause();
            setTimeout(() => {
              req.destroy();
              resolve(chunk.length);
            }, 200);
          });
        },
      );
      req.on('error', (err) => (err.message.includes('socket hang up') ? undefined : reject(err)));
    });
    assert.ok(received < huge.length);
    let event: AuditEvent | undefined;
    await waitFor(
      async () => {
        await t.airlock.services.audit.stored();
        event = [...t.airlock.services.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].find((e) => e.seq > before && e.action === 'pull.blob' && e.digest === sha(huge));
        return event !== undefined;
      },
      { timeoutMs: 5000, what: 'the aborted download in the audit log' },
    );
    assert.equal(event?.reason, 'aborted');
    assert.equal(event?.status, null);
    assert.equal(event?.bytes, null);
    assert.equal(event?.actor, 'test-pull');
  });

  test("HEAD ignores Range, an unsatisfiable one too: it answers as the whole blob's GET would", async () => {
    for (const range of ['bytes=999999-', 'bytes=0-9']) {
      const r = await t.request('pull', `/v2/library/seeded/blobs/${sha(blob2k)}`, { method: 'HEAD', headers: { range } });
      assert.equal(r.status, 200, range);
      assert.equal(r.headers['content-length'], '2048', range);
      assert.equal(r.headers['content-range'], undefined, range);
    }
  });

  test('If-Range with the blob\'s ETag keeps the Range; with another validator or a date the whole blob is sent', async () => {
    const url = `/v2/library/seeded/blobs/${sha(blob2k)}`;
    const same = await t.request('pull', url, { headers: { range: 'bytes=0-9', 'if-range': `"${sha(blob2k)}"` } });
    assert.equal(same.status, 206);
    assert.deepEqual(same.body, blob2k.subarray(0, 10));
    // RFC 9110 §13.1.5: a validator that does not match strongly (another ETag, a weak one, a date, as airlock sends no
    // Last-Modified) means the client's part belongs to something else: the Range is ignored.
    for (const ifRange of [`"${sha(empty)}"`, `W/"${sha(blob2k)}"`, 'Tue, 08 Dec 2026 00:00:00 GMT']) {
      const r = await t.request('pull', url, { headers: { range: 'bytes=0-9', 'if-range': ifRange } });
      assert.equal(r.status, 200, ifRange);
      assert.deepEqual(r.body, blob2k, ifRange);
      assert.equal(r.headers['content-range'], undefined, ifRange);
    }
    const unsatisfiable = await t.request('pull', url, { headers: { range: 'bytes=999999-', 'if-range': `"${sha(empty)}"` } });
    assert.equal(unsatisfiable.status, 200, 'a Range that is ignored is not checked either');
  });

  test('a Range that is not in bytes is ignored and the whole blob is sent', async () => {
    const r = await t.request('pull', `/v2/library/seeded/blobs/${sha(blob2k)}`, { headers: { range: 'items=1-2' } });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 2048);
  });

  test('the empty blob and the {} blob are retrievable', async () => {
    const e = await t.request('pull', `/v2/library/seeded/blobs/${sha(empty)}`);
    assert.equal(e.status, 200);
    assert.equal(e.body.length, 0);
    assert.equal(e.headers['content-length'], '0');
    const j = await t.request('pull', `/v2/library/seeded/blobs/${sha(emptyJson)}`);
    assert.equal(j.status, 200);
    assert.equal(j.body.toString(), '{}');
  });

  test('unknown manifests are 404 MANIFEST_UNKNOWN by digest, by tag and for an invalid tag', async () => {
    for (const ref of [sha(crypto.randomBytes(8)), `missing-${crypto.randomBytes(4).toString('hex')}`, '.INVALID_MANIFEST_NAME']) {
      for (const method of ['GET', 'HEAD']) {
        const r = await t.request('pull', `/v2/library/seeded/manifests/${ref}`, { method });
        assert.equal(r.status, 404, `${method} ${ref}`);
        if (method === 'GET') assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
      }
    }
  });

  test('a malformed digest is 400 DIGEST_INVALID with a registered code', async () => {
    for (const ref of ['sha256:baddigeststring', 'sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789', 'md5:abc', 'sha512:' + 'a'.repeat(128)]) {
      const r = await t.request('pull', `/v2/library/seeded/manifests/${ref}`);
      assert.equal(r.status, 400, ref);
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'DIGEST_INVALID');
    }
  });

  for (const [label, ref] of [
    ['digest', () => sha(manifest)],
    ['tag', () => '1.0'],
  ] as const) {
    test(`GET and HEAD of a pinned manifest by ${label} send the exact bytes and every header`, async () => {
      const g = await t.request('pull', `/v2/library/seeded/manifests/${ref()}`, { headers: { accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
      assert.equal(g.status, 200);
      assert.deepEqual(g.body, manifest);
      assert.equal(g.headers['content-type'], OCI_MANIFEST);
      assert.equal(g.headers['content-length'], String(manifest.length));
      assert.equal(g.headers['docker-content-digest'], sha(manifest));
      assert.equal(g.headers.etag, `"${sha(manifest)}"`);
      assert.equal(g.headers['docker-distribution-api-version'], 'registry/2.0');
      const h = await t.request('pull', `/v2/library/seeded/manifests/${ref()}`, { method: 'HEAD' });
      assert.equal(h.status, 200);
      assert.equal(h.body.length, 0);
      assert.equal(h.headers['content-length'], String(manifest.length));
      assert.equal(h.headers['docker-content-digest'], sha(manifest));
    });
  }

  test('If-None-Match with the digest ETag answers 304: alone, in a list, weak, bare, or *', async () => {
    const d = sha(manifest);
    for (const inm of [`"${d}"`, `"sha256:${'0'.repeat(64)}", W/"${d}"`, d, '*']) {
      const r = await t.request('pull', `/v2/library/seeded/manifests/${d}`, { headers: { 'if-none-match': inm } });
      assert.equal(r.status, 304, inm);
    }
    const other = await t.request('pull', `/v2/library/seeded/manifests/${d}`, { headers: { 'if-none-match': `"sha256:${'0'.repeat(64)}"` } });
    assert.equal(other.status, 200);
    const blob = await t.request('pull', `/v2/library/seeded/blobs/${sha(blob2k)}`, { headers: { 'if-none-match': `W/"${sha(blob2k)}"` } });
    assert.equal(blob.status, 304);
  });

  test('only an index admits the manifests it lists: a manifest listed as a layer is refused, an index child asked for as a blob is unknown', async () => {
    const r = await t.request('pull', `/v2/library/seeded/manifests/${sha(inner)}`);
    assert.equal(r.status, 403);
    assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'DENIED');
    const b = await t.request('pull', `/v2/library/seeded/blobs/${sha(manifest)}`);
    assert.equal(b.status, 404);
    assert.equal(JSON.parse(b.body.toString()).errors[0].code, 'BLOB_UNKNOWN');
  });

  test('an index is served with the index media type, and its child by digest', async () => {
    const r = await t.request('pull', `/v2/library/seeded/manifests/${sha(index)}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], OCI_INDEX);
    assert.deepEqual(r.body, index);
  });

  test('a manifest no pin admits is refused with DENIED naming the request', async () => {
    const r = await t.request('pull', `/v2/library/seeded/manifests/${sha(unpinned)}`);
    assert.equal(r.status, 403);
    const e = JSON.parse(r.body.toString()).errors[0];
    assert.equal(e.code, 'DENIED');
    assert.equal(e.detail.repository, repo);
    assert.equal(e.detail.digest, sha(unpinned));
    assert.equal(typeof e.detail.request, 'number');
    assert.match(e.message, new RegExp(`request ${e.detail.request}`));
  });

  test('tags/list lists admitted tags in order and paginates with n, last and Link', async () => {
    const all = await t.request('pull', '/v2/library/seeded/tags/list');
    assert.equal(all.status, 200);
    const body = JSON.parse(all.body.toString());
    assert.deepEqual(body.tags, ['1.0', 'a', 'art', 'b', 'c', 'd']);
    const p1 = await t.request('pull', '/v2/library/seeded/tags/list?n=2');
    assert.deepEqual(JSON.parse(p1.body.toString()).tags, ['1.0', 'a']);
    assert.match(String(p1.headers.link), /<\/v2\/library\/seeded\/tags\/list\?n=2&last=a>; rel="next"/);
    const p2 = await t.request('pull', '/v2/library/seeded/tags/list?n=2&last=a');
    assert.deepEqual(JSON.parse(p2.body.toString()).tags, ['art', 'b']);
    const end = await t.request('pull', '/v2/library/seeded/tags/list?n=10&last=c');
    assert.deepEqual(JSON.parse(end.body.toString()).tags, ['d']);
    assert.equal(end.headers.link, undefined);
    const zero = await t.request('pull', '/v2/library/seeded/tags/list?n=0');
    assert.deepEqual(JSON.parse(zero.body.toString()).tags, []);
    assert.equal(zero.headers.link, undefined);
    const bad = await t.request('pull', '/v2/library/seeded/tags/list?n=-1');
    assert.equal(bad.status, 400);
  });

  test('referrers lists the admitted artifact with its artifactType and annotations, and filters', async () => {
    const r = await t.request('pull', `/v2/library/seeded/referrers/${sha(manifest)}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], OCI_INDEX);
    const idx = JSON.parse(r.body.toString());
    assert.equal(idx.schemaVersion, 2);
    const art = idx.manifests.find((m: { digest: string }) => m.digest === sha(artifact));
    assert.ok(art, 'artifact listed');
    assert.equal(art.artifactType, 'application/vnd.example.sbom');
    assert.deepEqual(art.annotations, { 'org.example': 'sbom' });
    const f = await t.request('pull', `/v2/library/seeded/referrers/${sha(manifest)}?artifactType=application/vnd.other`);
    assert.equal(f.headers['oci-filters-applied'], 'artifactType');
    assert.deepEqual(JSON.parse(f.body.toString()).manifests, []);
    const unknown = await t.request('pull', `/v2/library/seeded/referrers/${sha(crypto.randomBytes(4))}`);
    assert.equal(unknown.status, 200);
    assert.deepEqual(JSON.parse(unknown.body.toString()).manifests, []);
    const bad = await t.request('pull', '/v2/library/seeded/referrers/sha256:nothex');
    assert.equal(bad.status, 400);
  });

  test("airlock's own signature, listed by referrers, is served by its digest as under its .sig tag, and asks for no approval", async () => {
    const d = sha(manifest);
    const sigPath = `/v2/library/seeded/manifests/sha256-${d.slice(7)}.sig`;
    assert.equal((await t.request('pull', `/v2/library/seeded/manifests/${d}`)).status, 200);
    await waitFor(async () => (await t.request('pull', sigPath)).status === 200, { timeoutMs: 10_000, what: 'the signature of the admitted manifest' });
    const byTag = await t.request('pull', sigPath);
    const pending = async (): Promise<number> => JSON.parse((await t.request('admin', '/api/v1/requests?status=pending')).body.toString()).requests.length;
    const before = await pending();
    const listed = JSON.parse((await t.request('pull', `/v2/library/seeded/referrers/${d}?artifactType=${encodeURIComponent('application/vnd.dev.cosign.artifact.sig.v1+json')}`)).body.toString()).manifests as { digest: string }[];
    assert.equal(listed.length, 1);
    assert.equal(listed[0].digest, byTag.headers['docker-content-digest']);
    for (const method of ['GET', 'HEAD']) {
      const r = await t.request('pull', `/v2/library/seeded/manifests/${listed[0].digest}`, { method });
      assert.equal(r.status, 200, `${method}: ${r.body.toString()}`);
      assert.equal(r.headers['docker-content-digest'], listed[0].digest);
      assert.equal(r.headers['content-type'], byTag.headers['content-type']);
      if (method === 'GET') assert.deepEqual(r.body, byTag.body);
    }
    assert.equal(await pending(), before, 'no approval request for airlock\'s own signature');
  });

  test('name routing: upstream prefix, ns parameter and library/ all reach the same repository', async () => {
    for (const p of [`/v2/seeded/manifests/1.0`, `/v2/library/seeded/manifests/1.0`, `/v2/docker.io/library/seeded/manifests/1.0`, `/v2/library/seeded/manifests/1.0?ns=docker.io`]) {
      const r = await t.request('pull', p);
      assert.equal(r.status, 200, p);
      assert.deepEqual(r.body, manifest);
    }
    const echoed = await t.request('pull', '/v2/library/seeded/manifests/1.0?ns=docker.io');
    assert.equal(echoed.headers['oci-namespace'], 'docker.io', 'ns is echoed in OCI-Namespace');
    const again = await t.request('pull', '/v2/library/seeded/manifests/1.0?ns=docker.io');
    assert.equal(again.headers['oci-namespace'], 'docker.io', 'a remembered answer echoes it too');
    assert.equal((await t.request('pull', '/v2/library/seeded/manifests/1.0')).headers['oci-namespace'], undefined);
    const upper = await t.request('pull', '/v2/Docker.io/library/seeded/manifests/1.0');
    assert.equal(upper.status, 400);
    assert.equal(JSON.parse(upper.body.toString()).errors[0].code, 'NAME_INVALID', 'a name is lowercase, its upstream prefix too');
    // Taken as absent, a repeated ns would route the name to the default upstream instead.
    const twice = await t.request('pull', '/v2/library/seeded/manifests/1.0?ns=docker.io&ns=docker.io');
    assert.equal(twice.status, 400);
    assert.match(JSON.parse(twice.body.toString()).errors[0].message, /ns is given more than once/);
    const unknownNs = await t.request('pull', '/v2/library/seeded/manifests/1.0?ns=quay.io');
    assert.equal(unknownNs.status, 404);
    const e = JSON.parse(unknownNs.body.toString()).errors[0];
    assert.equal(e.code, 'NAME_UNKNOWN');
    assert.match(e.message, /docker\.io/);
    // The Kelvin sign lowercases to k: a host name is folded as ASCII only, so this names no upstream (and is never
    // echoed into a header, which Node refuses to send), on the manifest and the blob route alike.
    for (const p of ['/v2/library/seeded/manifests/1.0', `/v2/library/seeded/blobs/${sha(blob2k)}`]) {
      const kelvin = await t.request('pull', `${p}?ns=doc%E2%84%AAer.io`);
      assert.equal(kelvin.status, 404, p);
      assert.equal(JSON.parse(kelvin.body.toString()).errors[0].code, 'NAME_UNKNOWN', p);
    }
  });

  test('malformed names are NAME_INVALID, never a 5xx', async () => {
    for (const name of ['library/../etc', 'Library/Upper', 'a'.repeat(300), 'library/%2e%2e/x', 'a//b', '-lead', 'x/']) {
      const r = await t.request('pull', `/v2/${name}/manifests/latest`);
      assert.ok(r.status >= 400 && r.status < 500, `${name}: ${r.status}`);
      const code = JSON.parse(r.body.toString()).errors[0].code;
      assert.ok(['NAME_INVALID', 'NAME_UNKNOWN', 'MANIFEST_UNKNOWN'].includes(code), `${name}: ${code}`);
    }
    const r = await t.request('pull', '/v2/library/../etc/manifests/latest');
    assert.ok(r.status < 500);
  });

  test('a refused reference is repeated in the log line and the audit event at most 300 characters long, without controls or bidi overrides', async () => {
    const refs = ['sha256%3Aab%0A%7B%22level%22%3A50%7D%00%E2%80%AE', '%00'.repeat(5000)];
    const seq = t.airlock.services.audit.head().seq;
    for (const ref of refs) assert.ok((await t.request('pull', `/v2/library/seeded/blobs/${ref}`)).status < 500);
    await t.airlock.services.audit.stored();
    const events = [...t.airlock.services.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.seq > seq && e.action === 'pull.blob');
    assert.deepEqual(
      events.map((e) => e.reference),
      ['sha256:ab\ufffd{"level":50}\ufffd\ufffd', `${'\ufffd'.repeat(300)}…`],
    );
    await waitFor(() => readRequestLog(t.logPath).filter((l) => typeof l.ref === 'string' && l.ref.startsWith('\ufffd\ufffd')).length > 0, { timeoutMs: 5000, what: 'the log line' });
    const line = readRequestLog(t.logPath).reverse().find((l) => typeof l.ref === 'string' && l.ref.startsWith('\ufffd\ufffd'));
    assert.equal(line?.ref, `${'\ufffd'.repeat(300)}…`);
  });

  test('push endpoints answer UNSUPPORTED', async () => {
    for (const [method, p] of [
      ['POST', '/v2/library/seeded/blobs/uploads/'],
      ['PUT', `/v2/library/seeded/manifests/1.0`],
      ['DELETE', `/v2/library/seeded/manifests/${sha(manifest)}`],
      ['PATCH', '/v2/library/seeded/blobs/uploads/abc'],
    ]) {
      const r = await t.request('pull', p, { method, body: method === 'GET' ? undefined : '{}' });
      assert.equal(r.status, 405, `${method} ${p}`);
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'UNSUPPORTED');
      // RFC 9110 §15.5.6: a 405 names the methods the resource takes; an upload URL takes none here.
      assert.equal(r.headers.allow, p.includes('/uploads/') ? '' : 'GET, HEAD', `${method} ${p}`);
    }
    const catalog = await t.request('pull', '/v2/_catalog');
    assert.equal(catalog.status, 405);
    assert.equal(catalog.headers.allow, '');
  });

  test('HEAD on tags/list and referrers has the headers of GET and no body; an unknown endpoint is 404', async () => {
    for (const p of ['/v2/library/seeded/tags/list', `/v2/library/seeded/referrers/${sha(manifest)}`]) {
      const get = await t.request('pull', p);
      const head = await t.request('pull', p, { method: 'HEAD' });
      assert.equal(get.status, 200, p);
      assert.equal(head.status, 200, p);
      assert.equal(head.body.length, 0, p);
      assert.equal(head.headers['content-type'], get.headers['content-type'], p);
      assert.equal(head.headers['content-length'], String(get.body.length), p);
    }
    for (const p of ['/v2/library/seeded', '/v2/library/seeded/tags/', '/v2/library/seeded/tags/list/']) {
      const r = await t.request('pull', p);
      assert.equal(r.status, 404, p);
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'NAME_UNKNOWN', p);
    }
  });
});

// Last: it stops the server the tests above share.
describe('what a client chooses does not grow what the server keeps', () => {
  test('only plain manifest URLs of small manifests are remembered: a query other than ns, a long URL or a large manifest is not', () => {
    const s = t.airlock.services;
    const remembered = new RememberedAnswers(s, () => {}, () => {});
    const route = { upstream: 'docker.io', path: 'library/seeded', repository: repo };
    const answer = (bytes: Buffer) => ({ generation: s.policy.generation, route, ref: sha(bytes), tag: null, reason: 'pin', manifest: { digest: sha(bytes), mediaType: OCI_MANIFEST, size: bytes.length, bytes }, namespace: null });
    const small = answer(manifest);
    const base = `/v2/library/seeded/manifests/${sha(manifest)}`;
    remembered.remember(base, small);
    remembered.remember(`${base}?ns=docker.io`, small);
    assert.equal(remembered.size, 2);
    for (const url of [`${base}?x=1`, `${base}?ns=docker.io&x=1`, `${base}?${'a'.repeat(600)}`, `${base}?ns=${'a'.repeat(600)}`]) remembered.remember(url, small);
    remembered.remember(`/v2/library/seeded/manifests/${sha(bigManifest)}`, answer(Buffer.alloc(300 * 1024, 1)));
    assert.equal(remembered.size, 2);
  });

  test('referrers and signatures of a digest the repository does not hold are answered without asking the policy', async (ctx) => {
    const made = sha(Buffer.from('a digest nobody pulled'));
    const evaluate = ctx.mock.method(t.airlock.services.policy, 'evaluate');
    const r = await t.request('pull', `/v2/library/seeded/referrers/${made}`);
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body.toString()).manifests, []);
    const sig = await t.request('pull', `/v2/library/seeded/manifests/sha256-${made.slice(7)}.sig`);
    assert.equal(sig.status, 404);
    assert.equal(JSON.parse(sig.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    assert.equal(evaluate.mock.callCount(), 0, 'no publisher look-up upstream for a made-up digest');
  });

  test('tags/list with n decides only the tags it needs for the page and its Link', async (ctx) => {
    const evaluate = ctx.mock.method(t.airlock.services.policy, 'evaluate');
    const all = JSON.parse((await t.request('pull', '/v2/library/seeded/tags/list')).body.toString()).tags as string[];
    const everything = evaluate.mock.callCount();
    evaluate.mock.resetCalls();
    const one = await t.request('pull', '/v2/library/seeded/tags/list?n=1');
    assert.deepEqual(JSON.parse(one.body.toString()).tags, all.slice(0, 1));
    assert.match(String(one.headers.link), /rel="next"/);
    const asked = evaluate.mock.callCount();
    assert.ok(asked < everything, `${asked} tags decided for one, ${everything} for all`);
  });
});

describe('a repository whose indexes list the same manifests many times over', () => {
  test('a blob request decides each stored manifest once, not once for every path through the indexes', async (ctx) => {
    const s = t.airlock.services;
    const flood = 'docker.io/library/flood';
    const n = 12;
    const shared = crypto.randomBytes(64);
    const save = (doc: unknown): string => {
      const bytes = Buffer.from(JSON.stringify(doc));
      const p = parseManifest(bytes, null);
      s.content.saveManifest(flood, { digest: sha(bytes), mediaType: p.mediaType, size: bytes.length, bytes }, p.refs, p.subject, p.artifactType);
      return sha(bytes);
    };
    const desc = (digest: string) => ({ mediaType: OCI_MANIFEST, digest, size: 100 });
    // n images sharing a layer; n indexes listing all of them; n listing those; n listing those. No pin admits any.
    const images = Array.from({ length: n }, (_, i) =>
      save({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(shared), size: 64 }], annotations: { i: String(i) } }),
    );
    let level = images;
    for (const name of ['a', 'b', 'c']) {
      const below = level;
      level = Array.from({ length: n }, (_, i) => save({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: below.map(desc), annotations: { [name]: String(i) } }));
    }
    const parents = ctx.mock.method(s.content, 'parents');
    const r = await t.request('pull', `/v2/library/flood/blobs/${sha(shared)}`);
    assert.equal(r.status, 404);
    assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'BLOB_UNKNOWN');
    const calls = parents.mock.callCount();
    // Each of the 3n manifests below the top level is asked for its parents about once, and again after the pins were
    // looked at (62 look-ups); walking every path asked 3,769 times, growing with n^3.
    assert.ok(calls <= 8 * n, `${calls} parent look-ups`);
  });
});

describe('stopping while a client holds a download open', () => {
  test('close waits for the download; hurry cuts it, and the audit log still closes with the download recorded', async () => {
    const b = t.bundle('pull');
    const u = new URL(`${t.url}/v2/library/seeded/blobs/${sha(huge)}`);
    let req: ReturnType<typeof https.get> | undefined;
    let response: { resume(): void; readableLength: number } | undefined;
    let receiving = (): void => {};
    const received = new Promise<void>((resolve) => (receiving = resolve));
    const ended = new Promise<string>((resolve) => {
      req = https.get(
        { host: u.hostname, port: u.port, path: u.pathname, ca: fs.readFileSync(b.endpoint.caPath ?? ''), cert: fs.readFileSync(b.endpoint.clientCertPath ?? ''), key: fs.readFileSync(b.endpoint.clientKeyPath ?? '') },
        (res) => {
          // The client takes one chunk and then reads no more: the response can never finish.
          res.once('data', () => {
            res.pause();
            receiving();
          });
          response = res;
        },
      );
      req.on('socket', (socket) => socket.on('close', () => resolve('closed by the server')));
    });
    await received;
    // A keep-alive client whose response is still under way when the close begins, and ends after it.
    const agent = new https.Agent({ keepAlive: true, ca: fs.readFileSync(b.endpoint.caPath ?? ''), cert: fs.readFileSync(b.endpoint.clientCertPath ?? ''), key: fs.readFileSync(b.endpoint.clientKeyPath ?? '') });
    let keptResponse: { resume(): void; on(event: string, f: () => void): void } | undefined;
    let keptSocketClosed = (): void => {};
    const keptClosed = new Promise<string>((resolve) => (keptSocketClosed = () => resolve('closed')));
    const keptStarted = new Promise<void>((resolve) => {
      const r = https.get({ host: u.hostname, port: u.port, path: `/v2/library/seeded/blobs/${sha(bigB)}`, agent }, (res) => {
        res.once('data', () => {
          res.pause();
          resolve();
        });
        keptResponse = res;
      });
      r.on('socket', (socket) => socket.on('close', () => keptSocketClosed()));
    });
    await keptStarted;
    let closed = false;
    const closing = t.airlock.close().then(() => (closed = true));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(closed, false, 'close waits for the response under way');
    // Once its response has ended, the server closes that connection rather than keeping it alive for 65 s.
    const keptEnded = new Promise<void>((resolve) => keptResponse?.on('end', () => resolve()));
    keptResponse?.resume();
    await keptEnded;
    const idleLimit = new Promise<string>((resolve) => setTimeout(() => resolve('still open after 10 s'), 10_000).unref());
    assert.equal(await Promise.race([keptClosed, idleLimit]), 'closed', 'the finished keep-alive connection is closed by the closing server');
    agent.destroy();
    const started = Date.now();
    t.airlock.hurry();
    await closing;
    assert.ok(Date.now() - started < 10_000, `hurried close took ${Date.now() - started} ms`);
    // The client sees the end once it reads what was sent before it: fewer bytes than the blob has.
    response?.resume();
    assert.equal(await ended, 'closed by the server');
    req?.destroy();
    // The audit log closed cleanly: reopened, its stored chain ends in a checkpoint over its last event, the cut download.
    const { openDatabase } = await import('../storage/db.js');
    const { createAuditStore } = await import('../storage/audit.js');
    const db = openDatabase(path.join(tmp, 'airlock'));
    try {
      const store = createAuditStore(db);
      const last = store.last();
      assert.ok(last);
      assert.equal(store.lastCheckpoint()?.seq, last.seq, 'a final checkpoint signs the last event');
      const cut = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)].reverse().find((e) => e.action === 'pull.blob' && e.digest === sha(huge));
      assert.equal(cut?.reason, 'aborted');
      // Its log line counts what the socket took before the cut: some of the blob, not all of it.
      const line = readRequestLog(t.logPath)
        .reverse()
        .find((l) => l.digest === sha(huge) && l.status === 'aborted') as unknown as { bytes: number } | undefined;
      assert.ok(line && line.bytes > 0 && line.bytes < huge.length, `bytes of the cut download: ${JSON.stringify(line)}`);
    } finally {
      db.close();
    }
  });
});
