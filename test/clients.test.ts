// Pull-through with real clients (SPEC §3, §4): skopeo, containerd's ctr and podman pull pinned images from a real
// upstream registry through airlock over mutual TLS, and get exactly the upstream's digests.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildPayload, signPayload } from '../server/signing/cosign.js';
import { startTestAirlock, type Bundle, type TestAirlock } from './harness/airlock.js';
import {
  describeRun,
  preparePodman,
  readDirImage,
  readRequestLog,
  skopeoPull,
  startContainerd,
  unmountUnder,
  writeHostsToml,
  type ClientRun,
  type Containerd,
  type ImageIndex,
  type ImageManifest,
  type Podman,
} from './harness/clients.js';
import { ALL_MANIFEST_TYPES, buildImage, buildIndex, fetchManifest, inspectDigest, MEDIA_TYPES, pushImage, skopeoCopy } from './harness/images.js';
import { pushLegacySignature } from './harness/cosign.js';
import { stopAll } from './harness/proc.js';
import { registryRequest, startRegistry, type Registry } from './harness/registry.js';

let work: string;
let upstream: Registry;
let t: TestAirlock;
let pull: Bundle;
let counter = 0;
const digests = { busybox: '', v2s2: '', multi: '', multilist: '', other: '', cold: '' };
let busyboxManifest: ImageManifest;
let multiIndex: ImageIndex;
let containerd: Containerd | undefined;
let podman: Podman | undefined;

// out returns a fresh folder under the scratch directory for one client's output.
function out(label: string): string {
  counter += 1;
  const parent = path.join(work, 'out');
  fs.mkdirSync(parent, { recursive: true });
  return path.join(parent, `${String(counter)}-${label}`);
}

function scratch(): string {
  return path.join(work, 'skopeo-tmp');
}

function mustSucceed(what: string, r: ClientRun): void {
  assert.equal(r.code, 0, `${what} failed: ${describeRun(r)}\nairlock log tail:\n${logTail()}`);
}

function logTail(): string {
  return fs.existsSync(t.logPath) ? fs.readFileSync(t.logPath, 'utf8').split('\n').slice(-15).join('\n') : '(no log)';
}

// assertSameImage checks a dir: copy holds the upstream's manifest bytes, its config and every layer, all hashing to their digests.
function assertSameImage(dir: string, expectedDigest: string, manifest: ImageManifest): void {
  const img = readDirImage(dir);
  assert.equal(img.digest, expectedDigest, 'manifest digest equals the upstream one');
  const parsed = JSON.parse(img.bytes.toString()) as ImageManifest;
  assert.deepEqual(parsed, manifest);
  for (const d of [parsed.config.digest, ...parsed.layers.map((l) => l.digest)]) {
    assert.equal(img.blobs.get(d), d, `blob ${d} is present and hashes to its digest`);
  }
}

async function upstreamManifest(repo: string, ref: string): Promise<ImageManifest> {
  return JSON.parse((await fetchManifest(upstream, repo, ref)).bytes.toString()) as ImageManifest;
}

// copyMultilist copies the multi-platform list (every platform) into library/NAME:1 of the upstream and gives the list's
// linux/amd64 entry.
async function copyMultilist(name: string): Promise<ImageIndex['manifests'][number]> {
  await skopeoCopy(`docker://${upstream.host}/library/multilist:1`, `docker://${upstream.host}/library/${name}:1`, { srcCertDir: upstream.certDir, destCertDir: upstream.certDir, all: true });
  const list = JSON.parse((await fetchManifest(upstream, `library/${name}`, '1')).bytes.toString()) as ImageIndex;
  const amd = list.manifests.find((m) => m.platform?.architecture === 'amd64');
  assert.ok(amd, `library/${name}:1 lists a linux/amd64 manifest`);
  return amd;
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-clients-'));
  upstream = await startRegistry({ dir: path.join(work, 'upstream') });
  const images = path.join(work, 'images');
  const busybox = await buildImage(images, { tag: '1.36', withBusybox: true, files: { '/etc/probe-release': 'probe 1.36\n' } });
  const stub = await buildImage(images, { tag: 'arm64-stub', arch: 'arm64', files: { '/etc/arch': 'arm64\n' } });
  const multi = await buildIndex(images, [busybox, stub], 'multi');
  const other = await buildImage(images, { tag: 'other', files: { '/etc/other': 'not pinned\n' } });
  const cold = await buildImage(images, { tag: 'cold', files: { '/etc/cold': 'pinned, never pulled before the upstream stops\n' } });
  const push = { certDir: upstream.certDir };
  await pushImage(busybox, `${upstream.host}/library/busybox:1.36`, push);
  await pushImage(busybox, `${upstream.host}/library/busybox:1.36-v2s2`, { ...push, format: 'v2s2' });
  await pushImage(multi, `${upstream.host}/library/multi:latest`, { ...push, all: true });
  await pushImage(multi, `${upstream.host}/library/multilist:1`, { ...push, all: true, format: 'v2s2' });
  await pushImage(other, `${upstream.host}/library/other:1`, push);
  await pushImage(cold, `${upstream.host}/library/cold:1`, push);
  digests.busybox = await inspectDigest(upstream, 'library/busybox', '1.36');
  digests.v2s2 = await inspectDigest(upstream, 'library/busybox', '1.36-v2s2');
  digests.multi = await inspectDigest(upstream, 'library/multi', 'latest');
  digests.multilist = await inspectDigest(upstream, 'library/multilist', '1');
  digests.other = await inspectDigest(upstream, 'library/other', '1');
  digests.cold = await inspectDigest(upstream, 'library/cold', '1');
  busyboxManifest = await upstreamManifest('library/busybox', '1.36');
  multiIndex = JSON.parse((await fetchManifest(upstream, 'library/multi', 'latest')).bytes.toString()) as ImageIndex;
  t = await startTestAirlock({
    dir: path.join(work, 'airlock'),
    upstreams: [{ name: 'docker.io', url: upstream.url, ca: upstream.caPath }],
    defaultUpstream: 'docker.io',
    pins: [
      `docker.io/library/busybox:1.36@${digests.busybox}`,
      `docker.io/library/multi:latest@${digests.multi}`,
      `docker.io/library/busybox:1.36-v2s2@${digests.v2s2}`,
      `docker.io/library/cold:1@${digests.cold}`,
    ],
  });
  pull = t.bundle('pull');
});

after(async () => {
  const leftovers: string[] = [];
  if (containerd) leftovers.push(...(await containerd.stop()));
  if (podman) leftovers.push(...(await podman.cleanup()));
  await t?.stop();
  await stopAll();
  if (work) {
    await unmountUnder(work);
    fs.rmSync(work, { recursive: true, force: true });
  }
  assert.deepEqual(leftovers, [], 'containerd and podman left nothing behind in /run or the cgroup tree');
});

describe('skopeo through airlock', () => {
  test('a pinned tag copies with the upstream manifest, config and layer digests', async () => {
    const dir = out('busybox-tag');
    const r = await skopeoPull(`${t.host}/library/busybox:1.36`, `dir:${dir}`, { certDir: pull.dir, scratch: scratch() });
    mustSucceed('skopeo copy of the pinned tag', r);
    console.log(`skopeo copy busybox:1.36 (cold cache): ${String(r.ms)} ms`);
    assertSameImage(dir, digests.busybox, busyboxManifest);
    const served = readRequestLog(t.logPath).filter((l) => l.path.startsWith('/v2/library/busybox/'));
    assert.ok(served.some((l) => l.source === 'upstream'), 'the first pull fetched from the upstream');
    assert.ok(served.every((l) => l.actor === pull.name), 'every request carried the pull client certificate');
  });

  test('a pinned image copies by digest, and again from the cache', async () => {
    const dir = out('busybox-digest');
    const r = await skopeoPull(`${t.host}/library/busybox@${digests.busybox}`, `dir:${dir}`, { certDir: pull.dir, scratch: scratch() });
    mustSucceed('skopeo copy by digest', r);
    console.log(`skopeo copy busybox@digest (warm cache): ${String(r.ms)} ms`);
    assertSameImage(dir, digests.busybox, busyboxManifest);
  });

  test('the upstream-name prefix form <airlock>/docker.io/library/busybox:1.36 reaches the same image', async () => {
    const dir = out('busybox-prefix');
    const r = await skopeoPull(`${t.host}/docker.io/library/busybox:1.36`, `dir:${dir}`, { certDir: pull.dir, scratch: scratch() });
    mustSucceed('skopeo copy with the upstream prefix', r);
    assertSameImage(dir, digests.busybox, busyboxManifest);
    const lines = readRequestLog(t.logPath).filter((l) => l.path.startsWith('/v2/docker.io/library/busybox/'));
    assert.ok(lines.length > 0, 'airlock logged the prefixed requests');
    assert.ok(lines.every((l) => l.repo === 'docker.io/library/busybox'), 'they were routed to docker.io/library/busybox');
  });

  test('a docker schema 2 image keeps its docker media type and digest', async () => {
    const dir = out('busybox-v2s2');
    const r = await skopeoPull(`${t.host}/library/busybox:1.36-v2s2`, `dir:${dir}`, { certDir: pull.dir, scratch: scratch() });
    mustSucceed('skopeo copy of the v2s2 image', r);
    const img = readDirImage(dir);
    assert.equal(img.mediaType, MEDIA_TYPES.dockerManifest);
    assertSameImage(dir, digests.v2s2, await upstreamManifest('library/busybox', '1.36-v2s2'));
  });

  test('an unpinned image is refused: skopeo fails and airlock answers 403 DENIED naming an approval request', async () => {
    const dir = out('other');
    const r = await skopeoPull(`${t.host}/library/other:1`, `dir:${dir}`, { certDir: pull.dir, scratch: scratch() });
    assert.notEqual(r.code, 0, `skopeo must fail: ${describeRun(r)}`);
    assert.match(r.stderr, /denied/i);
    const res = await t.request('pull', '/v2/library/other/manifests/1');
    assert.equal(res.status, 403);
    const body = JSON.parse(res.body.toString()) as { errors: { code: string; message: string; detail: { request: unknown; repository: string; digest: string } }[] };
    const err = body.errors[0];
    assert.ok(err !== undefined);
    assert.equal(err.code, 'DENIED');
    assert.equal(typeof err.detail.request, 'number');
    assert.equal(err.detail.repository, 'docker.io/library/other');
    assert.equal(err.detail.digest, digests.other);
    assert.ok(!fs.existsSync(path.join(dir, 'manifest.json')), 'nothing was written for the refused image');
  });
});

describe('multi-platform images through airlock', () => {
  test('skopeo copy --all copies the pinned index and both platform manifests with their digests', async () => {
    const dir = out('multi-all');
    const r = await skopeoPull(`${t.host}/library/multi:latest`, `dir:${dir}`, { certDir: pull.dir, scratch: scratch(), all: true });
    mustSucceed('skopeo copy --all of the index', r);
    const img = readDirImage(dir);
    assert.equal(img.digest, digests.multi);
    assert.equal(img.mediaType, MEDIA_TYPES.ociIndex);
    assert.deepEqual([...img.instances.keys()].sort(), multiIndex.manifests.map((m) => m.digest).sort());
    for (const child of multiIndex.manifests) {
      const m = await upstreamManifest('library/multi', child.digest);
      for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
        assert.equal(img.blobs.get(d), d, `blob ${d} of ${child.platform?.architecture ?? '?'} is present`);
      }
    }
  });

  test('the arm64 child is chosen with --override-arch and the amd64 child copies by its digest', async () => {
    const arm = multiIndex.manifests.find((m) => m.platform?.architecture === 'arm64');
    const amd = multiIndex.manifests.find((m) => m.platform?.architecture === 'amd64');
    assert.ok(arm !== undefined && amd !== undefined);
    const armDir = out('multi-arm64');
    const r1 = await skopeoPull(`${t.host}/library/multi:latest`, `dir:${armDir}`, { certDir: pull.dir, scratch: scratch(), overrideArch: 'arm64' });
    mustSucceed('skopeo copy --override-arch arm64', r1);
    assertSameImage(armDir, arm.digest, await upstreamManifest('library/multi', arm.digest));
    const amdDir = out('multi-amd64');
    const r2 = await skopeoPull(`${t.host}/library/multi@${amd.digest}`, `dir:${amdDir}`, { certDir: pull.dir, scratch: scratch() });
    mustSucceed('skopeo copy of the amd64 child by digest', r2);
    assertSameImage(amdDir, amd.digest, await upstreamManifest('library/multi', amd.digest));
  });
});

describe('a tag asked for by a client that takes no index', () => {
  test("gets the upstream's one-platform answer, which does not become the tag's digest for other clients", async () => {
    const repo = 'docker.io/library/multilist';
    const content = t.airlock.services.content;
    const list = JSON.parse((await fetchManifest(upstream, 'library/multilist', '1')).bytes.toString()) as ImageIndex;
    const amd = list.manifests.find((m) => m.platform?.architecture === 'amd64');
    assert.ok(amd);
    // The real registry answers a tag of a manifest list with its amd64 manifest to a client that does not name the
    // list type. The tag is not pinned and that manifest is listed by no admitted index: refused, naming it.
    const narrow = await t.request('pull', '/v2/library/multilist/manifests/1', { headers: { accept: MEDIA_TYPES.dockerManifest } });
    assert.equal(narrow.status, 403, narrow.body.toString());
    assert.ok(narrow.body.toString().includes(amd.digest), narrow.body.toString());
    // Refused, airlock asked what the tag is for everyone (the list, which might have been admitted): that, not the
    // one-platform answer, is kept as the tag's digest.
    assert.equal(content.tag(repo, '1'), digests.multilist, "a one-platform answer is not kept as the tag's digest");
    const full = await t.request('pull', '/v2/library/multilist/manifests/1', { headers: { accept: ALL_MANIFEST_TYPES } });
    assert.equal(full.status, 403);
    assert.ok(full.body.toString().includes(digests.multilist), full.body.toString());
    assert.equal(content.tag(repo, '1'), digests.multilist, 'an answer to an Accept that takes indexes is');
    await t.request('pull', '/v2/library/multilist/manifests/1', { headers: { accept: `${MEDIA_TYPES.dockerManifest}, */*` } });
    assert.equal(content.tag(repo, '1'), digests.multilist, 'a bare */* does not take indexes either');
  });

  test('gets the platform manifest of an admitted index that no client has pulled through airlock yet', async () => {
    const repo = 'docker.io/library/multilist2';
    const amd = await copyMultilist('multilist2');
    assert.equal(await inspectDigest(upstream, 'library/multilist2', '1'), digests.multilist);
    const s = t.airlock.services;
    s.policyStore.addPin({ repository: repo, digest: digests.multilist, tag: null, note: 'the index, by digest', source: 'api', createdBy: 'test' });
    s.policy.changed();
    assert.equal(s.content.holds(repo, digests.multilist), null, 'airlock has not seen the index in this repository');
    const narrow = await t.request('pull', '/v2/library/multilist2/manifests/1', { headers: { accept: MEDIA_TYPES.dockerManifest } });
    assert.equal(narrow.status, 200, narrow.body.toString());
    assert.equal(narrow.headers['docker-content-digest'], amd.digest);
    assert.equal(narrow.headers['content-type'], MEDIA_TYPES.dockerManifest);
    assert.notEqual(s.content.holds(repo, digests.multilist), null, 'airlock fetched the pinned index to learn what it lists');
    assert.equal(s.policyStore.requestFor(repo, amd.digest), null, 'and no approval request was made for the platform manifest');
  });

  test('gets the platform manifest of an index a publisher signed, once airlock asked what the tag is for everyone', async () => {
    const repo = 'docker.io/library/multilist3';
    const amd = await copyMultilist('multilist3');
    // The publisher signed the list only, as `cosign sign` without --recursive does.
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const payload = buildPayload(repo, digests.multilist, null);
    await pushLegacySignature(upstream, 'library/multilist3', digests.multilist, [{ payload, signature: signPayload(privateKey, payload) }]);
    const publicPem = publicKey.export({ format: 'pem', type: 'spki' }).toString();
    const added = await t.request('admin', '/api/v1/publishers', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'multilist3', publicKey: publicPem, repositories: [repo] }),
    });
    assert.equal(added.status, 201, added.body.toString());
    const s = t.airlock.services;
    assert.equal(s.content.holds(repo, digests.multilist), null, 'airlock has not seen the list in this repository');
    const narrow = await t.request('pull', '/v2/library/multilist3/manifests/1', { headers: { accept: MEDIA_TYPES.dockerManifest } });
    assert.equal(narrow.status, 200, narrow.body.toString());
    assert.equal(narrow.headers['docker-content-digest'], amd.digest);
    assert.equal(s.content.tag(repo, '1'), digests.multilist, "the tag's digest for everyone is the list");
    assert.equal(s.policyStore.admission(repo, amd.digest)?.how, 'index');
    assert.equal(s.policyStore.requestFor(repo, amd.digest), null, 'and no approval request was made for the platform manifest');
  });

  test('that names no manifest type (a bare */*) gets the admitted manifest of an unpinned tag, not the schema 1 the upstream converts it to', async () => {
    const copy = { srcCertDir: upstream.certDir, destCertDir: upstream.certDir };
    await skopeoCopy(`docker://${upstream.host}/library/busybox:1.36-v2s2`, `docker://${upstream.host}/library/busybox:v2s2-unpinned`, copy);
    await skopeoCopy(`docker://${upstream.host}/library/busybox:1.36`, `docker://${upstream.host}/library/busybox:oci-unpinned`, copy);
    const cases = [
      { tag: 'v2s2-unpinned', digest: digests.v2s2, mediaType: MEDIA_TYPES.dockerManifest },
      { tag: 'oci-unpinned', digest: digests.busybox, mediaType: MEDIA_TYPES.ociManifest },
    ];
    for (const c of cases) {
      assert.equal(await inspectDigest(upstream, 'library/busybox', c.tag), c.digest, 'the unpinned tag names a pinned digest');
      // The real registry answers such a client with a schema 1 conversion of a schema 2 manifest (a digest nothing
      // admits, which it cannot serve by digest), and with 404 for an OCI manifest.
      const direct = await registryRequest(upstream, `/v2/library/busybox/manifests/${c.tag}`, { headers: { accept: '*/*' } });
      assert.notEqual(direct.headers['docker-content-digest'], c.digest);
      for (const accept of ['*/*', 'application/vnd.docker.distribution.manifest.v1+prettyjws, */*']) {
        for (const method of ['HEAD', 'GET']) {
          const r = await t.request('pull', `/v2/library/busybox/manifests/${c.tag}`, { method, headers: { accept } });
          assert.equal(r.status, 200, `${method} ${c.tag} with Accept ${accept}: ${r.body.toString()}`);
          assert.equal(r.headers['docker-content-digest'], c.digest);
          assert.equal(r.headers['content-type'], c.mediaType);
        }
      }
    }
  });

  test("of a pinned tag gets distribution's answer: a list's linux/amd64 manifest, MANIFEST_UNKNOWN for an OCI index", async () => {
    const s = t.airlock.services;
    const list = JSON.parse((await fetchManifest(upstream, 'library/multilist', '1')).bytes.toString()) as ImageIndex;
    const amd = list.manifests.find((m) => m.platform?.architecture === 'amd64');
    assert.ok(amd);
    s.policyStore.addPin({ repository: 'docker.io/library/multilist', digest: digests.multilist, tag: 'pinned', note: null, source: 'api', createdBy: 'test' });
    s.policy.changed();
    const narrow = { accept: MEDIA_TYPES.dockerManifest };
    // Full Accept first, so that its answer is remembered; a narrow client must still not get the list from memory.
    for (let i = 0; i < 2; i++) {
      const full = await t.request('pull', '/v2/library/multilist/manifests/pinned', { headers: { accept: ALL_MANIFEST_TYPES } });
      assert.equal(full.status, 200);
      assert.equal(full.headers['docker-content-digest'], digests.multilist);
      const one = await t.request('pull', '/v2/library/multilist/manifests/pinned', { headers: narrow });
      assert.equal(one.status, 200, one.body.toString());
      assert.equal(one.headers['docker-content-digest'], amd.digest);
      assert.equal(one.headers['content-type'], MEDIA_TYPES.dockerManifest);
    }
    const oci = await t.request('pull', '/v2/library/multi/manifests/latest', { headers: narrow });
    assert.equal(oci.status, 404);
    assert.match(JSON.parse(oci.body.toString()).errors[0].message, /is an OCI index, and the Accept header does not take OCI indexes/);
    const any = await t.request('pull', '/v2/library/multi/manifests/latest');
    assert.equal(any.status, 200, 'without an Accept header the index is served');
    assert.equal(any.headers['docker-content-digest'], digests.multi);
  });
});

describe('containerd 1.6 through airlock', () => {
  let certsD: string;

  test('ctr pulls docker.io/library/busybox:1.36 through the hosts.toml mirror, sending ns=docker.io', async () => {
    const dir = path.join(work, 'containerd');
    containerd = await startContainerd(dir);
    certsD = path.join(dir, 'certs.d');
    writeHostsToml(certsD, {
      registry: 'docker.io',
      server: 'https://registry-1.docker.io',
      mirror: t.host,
      caPath: path.join(pull.dir, 'ca.crt'),
      certPath: path.join(pull.dir, 'client.cert'),
      keyPath: path.join(pull.dir, 'client.key'),
    });
    const mark = readRequestLog(t.logPath).length;
    const r = await containerd.ctr(['images', 'pull', '--hosts-dir', certsD, 'docker.io/library/busybox:1.36'], 60_000);
    mustSucceed('ctr images pull', r);
    console.log(`ctr images pull docker.io/library/busybox:1.36: ${String(r.ms)} ms`);
    const lines = readRequestLog(t.logPath).slice(mark);
    assert.ok(lines.length > 0, 'containerd reached airlock');
    assert.ok(lines.every((l) => l.path.includes('?ns=docker.io')), `every containerd request named ns=docker.io: ${lines.map((l) => l.path).join(', ')}`);
    assert.ok(lines.every((l) => l.repo === 'docker.io/library/busybox'), 'ns=docker.io routed to docker.io/library/busybox');
    assert.ok(lines.some((l) => l.method === 'HEAD' && l.path === '/v2/library/busybox/manifests/1.36?ns=docker.io'));
    assert.ok(lines.every((l) => l.status === 200), `all answered 200: ${lines.map((l) => `${l.method} ${l.path} ${String(l.status)}`).join(', ')}`);
    const ls = await containerd.ctr(['images', 'ls']);
    mustSucceed('ctr images ls', ls);
    const row = ls.stdout.split('\n').find((l) => l.startsWith('docker.io/library/busybox:1.36 '));
    assert.ok(row !== undefined, `ctr images ls lists the image:\n${ls.stdout}`);
    assert.ok(row.includes(digests.busybox), `ctr lists the upstream digest ${digests.busybox}:\n${row}`);
  });

  test('ctr runs /bin/busybox echo from the pulled image', async () => {
    // A skip would hide the failure of the test before, which started containerd.
    if (containerd === undefined) assert.fail('containerd did not start (see the test before)');
    const fifo = path.join(containerd.dir, 'fifo');
    fs.mkdirSync(fifo, { recursive: true });
    const r = await containerd.ctr(['run', '--rm', '--fifo-dir', fifo, 'docker.io/library/busybox:1.36', 'airlock-clients-test', '/bin/busybox', 'echo', 'hi'], 60_000);
    mustSucceed('ctr run', r);
    console.log(`ctr run: ${String(r.ms)} ms`);
    assert.equal(r.stdout.trim(), 'hi');
  });
});

describe('podman 4.3 through airlock', () => {
  test('podman pulls docker.io/library/busybox:1.36 via the registries.conf mirror and lists the upstream digest', async () => {
    podman = preparePodman({ dir: path.join(work, 'podman'), mirror: t.host, certDir: pull.dir });
    const mark = readRequestLog(t.logPath).length;
    const r = await podman.pull('docker.io/library/busybox:1.36');
    mustSucceed('podman pull', r);
    console.log(`podman pull docker.io/library/busybox:1.36: ${String(r.ms)} ms`);
    const lines = readRequestLog(t.logPath).slice(mark);
    assert.ok(lines.some((l) => l.method === 'GET' && l.path === '/v2/library/busybox/manifests/1.36' && l.status === 200), `podman fetched the manifest through airlock: ${lines.map((l) => `${l.method} ${l.path} ${String(l.status)}`).join(', ')}`);
    assert.ok(lines.every((l) => !l.path.includes('ns=')), 'podman sends no ns');
    const images = await podman.podman(['images', '--digests', '--format', '{{.Repository}}:{{.Tag}} {{.Digest}}']);
    mustSucceed('podman images', images);
    assert.ok(images.stdout.split('\n').includes(`docker.io/library/busybox:1.36 ${digests.busybox}`), `podman images shows the upstream digest:\n${images.stdout}`);
  });

  test('podman runs the pulled image with runc, lowered ulimits and no network', async () => {
    if (podman === undefined) assert.fail('podman was not set up (see the test before)');
    const r = await podman.podman(['run', '--rm', '--runtime', 'runc', '--network=none', '--cgroup-parent', podman.cgroupParent, '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', 'docker.io/library/busybox:1.36', '/bin/busybox', 'cat', '/etc/probe-release'], 60_000);
    mustSucceed('podman run', r);
    console.log(`podman run: ${String(r.ms)} ms`);
    assert.equal(r.stdout.trim(), 'probe 1.36');
  });
});

describe('with the upstream down', () => {
  test("an unpinned tag of a manifest list is served from its last digest as the upstream answered it: to a client that takes no list, the list's linux/amd64 manifest", async () => {
    const repo = 'docker.io/library/multilist4';
    const amd = await copyMultilist('multilist4');
    const s = t.airlock.services;
    s.policyStore.addPin({ repository: repo, digest: digests.multilist, tag: null, note: 'the list, by digest', source: 'api', createdBy: 'test' });
    s.policy.changed();
    const narrow = { accept: MEDIA_TYPES.dockerManifest };
    const ask = async (headers: Record<string, string>): Promise<string | string[] | undefined> => {
      const r = await t.request('pull', '/v2/library/multilist4/manifests/1', { headers });
      assert.equal(r.status, 200, r.body.toString());
      return r.headers['docker-content-digest'];
    };
    assert.equal(await ask({ accept: ALL_MANIFEST_TYPES }), digests.multilist);
    assert.equal(await ask(narrow), amd.digest, 'the upstream answers the one-platform client with the amd64 manifest');
    await upstream.stop();
    assert.equal(await ask({ accept: ALL_MANIFEST_TYPES }), digests.multilist, "with the upstream down, the tag's last digest");
    assert.equal(await ask(narrow), amd.digest, 'and its amd64 manifest to the client that takes no list, not the list');
  });

  test('a cached image still pulls completely and an uncached pinned one is refused with 503 UNAVAILABLE', async () => {
    await upstream.stop();
    const dir = out('busybox-offline');
    const cached = await skopeoPull(`${t.host}/library/busybox:1.36`, `dir:${dir}`, { certDir: pull.dir, scratch: scratch() });
    mustSucceed('skopeo copy of the cached image with the upstream down', cached);
    console.log(`skopeo copy of the cached image, upstream down: ${String(cached.ms)} ms`);
    assertSameImage(dir, digests.busybox, busyboxManifest);

    const coldDir = out('cold-offline');
    const cold = await skopeoPull(`${t.host}/library/cold:1`, `dir:${coldDir}`, { certDir: pull.dir, scratch: scratch() });
    assert.notEqual(cold.code, 0, `the uncached image cannot be copied: ${describeRun(cold)}`);
    console.log(`skopeo copy of an uncached pinned image, upstream down: failed after ${String(cold.ms)} ms: ${cold.stderr.trim()}`);
    const started = performance.now();
    const res = await t.request('pull', '/v2/library/cold/manifests/1', { timeoutMs: 30_000 });
    console.log(`GET /v2/library/cold/manifests/1 with the upstream down: ${String(res.status)} after ${String(Math.round(performance.now() - started))} ms`);
    assert.equal(res.status, 503);
    const body = JSON.parse(res.body.toString()) as { errors: { code: string; message: string }[] };
    assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
  });
});

describe('airlock itself', () => {
  test('logged no internal error while serving the clients', () => {
    const lines = fs.readFileSync(t.logPath, 'utf8').split('\n').filter((l) => l.startsWith('{'));
    const levels = lines.map((l) => JSON.parse(l) as { level: number; msg: string });
    const warnings = levels.filter((l) => l.level === 40).map((l) => l.msg);
    console.log(`airlock log: ${String(lines.length)} lines, ${String(warnings.length)} warnings (${[...new Set(warnings)].join('; ')})`);
    assert.deepEqual(levels.filter((l) => l.level >= 50), []);
  });
});
