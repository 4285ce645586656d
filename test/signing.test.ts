// Admission by publisher signature (real cosign, real CNCF registry) and airlock's own re-signing, verified by real
// cosign and independently by openssl.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeSigningKey } from '../server/signing/key.js';
import { signCommand } from '../server/signing/sign-command.js';
import { SIGNATURE_ARTIFACT_TYPE } from '../server/signing/signer.js';
import { startTestAirlock, TEST_KEY_PASSWORD, type TestAirlock } from './harness/airlock.js';
import { buildImage, buildIndex, fetchManifest, inspectDigest, pushImage, skopeoCopy } from './harness/images.js';
import { run, runOk, stopAll, track, waitFor } from './harness/proc.js';
import { type Registry, startRegistry } from './harness/registry.js';

const COSIGN = path.resolve('.cache/cosign/usr/bin/cosign');
const UPSTREAM = 'registry.acme.test';
const PW = 'publisher-pass';

let tmp: string;
let reg: Registry;
let t: TestAirlock;
const digests: Record<string, string> = {};
let publisherKey: { keyPath: string; pubPath: string };
let strangerKey: { keyPath: string; pubPath: string };

async function cosignSign(key: string, ref: string): Promise<void> {
  await runOk(COSIGN, ['sign', '--yes', '--key', key, '--tlog-upload=false', '--registry-cacert', reg.caPath, ref], { env: { ...process.env, COSIGN_PASSWORD: PW }, timeoutMs: 60000 });
}

async function pushNew(repo: string, tag: string): Promise<string> {
  const img = await buildImage(path.join(tmp, 'img', `${repo.replace(/\//g, '_')}-${tag}`), { tag, files: { '/id': `${repo}:${tag} ${crypto.randomUUID()}\n` } });
  await pushImage(img, `${reg.host}/${repo}:${tag}`, { certDir: reg.certDir });
  return inspectDigest(reg, repo, tag);
}

async function pullThrough(repo: string, ref: string): Promise<{ code: number | null; stderr: string }> {
  const sep = ref.startsWith('sha256:') ? '@' : ':';
  const out = path.join(tmp, 'out', crypto.randomUUID());
  fs.mkdirSync(out, { recursive: true });
  const r = await run('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-cert-dir', t.bundle('pull').dir, `docker://${t.host}/${UPSTREAM}/${repo}${sep}${ref}`, `dir:${out}`], { timeoutMs: 60000 });
  return { code: r.code, stderr: r.stderr };
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-sign-'));
  assert.ok(fs.existsSync(COSIGN), `cosign is missing at ${COSIGN}: run bash scripts/test-deps.sh`);
  reg = track(await startRegistry({ dir: path.join(tmp, 'upstream') }));
  publisherKey = writeSigningKey(path.join(tmp, 'keys', 'acme'), PW);
  strangerKey = writeSigningKey(path.join(tmp, 'keys', 'stranger'), PW);
  digests.signed = await pushNew('acme/signed', 'v1');
  digests.stranger = await pushNew('acme/stranger', 'v1');
  digests.x = await pushNew('acme/x', 'v1');
  await skopeoCopy(`docker://${reg.host}/acme/x:v1`, `docker://${reg.host}/acme/y:v1`, { srcCertDir: reg.certDir, destCertDir: reg.certDir });
  digests.e = await pushNew('acme/swap', 'e');
  digests.f = await pushNew('acme/swap', 'f');
  digests.pinned = await pushNew('library/pinned', '1');
  digests.airlockSigned = await pushNew('acme/tool', 'v1');
  await cosignSign(publisherKey.keyPath, `${reg.host}/acme/signed@${digests.signed}`);
  await cosignSign(strangerKey.keyPath, `${reg.host}/acme/stranger@${digests.stranger}`);
  await cosignSign(publisherKey.keyPath, `${reg.host}/acme/x@${digests.x}`);
  await cosignSign(publisherKey.keyPath, `${reg.host}/acme/swap@${digests.e}`);
  // acme/y holds the same image as acme/x, with x's signature (whose payload names acme/x) copied under its .sig tag.
  const sigTag = (d: string): string => `${d.replace(':', '-')}.sig`;
  await skopeoCopy(`docker://${reg.host}/acme/x:${sigTag(digests.x)}`, `docker://${reg.host}/acme/y:${sigTag(digests.x)}`, { srcCertDir: reg.certDir, destCertDir: reg.certDir });
  // f carries e's signature (whose payload names digest e).
  await skopeoCopy(`docker://${reg.host}/acme/swap:${sigTag(digests.e)}`, `docker://${reg.host}/acme/swap:${sigTag(digests.f)}`, { srcCertDir: reg.certDir, destCertDir: reg.certDir });
  await signCommand({ keyPath: publisherKey.keyPath, password: PW, reference: `${reg.host}/acme/tool@${digests.airlockSigned}`, caPath: reg.caPath });
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [{ name: UPSTREAM, url: reg.url, ca: reg.caPath }],
    defaultUpstream: UPSTREAM,
    pins: [`${UPSTREAM}/library/pinned:1@${digests.pinned}`],
    publishers: [{ name: 'acme', key: publisherKey.pubPath, repositories: [`${UPSTREAM}/acme/*`] }],
  });
});

after(async () => {
  await t?.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('admission by publisher signature', () => {
  test('an image signed with cosign by a registered publisher key is admitted with no pin', async () => {
    const r = await pullThrough('acme/signed', 'v1');
    assert.equal(r.code, 0, r.stderr);
    const adm = t.airlock.services.policyStore.admission(`${UPSTREAM}/acme/signed`, digests.signed);
    assert.equal(adm?.how, 'publisher');
    assert.ok(adm?.publisherKey?.startsWith('sha256:'));
  });

  test('an image signed by an unregistered key is refused', async () => {
    const r = await pullThrough('acme/stranger', 'v1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /denied|DENIED|not admitted/);
  });

  test('a signature whose payload names another repository is refused', async () => {
    const r = await pullThrough('acme/y', 'v1');
    assert.notEqual(r.code, 0);
    const x = await pullThrough('acme/x', 'v1');
    assert.equal(x.code, 0, x.stderr);
  });

  test('a signature whose payload names another digest is refused', async () => {
    const f = await pullThrough('acme/swap', digests.f);
    assert.notEqual(f.code, 0);
    const e = await pullThrough('acme/swap', digests.e);
    assert.equal(e.code, 0, e.stderr);
  });

  test('a signature made by airlock sign on the upstream is accepted by the publisher check', async () => {
    const r = await pullThrough('acme/tool', 'v1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(t.airlock.services.policyStore.admission(`${UPSTREAM}/acme/tool`, digests.airlockSigned)?.how, 'publisher');
  });

  test('a signature made by airlock sign is accepted by cosign verify', async () => {
    const r = await run(COSIGN, ['verify', '--key', publisherKey.pubPath, '--insecure-ignore-tlog=true', '--registry-cacert', reg.caPath, `${reg.host}/acme/tool@${digests.airlockSigned}`], { timeoutMs: 60000 });
    assert.equal(r.code, 0, r.stderr);
  });

  test('removing the publisher refuses its images again', async () => {
    const s = t.airlock.services;
    const saved = s.policyStore.publisher('acme');
    assert.ok(saved);
    s.policyStore.deletePublisher('acme');
    s.policy.changed();
    try {
      const r = await t.request('pull', `/v2/${UPSTREAM}/acme/signed/manifests/${digests.signed}`);
      assert.equal(r.status, 403);
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'DENIED');
    } finally {
      s.policyStore.addPublisher({ ...saved, createdBy: saved.createdBy });
      s.policy.changed();
    }
  });
});

describe('publishers managed through the API', () => {
  test('deleting a publisher through DELETE /api/v1/publishers/{name} refuses, on the next pull, an image only its signature admitted', async () => {
    const repo = `${UPSTREAM}/vendor/tool`;
    const key = writeSigningKey(path.join(tmp, 'keys', 'vendor'), PW);
    const digest = await pushNew('vendor/tool', 'v1');
    await cosignSign(key.keyPath, `${reg.host}/vendor/tool@${digest}`);
    const admin = (method: string, p: string, body?: unknown) =>
      t.request('admin', p, body === undefined ? { method } : { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const pulls = async (): Promise<{ status: number; code?: string }[]> =>
      Promise.all(
        [`/v2/${repo}/manifests/${digest}`, `/v2/${repo}/manifests/v1`].map(async (p) => {
          const r = await t.request('pull', p);
          return { status: r.status, code: r.status === 200 ? undefined : (JSON.parse(r.body.toString()) as { errors: { code: string }[] }).errors[0].code };
        }),
      );
    assert.deepEqual(await pulls(), [{ status: 403, code: 'DENIED' }, { status: 403, code: 'DENIED' }], 'no publisher vouches for vendor/* yet');

    const added = await admin('POST', '/api/v1/publishers', { name: 'vendor', publicKey: fs.readFileSync(key.pubPath, 'utf8'), repositories: [`${UPSTREAM}/vendor/*`] });
    assert.equal(added.status, 201, added.body.toString());
    assert.deepEqual(await pulls(), [{ status: 200, code: undefined }, { status: 200, code: undefined }], "admitted by the vendor's signature");
    assert.equal(t.airlock.services.policyStore.admission(repo, digest)?.how, 'publisher');
    assert.equal(t.airlock.services.policyStore.pinFor(repo, digest), null, 'no pin admits it');

    const deleted = await admin('DELETE', '/api/v1/publishers/vendor');
    assert.equal(deleted.status, 204, deleted.body.toString());
    assert.deepEqual(await pulls(), [{ status: 403, code: 'DENIED' }, { status: 403, code: 'DENIED' }], 'refused on the next pull, by digest and by tag');
    const listed = JSON.parse((await t.request('audit', '/api/v1/publishers')).body.toString()) as { publishers: { name: string }[] };
    assert.ok(!listed.publishers.some((p) => p.name === 'vendor'));
  });
});

describe('re-signing with the mirror key', () => {
  const mirrorPub = (): string => path.join(t.dir, 'keys', 'mirror.pub');
  const cosignVerify = (key: string, ref: string, ...flags: string[]) =>
    run(
      COSIGN,
      ['verify', ...flags, '--key', key, '--insecure-ignore-tlog=true', '--registry-cacert', t.caPath, '--registry-client-cert', path.join(t.bundle('pull').dir, 'client.cert'), '--registry-client-key', path.join(t.bundle('pull').dir, 'client.key'), ref],
      { timeoutMs: 60000 },
    );
  // mirrorVerified is the payload cosign verify prints for ref, which it must verify with the mirror key.
  const mirrorVerified = async (ref: string, ...flags: string[]) => {
    const ok = await cosignVerify(mirrorPub(), ref, ...flags);
    assert.equal(ok.code, 0, `${ref}: ${ok.stderr}`);
    return JSON.parse(ok.stdout.trim().split('\n').pop() ?? '[]')[0];
  };

  test('cosign verify with the mirror key succeeds by tag and by digest, and fails with another key', async () => {
    const pulled = await pullThrough('library/pinned', '1');
    assert.equal(pulled.code, 0, pulled.stderr);
    for (const ref of [`${t.host}/${UPSTREAM}/library/pinned:1`, `${t.host}/${UPSTREAM}/library/pinned@${digests.pinned}`]) {
      const payload = await mirrorVerified(ref);
      assert.equal(payload.critical.image['docker-manifest-digest'], digests.pinned);
      assert.equal(payload.optional['airlock.admission'], 'pin');
    }
    const wrong = await cosignVerify(strangerKey.pubPath, `${t.host}/${UPSTREAM}/library/pinned:1`);
    assert.notEqual(wrong.code, 0);
  });

  test('cosign verify --experimental-oci11 finds the signature through the referrers API alone', async () => {
    const pulled = await pullThrough('library/pinned', '1');
    assert.equal(pulled.code, 0, pulled.stderr);
    const name = `${UPSTREAM}/library/pinned`;
    const listed = await t.request('pull', `/v2/${name}/referrers/${digests.pinned}?artifactType=${encodeURIComponent(SIGNATURE_ARTIFACT_TYPE)}`);
    const index = JSON.parse(listed.body.toString()) as { manifests: { digest: string; artifactType: string }[] };
    assert.equal(index.manifests.length, 1, listed.body.toString());
    // cosign in OCI 1.1 mode asks only the referrers API (it never reads the .sig tag), then fetches the listed digest.
    const events = async () => {
      await t.airlock.services.audit.stored();
      return [...t.airlock.services.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)];
    };
    const before = (await events()).at(-1)?.seq ?? 0;
    const payload = await mirrorVerified(`${t.host}/${name}@${digests.pinned}`, '--experimental-oci11');
    const asked = (await events()).filter((e) => e.seq > before && e.actor !== null);
    assert.ok(asked.some((e) => e.action === 'pull.referrers' && e.digest === digests.pinned && e.status === 200), 'cosign asked the referrers API');
    assert.ok(!asked.some((e) => e.reference?.endsWith('.sig')), 'and not the .sig tag');
    assert.equal(payload.critical.image['docker-manifest-digest'], digests.pinned);
    const wrong = await cosignVerify(strangerKey.pubPath, `${t.host}/${name}@${digests.pinned}`, '--experimental-oci11');
    assert.notEqual(wrong.code, 0);
  });

  test('cosign verify of a platform manifest by its digest finds its signature before any client pulled that platform', async () => {
    const dir = path.join(tmp, 'img', 'multi');
    const amd = await buildImage(dir, { tag: 'amd64', files: { '/id': `amd64 ${crypto.randomUUID()}\n` } });
    const arm = await buildImage(dir, { tag: 'arm64', arch: 'arm64', files: { '/id': `arm64 ${crypto.randomUUID()}\n` } });
    await pushImage(await buildIndex(dir, [amd, arm], 'multi'), `${reg.host}/library/multi:1`, { certDir: reg.certDir, all: true });
    const index = await inspectDigest(reg, 'library/multi', '1');
    const listed = JSON.parse((await fetchManifest(reg, 'library/multi', index)).bytes.toString()) as { manifests: { digest: string; platform: { architecture: string } }[] };
    const armDigest = listed.manifests.find((m) => m.platform.architecture === 'arm64')?.digest;
    assert.ok(armDigest);
    const repo = `${UPSTREAM}/library/multi`;
    const pinned = await t.request('admin', '/api/v1/pins', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repository: repo, digest: index, tag: '1' }) });
    assert.equal(pinned.status, 201, pinned.body.toString());
    // skopeo copies the index and this machine's platform: the arm64 manifest is admitted as listed, never fetched.
    const pulled = await pullThrough('library/multi', '1');
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(t.airlock.services.content.holds(repo, armDigest), null, 'no client pulled the arm64 manifest');
    // cosign asks for the .sig tag of a digest reference without fetching its manifest first.
    const payload = await mirrorVerified(`${t.host}/${repo}@${armDigest}`);
    assert.equal(payload.critical.image['docker-manifest-digest'], armDigest);
    assert.equal(payload.optional['airlock.admission'], 'index');
  });

  test('cosign verify of a pinned digest finds its signature before any client pulled it, as an admission controller checks a pod', async () => {
    const digest = await pushNew('library/fresh', '1');
    const repo = `${UPSTREAM}/library/fresh`;
    const pinned = await t.request('admin', '/api/v1/pins', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repository: repo, digest }) });
    assert.equal(pinned.status, 201, pinned.body.toString());
    assert.equal(t.airlock.services.content.holds(repo, digest), null, 'no client pulled the image');
    const payload = await mirrorVerified(`${t.host}/${repo}@${digest}`);
    assert.equal(payload.critical.image['docker-manifest-digest'], digest);
    assert.equal(payload.optional['airlock.admission'], 'pin');
  });

  test('cosign verify of a digest a publisher signed finds its signature before any client pulled it; a made-up one has none', async () => {
    const digest = await pushNew('acme/fresh', '1');
    await cosignSign(publisherKey.keyPath, `${reg.host}/acme/fresh@${digest}`);
    const repo = `${UPSTREAM}/acme/fresh`;
    assert.equal(t.airlock.services.content.holds(repo, digest), null, 'no client pulled the image');
    const payload = await mirrorVerified(`${t.host}/${repo}@${digest}`);
    assert.equal(payload.critical.image['docker-manifest-digest'], digest);
    assert.equal(payload.optional['airlock.admission'], 'publisher');
    const made = `sha256:${crypto.createHash('sha256').update(crypto.randomUUID()).digest('hex')}`;
    const none = await t.request('pull', `/v2/${repo}/manifests/${made.replace(':', '-')}.sig`);
    assert.equal(none.status, 404);
    assert.equal(JSON.parse(none.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    assert.equal(t.airlock.services.policyStore.requestFor(repo, made), null, 'and no approval request was made for it');
    // A layer is no manifest: asked for one as a manifest, distribution answers 500.
    const manifest = JSON.parse((await t.request('pull', `/v2/${repo}/manifests/${digest}`)).body.toString()) as { layers: { digest: string }[] };
    const layer = await t.request('pull', `/v2/${repo}/manifests/${manifest.layers[0].digest.replace(':', '-')}.sig`);
    assert.equal(layer.status, 404, layer.body.toString());
  });

  test('the upstream publisher signature is never passed through under the .sig tag', async () => {
    const sig = await t.request('pull', `/v2/${UPSTREAM}/acme/signed/manifests/${digests.signed.replace(':', '-')}.sig`);
    assert.equal(sig.status, 200);
    const m = JSON.parse(sig.body.toString());
    const payload = await t.request('pull', `/v2/${UPSTREAM}/acme/signed/blobs/${m.layers[0].digest}`);
    const p = JSON.parse(payload.body.toString());
    assert.equal(p.critical.identity['docker-reference'], `${UPSTREAM}/acme/signed`);
    assert.equal(p.optional['airlock.admission'], 'publisher');
    assert.ok(p.optional['airlock.publisherKey'].startsWith('sha256:'));
    const viaMirror = await cosignVerify(mirrorPub(), `${t.host}/${UPSTREAM}/acme/signed@${digests.signed}`);
    assert.equal(viaMirror.code, 0, viaMirror.stderr);
    const viaPublisher = await cosignVerify(publisherKey.pubPath, `${t.host}/${UPSTREAM}/acme/signed@${digests.signed}`);
    assert.notEqual(viaPublisher.code, 0);
  });

  test('openssl verifies the signature over the payload, and the payload names the served manifest digest', async () => {
    const name = `${UPSTREAM}/library/pinned`;
    const manifest = await t.request('pull', `/v2/${name}/manifests/1`);
    const served = `sha256:${crypto.createHash('sha256').update(manifest.body).digest('hex')}`;
    const sig = await t.request('pull', `/v2/${name}/manifests/${served.replace(':', '-')}.sig`);
    assert.equal(sig.status, 200);
    assert.equal(sig.headers['content-type'], 'application/vnd.oci.image.manifest.v1+json');
    const layer = JSON.parse(sig.body.toString()).layers[0];
    assert.equal(layer.mediaType, 'application/vnd.dev.cosign.simplesigning.v1+json');
    const payload = await t.request('pull', `/v2/${name}/blobs/${layer.digest}`);
    const dir = path.join(tmp, 'openssl');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'payload'), payload.body);
    fs.writeFileSync(path.join(dir, 'sig.der'), Buffer.from(layer.annotations['dev.cosignproject.cosign/signature'], 'base64'));
    assert.equal(JSON.parse(payload.body.toString()).critical.image['docker-manifest-digest'], served);
    const ok = await run('openssl', ['dgst', '-sha256', '-verify', mirrorPub(), '-signature', path.join(dir, 'sig.der'), path.join(dir, 'payload')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Verified OK/);
    const bad = await run('openssl', ['dgst', '-sha256', '-verify', strangerKey.pubPath, '-signature', path.join(dir, 'sig.der'), path.join(dir, 'payload')]);
    assert.notEqual(bad.code, 0);
  });

  test('airlock signs each admitted digest once, even for concurrent first pulls', async () => {
    const d = await pushNew('library/once', '1');
    const s = t.airlock.services;
    s.policyStore.addPin({ repository: `${UPSTREAM}/library/once`, digest: d, tag: null, note: null, source: 'api', createdBy: 'test' });
    s.policy.changed();
    const rs = await Promise.all(Array.from({ length: 6 }, () => t.request('pull', `/v2/${UPSTREAM}/library/once/manifests/${d}`)));
    for (const r of rs) assert.equal(r.status, 200);
    await s.audit.stored();
    const admitted = [...s.auditStore.range('0', '9', Number.MAX_SAFE_INTEGER)].filter((e) => e.action === 'image.admitted' && e.digest === d);
    assert.equal(admitted.length, 1);
    const own = s.content.referrers(`${UPSTREAM}/library/once`, d);
    assert.equal(own.length, 1);
  });

  test('after revocation the .sig tag is gone within one second and the image is refused', async () => {
    const s = t.airlock.services;
    const name = `${UPSTREAM}/library/pinned`;
    s.policyStore.revoke(name, digests.pinned, 'test revocation', 'test');
    s.policyStore.forgetAdmission(name, digests.pinned);
    s.policy.changed();
    const started = Date.now();
    await waitFor(async () => (await t.request('pull', `/v2/${name}/manifests/${digests.pinned.replace(':', '-')}.sig`)).status === 404, { timeoutMs: 1000, what: '.sig removed' });
    console.log(`.sig gone after ${Date.now() - started} ms`);
    const m = await t.request('pull', `/v2/${name}/manifests/1`);
    assert.equal(m.status, 403);
  });
});

describe('mirror key rotation', () => {
  test('after a key rotation old signatures stay valid until the admin route re-signs everything under the new key', async () => {
    const keys = path.join(t.dir, 'keys');
    const ref = `${t.host}/${UPSTREAM}/acme/signed@${digests.signed}`;
    const verify = (pub: string) =>
      run(COSIGN, ['verify', '--key', pub, '--insecure-ignore-tlog=true', '--registry-cacert', t.caPath, '--registry-client-cert', path.join(t.bundle('pull').dir, 'client.cert'), '--registry-client-key', path.join(t.bundle('pull').dir, 'client.key'), ref.replace(t.host, `127.0.0.1:${t.airlock.port}`)], { timeoutMs: 60000 });
    fs.renameSync(path.join(keys, 'mirror.key'), path.join(keys, 'mirror-old.key'));
    fs.renameSync(path.join(keys, 'mirror.pub'), path.join(keys, 'mirror-old.pub'));
    writeSigningKey(path.join(keys, 'mirror'), TEST_KEY_PASSWORD);
    await t.restart();
    assert.equal((await verify(path.join(keys, 'mirror-old.pub'))).code, 0, 'the stored signature still verifies with the old key');
    assert.notEqual((await verify(path.join(keys, 'mirror.pub'))).code, 0);
    const sigPath = `/v2/${UPSTREAM}/acme/signed/manifests/sha256-${digests.signed.slice(7)}.sig`;
    const oldSig = String((await t.request('pull', sigPath)).headers['docker-content-digest']);
    const r = await t.request('admin', '/api/v1/images/resign', { method: 'POST' });
    assert.equal(r.status, 200, r.body.toString());
    const body = JSON.parse(r.body.toString()) as { resigned: number; keyId: string };
    assert.ok(body.resigned >= 1);
    const now = await verify(path.join(keys, 'mirror.pub'));
    assert.equal(now.code, 0, now.stderr);
    // The replaced signature is no longer served by its digest either (the referrers API lists only the current one).
    const newSig = String((await t.request('pull', sigPath)).headers['docker-content-digest']);
    assert.notEqual(newSig, oldSig);
    assert.equal((await t.request('pull', `/v2/${UPSTREAM}/acme/signed/manifests/${newSig}`)).status, 200);
    const replaced = await t.request('pull', `/v2/${UPSTREAM}/acme/signed/manifests/${oldSig}`);
    assert.equal(replaced.status, 404, replaced.body.toString());
    assert.equal(JSON.parse(replaced.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    const key = await t.request('pull', '/api/v1/signing-key');
    assert.equal(key.body.toString().trim(), fs.readFileSync(path.join(keys, 'mirror.pub'), 'utf8').trim());
  });
});
