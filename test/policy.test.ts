// Admission policy against the real CNCF registry and real skopeo: approval requests, tag pins and drift,
// blob access only through admitted manifests, and revocation.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { buildImage, buildIndex, inspectDigest, pushImage, skopeoCopy } from './harness/images.js';
import { run, stopAll, track, waitFor } from './harness/proc.js';
import { type Registry, registryRequest, startRegistry } from './harness/registry.js';

let tmp: string;
let reg: Registry;
let t: TestAirlock;
const d: Record<string, string> = {};

async function push(repo: string, tag: string): Promise<string> {
  const img = await buildImage(path.join(tmp, 'img', `${repo.replace(/\//g, '_')}-${tag}-${crypto.randomUUID()}`), { tag, files: { '/id': `${repo}:${tag} ${crypto.randomUUID()}\n` } });
  await pushImage(img, `${reg.host}/${repo}:${tag}`, { certDir: reg.certDir });
  return inspectDigest(reg, repo, tag);
}

async function skopeo(ref: string): Promise<{ code: number | null; stderr: string }> {
  const out = path.join(tmp, 'out', crypto.randomUUID());
  fs.mkdirSync(out, { recursive: true });
  const r = await run('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-cert-dir', t.bundle('pull').dir, `docker://${t.host}/${ref}`, `dir:${out}`], { timeoutMs: 60000 });
  return { code: r.code, stderr: r.stderr };
}

const json = (body: Buffer): Record<string, unknown> => JSON.parse(body.toString()) as Record<string, unknown>;
// RFC3339 is an RFC 3339 date-time: full date, 'T', full time with optional fraction, and Z or a numeric offset.
const RFC3339 = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$/;

// signaturePayload is the `optional` part of the payload of airlock's signature of digest, served under its .sig tag.
async function signaturePayload(repo: string, digest: string): Promise<Record<string, string>> {
  const sig = await t.request('pull', `/v2/${repo}/manifests/sha256-${digest.slice(7)}.sig`);
  assert.equal(sig.status, 200, sig.body.toString());
  const layer = (json(sig.body).layers as { digest: string }[])[0].digest;
  const payload = json((await t.request('pull', `/v2/${repo}/blobs/${layer}`)).body) as { critical: { image: { 'docker-manifest-digest': string } }; optional: Record<string, string> };
  assert.equal(payload.critical.image['docker-manifest-digest'], digest);
  return payload.optional;
}
const post = (path: string, body: unknown) => t.request('admin', path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-policy-'));
  reg = track(await startRegistry({ dir: path.join(tmp, 'upstream'), accessLog: true }));
  d.app = await push('library/app', '1.0');
  d.frozen = await push('library/frozen', 'stable');
  d.secret = await push('library/secret', '1');
  d.revokable = await push('library/revokable', '1');
  // A two-platform image whose index is pinned, and a pin of a digest the upstream does not have, in one repository.
  const work = path.join(tmp, 'img', 'platforms');
  const amd64 = await buildImage(work, { tag: 'amd64', files: { '/id': `amd64 ${crypto.randomUUID()}\n` } });
  const arm64 = await buildImage(work, { tag: 'arm64', arch: 'arm64', files: { '/id': `arm64 ${crypto.randomUUID()}\n` } });
  const both = await buildIndex(work, [amd64, arm64], 'both');
  for (const repo of ['platforms', 'revpin']) await pushImage(both, `${reg.host}/library/${repo}:1`, { certDir: reg.certDir, all: true });
  d.platforms = await inspectDigest(reg, 'library/platforms', '1');
  for (const repo of ['platforms', 'revpin']) d[`${repo}Other`] = await push(`library/${repo}`, 'unpinned');
  d.missing = `sha256:${crypto.createHash('sha256').update('never pushed').digest('hex')}`;
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [{ name: 'docker.io', url: reg.url, ca: reg.caPath }],
    pins: [
      `docker.io/library/frozen:stable@${d.frozen}`,
      `docker.io/library/revokable:1@${d.revokable}`,
      `docker.io/library/platforms@${d.platforms}`,
      `docker.io/library/platforms@${d.missing}`,
      `docker.io/library/revpin@${d.platforms}`,
    ],
    driftCheckMs: 0,
  });
});

after(async () => {
  await t?.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('admission policy', () => {
  test('an unpinned image is refused with DENIED naming a request, listed as pending with the CN, and pulls once approved', async () => {
    const refused = await skopeo('library/app:1.0');
    assert.notEqual(refused.code, 0);
    const direct = await t.request('pull', '/v2/library/app/manifests/1.0');
    assert.equal(direct.status, 403);
    const err = (json(direct.body).errors as { code: string; message: string; detail: { request: number } }[])[0];
    assert.equal(err.code, 'DENIED');
    assert.match(err.message, /docker\.io\/library\/app/);
    const pending = await t.request('audit', '/api/v1/requests?status=pending');
    assert.equal(pending.status, 200);
    const req = (json(pending.body).requests as { id: number; repository: string; digest: string; requestedBy: string; count: number; tag: string }[]).find((r) => r.id === err.detail.request);
    assert.ok(req, 'the request is listed as pending');
    assert.equal(req.repository, 'docker.io/library/app');
    assert.equal(req.digest, d.app);
    assert.equal(req.requestedBy, 'test-pull');
    assert.equal(req.tag, '1.0');
    assert.ok(req.count >= 2, 'repeated refusals count on the same request');
    const approvedFrom = Date.now();
    const approved = await post(`/api/v1/requests/${req.id}/approve`, { note: 'reviewed' });
    assert.equal(approved.status, 200, approved.body.toString());
    const ok = await skopeo('library/app:1.0');
    assert.equal(ok.code, 0, ok.stderr);
    // The signature's payload records how the image was admitted, by whom and when (SPEC §5).
    const optional = await signaturePayload('library/app', d.app);
    assert.equal(optional['airlock.admission'], 'approval');
    assert.equal(optional['airlock.approvedBy'], 'test-admin', 'the CN of the certificate that approved the request');
    const time = optional['airlock.time'];
    assert.match(time, RFC3339, `airlock.time is RFC 3339: ${time}`);
    assert.ok(Date.parse(time) >= approvedFrom && Date.parse(time) <= Date.now(), `airlock.time ${time} is when the approval signed the image`);
  });

  test('an approved image whose pin is deleted is refused on its request again, which can be approved again; a new way of admission is signed anew', async () => {
    const manifest = `/v2/library/app/manifests/${d.app}`;
    const sigOf = async (): Promise<{ digest: string; admission: string }> => {
      const sig = await t.request('pull', `/v2/library/app/manifests/sha256-${d.app.slice(7)}.sig`);
      assert.equal(sig.status, 200);
      return { digest: String(sig.headers['docker-content-digest']), admission: (await signaturePayload('library/app', d.app))['airlock.admission'] };
    };
    const first = await sigOf();
    assert.equal(first.admission, 'approval');
    const approvalPin = async (): Promise<number> => {
      const pins = json((await t.request('audit', '/api/v1/pins')).body).pins as { id: number; digest: string; source: string }[];
      const p = pins.find((x) => x.digest === d.app && x.source === 'approval');
      assert.ok(p, 'the approval made a pin');
      return p.id;
    };
    const del = async (id: number): Promise<void> => assert.equal((await t.request('admin', `/api/v1/pins/${id}`, { method: 'DELETE' })).status, 204);

    await del(await approvalPin());
    const refused = await t.request('pull', manifest);
    assert.equal(refused.status, 403);
    const id = (json(refused.body).errors as { detail: { request: number } }[])[0].detail.request;
    const pending = json((await t.request('audit', '/api/v1/requests?status=pending')).body).requests as { id: number }[];
    assert.ok(pending.some((r) => r.id === id), 'the request is pending again');
    assert.equal((await post(`/api/v1/requests/${id}/approve`, { note: 'again' })).status, 200);
    assert.equal((await t.request('pull', manifest)).status, 200);
    assert.equal((await sigOf()).digest, first.digest, 'admitted the same way: the signature stands');

    await del(await approvalPin());
    assert.equal((await t.request('pull', manifest)).status, 403);
    assert.equal((await post('/api/v1/pins', { repository: 'docker.io/library/app', digest: d.app })).status, 201);
    // Asked for before any pull of the manifest, the signature already says the new way.
    const resigned = await sigOf();
    assert.notEqual(resigned.digest, first.digest, 'admitted another way: signed anew');
    assert.equal(resigned.admission, 'pin');
    assert.equal((await t.request('pull', manifest)).status, 200);
    // Re-signing everything signs each image as it is admitted now.
    assert.equal((await post('/api/v1/images/resign', {})).status, 200);
    assert.equal((await sigOf()).admission, 'pin');
  });

  test('a tag pin keeps serving its digest after the upstream tag moves, and the drift is reported', async () => {
    const before = await t.request('pull', '/v2/library/frozen/manifests/stable');
    assert.equal(before.headers['docker-content-digest'], d.frozen);
    const moved = await push('library/frozen', 'stable');
    assert.notEqual(moved, d.frozen);
    const after1 = await t.request('pull', '/v2/library/frozen/manifests/stable');
    assert.equal(after1.status, 200);
    assert.equal(after1.headers['docker-content-digest'], d.frozen);
    await waitFor(
      async () => {
        await t.request('pull', '/v2/library/frozen/manifests/stable');
        const drift = json((await t.request('audit', '/api/v1/drift')).body).drift as { repository: string; tag: string; pinnedDigest: string; upstreamDigest: string }[];
        return drift.some((x) => x.repository === 'docker.io/library/frozen' && x.tag === 'stable' && x.pinnedDigest === d.frozen && x.upstreamDigest === moved);
      },
      { timeoutMs: 5000, what: 'drift reported' },
    );
    const copy = await skopeo('library/frozen:stable');
    assert.equal(copy.code, 0, copy.stderr);
    // The move is one tag.drift audit event: the tag as reference, the upstream's digest, the pinned one in the reason.
    const s = t.airlock.services;
    await s.audit.stored();
    const drifts = [...s.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.action === 'tag.drift' && e.repository === 'docker.io/library/frozen');
    assert.equal(drifts.length, 1, `one tag.drift event for the move: ${JSON.stringify(drifts)}`);
    assert.equal(drifts[0].reference, 'stable');
    assert.equal(drifts[0].digest, moved);
    assert.equal(drifts[0].reason, `pinned to ${d.frozen}`);
  });

  test("a tag pinned to one platform's manifest has not drifted while the upstream's index for the tag lists it", async (ctx) => {
    const repo = 'docker.io/library/oneplatform';
    await skopeoCopy(`docker://${reg.host}/library/platforms:1`, `docker://${reg.host}/library/oneplatform:1`, { srcCertDir: reg.certDir, destCertDir: reg.certDir, all: true });
    const index = await registryRequest(reg, '/v2/library/oneplatform/manifests/1', { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    assert.equal(index.headers['docker-content-digest'], d.platforms);
    const amd64 = (json(index.body).manifests as { digest: string; platform: { architecture: string } }[]).find((m) => m.platform.architecture === 'amd64')?.digest;
    assert.ok(amd64);
    const created = await post('/api/v1/pins', { repository: repo, digest: amd64, tag: '1' });
    assert.equal(created.status, 201, created.body.toString());
    const s = t.airlock.services;
    const recorded = ctx.mock.method(s.policyStore, 'recordDrift');
    const cleared = ctx.mock.method(s.policyStore, 'clearDrift');
    const decided = (): boolean => [...recorded.mock.calls, ...cleared.mock.calls].some((c) => c.arguments[0] === repo);
    const pulled = await t.request('pull', '/v2/library/oneplatform/manifests/1');
    assert.equal(pulled.headers['docker-content-digest'], amd64);
    await waitFor(decided, { timeoutMs: 5000, what: 'the drift check of library/oneplatform:1' });
    assert.deepEqual(recorded.mock.calls.filter((c) => c.arguments[0] === repo), [], 'no drift recorded');
    const drift = json((await t.request('audit', '/api/v1/drift')).body).drift as { repository: string }[];
    assert.deepEqual(drift.filter((x) => x.repository === repo), []);
  });

  test('a tag pin deleted while its drift check waits for the upstream leaves no drift and no tag.drift event', async (ctx) => {
    const repo = 'docker.io/library/unpinned-late';
    const pinnedDigest = await push('library/unpinned-late', 'old');
    const upstreamDigest = await push('library/unpinned-late', 'latest');
    const created = await post('/api/v1/pins', { repository: repo, digest: pinnedDigest, tag: 'latest' });
    assert.equal(created.status, 201, created.body.toString());
    const s = t.airlock.services;
    // The upstream's answer to the drift check is held until the pin is gone (a slow upstream).
    let answer: () => void = () => {};
    const held = new Promise<void>((resolve) => (answer = resolve));
    const peek = s.mirror.peekTag.bind(s.mirror);
    ctx.mock.method(s.mirror, 'peekTag', async (...args: Parameters<typeof peek>) => {
      const upstream = await peek(...args);
      await held;
      return upstream;
    });
    const pulled = await t.request('pull', '/v2/library/unpinned-late/manifests/latest');
    assert.equal(pulled.headers['docker-content-digest'], pinnedDigest);
    assert.equal((await t.request('admin', `/api/v1/pins/${json(created.body).id as number}`, { method: 'DELETE' })).status, 204);
    const seq = s.audit.head().seq;
    answer();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await s.audit.stored();
    const drift = json((await t.request('audit', '/api/v1/drift')).body).drift as { repository: string }[];
    assert.deepEqual(drift.filter((x) => x.repository === repo), []);
    const late = [...s.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.seq > seq && e.action === 'tag.drift');
    assert.deepEqual(late, [], 'no drift of a pin that no longer exists');
    assert.notEqual(upstreamDigest, pinnedDigest);
  });

  test('an unpinned tag is resolved upstream on every pull: after the upstream moves it, the new digest is served', async () => {
    const manifest = '/v2/library/moving/manifests/latest';
    const a = await push('library/moving', 'latest');
    // Digest pins (no tag) admit both images; which one the tag names is the upstream's to say.
    assert.equal((await post('/api/v1/pins', { repository: 'docker.io/library/moving', digest: a })).status, 201);
    const first = await t.request('pull', manifest);
    assert.equal(first.status, 200, first.body.toString());
    assert.equal(first.headers['docker-content-digest'], a);
    const b = await push('library/moving', 'latest');
    assert.notEqual(b, a);
    assert.equal((await post('/api/v1/pins', { repository: 'docker.io/library/moving', digest: b })).status, 201);
    const second = await t.request('pull', manifest);
    assert.equal(second.status, 200, second.body.toString());
    assert.equal(second.headers['docker-content-digest'], b, 'the tag is asked of the upstream again, not answered from what it resolved to before');
    assert.equal(`sha256:${crypto.createHash('sha256').update(second.body).digest('hex')}`, b, "the body is B's manifest");
    const copy = await skopeo('library/moving:latest');
    assert.equal(copy.code, 0, copy.stderr);
  });

  test('blobs of an image that is not admitted cannot be fetched by digest, even when cached', async () => {
    const s = t.airlock.services;
    const m = await fetch404Manifest();
    assert.ok(m.length > 0, 'the image has layers');
    for (const layer of m) {
      const r = await t.request('pull', `/v2/library/secret/blobs/${layer}`);
      assert.equal(r.status, 404);
      assert.equal((json(r.body).errors as { code: string }[])[0].code, 'BLOB_UNKNOWN');
      assert.notEqual(s.blobs.size(layer), null, 'the blob is in the cache all the same');
      const other = await t.request('pull', `/v2/library/app/blobs/${layer}`);
      assert.equal(other.status, 404, 'nor through another repository');
    }
  });

  test('a platform manifest pulled by digest before its pinned index is admitted as listed in it', async () => {
    const manifestGets = (digest: string): number => reg.requests().filter((e) => e.method === 'GET' && e.path === `/v2/library/platforms/manifests/${digest}`).length;
    const index = await registryRequest(reg, `/v2/library/platforms/manifests/${d.platforms}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    const [first, second] = (json(index.body).manifests as { digest: string }[]).map((m) => m.digest);
    assert.ok(!t.airlock.services.content.holds('docker.io/library/platforms', d.platforms), 'nobody pulled the index yet');
    const r = await t.request('pull', `/v2/library/platforms/manifests/${first}`);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['docker-content-digest'], first);
    assert.equal((await signaturePayload('library/platforms', first))['airlock.admission'], 'index');
    // A real client copies the other platform by digest.
    const copied = await skopeo(`library/platforms@${second}`);
    assert.equal(copied.code, 0, copied.stderr);
    // The pin the upstream does not have was asked for once; a refusal right after does not ask for it again.
    await reg.settle();
    assert.equal(manifestGets(d.missing), 1);
    const refused = await t.request('pull', `/v2/library/platforms/manifests/${d.platformsOther}`);
    assert.equal(refused.status, 403, refused.body.toString());
    const requests = json((await t.request('audit', '/api/v1/requests')).body).requests as { digest: string }[];
    assert.deepEqual(requests.filter((q) => [first, second, d.platformsOther].includes(q.digest)).map((q) => q.digest), [d.platformsOther], 'only the unpinned image has an approval request');
    await reg.settle();
    assert.equal(manifestGets(d.missing), 1, 'the missing pin is not asked for on every refusal');
    assert.equal(manifestGets(d.platforms), 2, 'the index was fetched once by airlock (and once by this test)');
  });

  test('a revoked pinned index is not fetched to learn what it lists', async () => {
    const revoked = await post('/api/v1/images/revoke', { repository: 'docker.io/library/revpin', digest: d.platforms, reason: 'CVE-2026-0002' });
    assert.equal(revoked.status, 200, revoked.body.toString());
    const r = await t.request('pull', `/v2/library/revpin/manifests/${d.revpinOther}`);
    assert.equal(r.status, 403, r.body.toString());
    await reg.settle();
    assert.equal(reg.requests().filter((e) => e.method === 'GET' && e.path === `/v2/library/revpin/manifests/${d.platforms}`).length, 0);
    assert.equal(t.airlock.services.content.holds('docker.io/library/revpin', d.platforms), null);
  });

  test("a manifest fetched through one repository is not another repository's until that one's upstream has it", async () => {
    const refused = await t.request('pull', `/v2/library/secret/manifests/${d.secret}`);
    assert.equal(refused.status, 403, refused.body.toString());
    // library/elsewhere never held the image upstream: airlock asks there, and passes on the upstream's answer.
    const elsewhere = await t.request('pull', `/v2/library/elsewhere/manifests/${d.secret}`);
    assert.equal(elsewhere.status, 404, elsewhere.body.toString());
    assert.equal((json(elsewhere.body).errors as { code: string }[])[0].code, 'MANIFEST_UNKNOWN');
    assert.equal(t.airlock.services.policyStore.requestFor('docker.io/library/elsewhere', d.secret), null, 'no approval request names a repository without the image');
    await reg.settle();
    assert.ok(reg.requests().some((e) => e.method === 'GET' && e.path === `/v2/library/elsewhere/manifests/${d.secret}`), 'its upstream was asked');
  });

  test('revoking an admitted image makes the next pull fail within one second', async () => {
    assert.equal((await t.request('pull', '/v2/library/revokable/manifests/1')).status, 200);
    const r = await post('/api/v1/images/revoke', { repository: 'docker.io/library/revokable', digest: d.revokable, reason: 'CVE-2026-0001' });
    assert.equal(r.status, 200, r.body.toString());
    const started = Date.now();
    await waitFor(async () => (await t.request('pull', '/v2/library/revokable/manifests/1')).status === 403, { timeoutMs: 1000, what: 'revoked image refused' });
    console.log(`refused ${Date.now() - started} ms after the revocation`);
    const m = await t.request('pull', `/v2/library/revokable/manifests/${d.revokable}`);
    assert.match((json(m.body).errors as { message: string }[])[0].message, /revoked: CVE-2026-0001/);
    assert.deepEqual((json(m.body).errors as { detail: unknown }[])[0].detail, { request: null, repository: 'docker.io/library/revokable', digest: d.revokable });
  });

  test('the policy seeds of the configuration are audit events with actor config, at every start that changes them', async () => {
    const s = t.airlock.services;
    const seeded = async (): Promise<{ action: string; repository: string | null; reference: string | null; actor: string | null; digest: string | null }[]> => {
      await t.airlock.services.audit.stored();
      return [...t.airlock.services.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.actor === 'config');
    };
    const added = await seeded();
    assert.ok(added.some((e) => e.action === 'admin.pin.add' && e.repository === 'docker.io/library/frozen' && e.digest === d.frozen && e.reference === 'stable'));
    assert.equal(added.filter((e) => e.action === 'admin.pin.add').length, s.policyStore.pins().filter((p) => p.source === 'config').length);
    // The revokable pin taken out of the file: the next start deletes it, and says so.
    const doc = YAML.parse(fs.readFileSync(t.configPath, 'utf8')) as { policy: { pins: string[] } };
    doc.policy.pins = doc.policy.pins.filter((p) => !p.includes('revokable'));
    fs.writeFileSync(t.configPath, YAML.stringify(doc));
    await t.restart();
    const after = await seeded();
    assert.deepEqual(
      after.slice(added.length).map((e) => [e.action, e.repository, e.digest, e.reference]),
      [['admin.pin.delete', 'docker.io/library/revokable', d.revokable, '1']],
    );
    // A start that changes nothing records nothing.
    await t.restart();
    assert.equal((await seeded()).length, after.length);
  });
});

// fetch404Manifest caches the secret image's blobs by fetching them while briefly pinned, then removes the pin.
async function fetch404Manifest(): Promise<string[]> {
  const s = t.airlock.services;
  const pin = s.policyStore.addPin({ repository: 'docker.io/library/secret', digest: d.secret, tag: null, note: null, source: 'api', createdBy: 'test' });
  assert.ok(pin);
  s.policy.changed();
  const m = json((await t.request('pull', `/v2/library/secret/manifests/${d.secret}`)).body) as { config: { digest: string }; layers: { digest: string }[] };
  const digests = [m.config.digest, ...m.layers.map((l) => l.digest)];
  for (const x of digests) assert.equal((await t.request('pull', `/v2/library/secret/blobs/${x}`)).status, 200);
  await waitFor(() => digests.every((x) => s.blobs.size(x) !== null), { timeoutMs: 5000, what: 'blobs cached' });
  s.policyStore.deletePin(pin.pin.id);
  s.policy.changed();
  return digests;
}
