import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import {
  buildImage,
  buildIndex,
  fetchBlob,
  fetchManifest,
  inspectDigest,
  MEDIA_TYPES,
  pushImage,
  skopeoCopy,
  type LocalImage,
} from './harness/images.js';
import { run, runOk, startProcess, stopAll, waitFor } from './harness/proc.js';
import { registryRequest, startRegistry, type Registry } from './harness/registry.js';

interface ManifestJson {
  mediaType?: string;
  config: { digest: string };
  layers: { digest: string; size: number }[];
}

interface IndexJson {
  mediaType?: string;
  manifests: { digest: string; mediaType: string; platform?: { architecture: string; os: string } }[];
}

describe('the integration-test harness', () => {
  let work: string;
  let upstream: Registry;
  let busybox: LocalImage;
  let stub: LocalImage;
  let multi: LocalImage;

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-harness-'));
    upstream = await startRegistry({ dir: path.join(work, 'upstream') });
    const images = path.join(work, 'images');
    busybox = await buildImage(images, {
      tag: '1.36',
      withBusybox: true,
      files: { '/etc/probe-release': 'probe 1.36\n' },
    });
    stub = await buildImage(images, { tag: 'arm64-stub', arch: 'arm64', files: { 'etc/arch': 'arm64\n' } });
    multi = await buildIndex(images, [busybox, stub], 'multi');
  });

  after(async () => {
    await stopAll();
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('a process that ignores SIGTERM is killed after the stop deadline', async () => {
    const script = "process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000);";
    const proc = startProcess(process.execPath, ['-e', script], {
      name: 'stubborn',
      stopTimeoutMs: 300,
    });
    await waitFor(() => proc.output().includes('ready'), { timeoutMs: 5000, what: 'the shell to start' });
    const started = Date.now();
    await proc.stop();
    assert.equal(proc.running(), false);
    assert.ok(Date.now() - started >= 250, 'SIGTERM alone did not end it');
    assert.equal(await proc.exited, null);
  });

  test('run reports exit codes and runOk throws with the command and its stderr', async () => {
    const failed = await run('/bin/sh', ['-c', 'echo out; echo oops >&2; exit 3']);
    assert.deepEqual([failed.code, failed.stdout, failed.stderr], [3, 'out\n', 'oops\n']);
    await assert.rejects(runOk('/bin/sh', ['-c', 'echo broken >&2; exit 1']), /exited with 1:\nbroken/);
    await assert.rejects(runOk('/nonexistent/tool', []), /not installed.*test-deps\.sh/);
    await assert.rejects(waitFor(() => false, { timeoutMs: 50, what: 'nothing' }), /timed out after 50 ms waiting for nothing/);
  });

  test('the TLS upstream answers /v2/ to a client that trusts its test CA and is refused by one that does not', async () => {
    assert.match(upstream.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ok = await registryRequest(upstream, '/v2/');
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['docker-distribution-api-version'], 'registry/2.0');
    await assert.rejects(registryRequest({ url: upstream.url }, '/v2/'), /self[- ]signed|unable to verify|certificate/i);
    assert.ok(fs.existsSync(path.join(upstream.certDir, 'ca.crt')));
  });

  test('a busybox image pushed with skopeo is served under the digest read back from the registry', async () => {
    await pushImage(busybox, `${upstream.host}/library/busybox:1.36`, { certDir: upstream.certDir });
    const manifest = await fetchManifest(upstream, 'library/busybox', '1.36');
    assert.equal(manifest.mediaType, MEDIA_TYPES.ociManifest);
    assert.equal(manifest.headerDigest, manifest.digest);
    assert.equal(manifest.digest, busybox.digest);
    assert.equal(await inspectDigest(upstream, 'library/busybox', manifest.digest), manifest.digest);

    const parsed = JSON.parse(manifest.bytes.toString()) as ManifestJson;
    assert.equal(parsed.layers.length, 1);
    const layerDesc = parsed.layers[0];
    assert.ok(layerDesc !== undefined);
    const layer = await fetchBlob(upstream, 'library/busybox', layerDesc.digest);
    assert.equal(layer.digest, layerDesc.digest);
    assert.equal(layer.bytes.length, layerDesc.size);
    const tar = gunzipSync(layer.bytes).toString('latin1');
    assert.ok(tar.includes('bin/busybox'), 'the layer carries /bin/busybox');
    assert.ok(tar.includes('probe 1.36'), 'the layer carries /etc/probe-release');
  });

  test('the same image pushed as docker schema 2 is served with the docker media type and its own digest', async () => {
    await pushImage(busybox, `${upstream.host}/library/busybox:1.36-v2s2`, { certDir: upstream.certDir, format: 'v2s2' });
    const manifest = await fetchManifest(upstream, 'library/busybox', '1.36-v2s2');
    assert.equal(manifest.mediaType, MEDIA_TYPES.dockerManifest);
    assert.notEqual(manifest.digest, busybox.digest);
    assert.equal(manifest.headerDigest, manifest.digest);
  });

  test('a two-platform OCI index is pushed with both children and served as an index', async () => {
    await pushImage(multi, `${upstream.host}/library/multi:latest`, { certDir: upstream.certDir, all: true });
    const index = await fetchManifest(upstream, 'library/multi', 'latest');
    assert.equal(index.mediaType, MEDIA_TYPES.ociIndex);
    assert.equal(index.digest, multi.digest);
    const parsed = JSON.parse(index.bytes.toString()) as IndexJson;
    assert.deepEqual(
      parsed.manifests.map((m) => `${m.platform?.os}/${m.platform?.architecture}`).sort(),
      ['linux/amd64', 'linux/arm64'],
    );
    for (const child of parsed.manifests) {
      const served = await fetchManifest(upstream, 'library/multi', child.digest);
      assert.equal(served.digest, child.digest);
      assert.equal(served.mediaType, child.mediaType);
    }
    assert.ok(parsed.manifests.some((m) => m.digest === stub.digest));
  });

  test('a large random layer round-trips byte for byte', async () => {
    const big = await buildImage(path.join(work, 'big'), { tag: 'big', files: {}, layerBytes: 4 * 1024 * 1024 });
    await pushImage(big, `${upstream.host}/test/big:1`, { certDir: upstream.certDir });
    const manifest = JSON.parse((await fetchManifest(upstream, 'test/big', '1')).bytes.toString()) as ManifestJson;
    const layerDesc = manifest.layers[0];
    assert.ok(layerDesc !== undefined);
    assert.ok(layerDesc.size > 4 * 1024 * 1024, 'random bytes do not compress');
    const layer = await fetchBlob(upstream, 'test/big', layerDesc.digest);
    assert.equal(layer.digest, layerDesc.digest);
  });

  test('a restarted registry keeps serving what was pushed before', async () => {
    const before = await inspectDigest(upstream, 'library/busybox', '1.36');
    await upstream.restart();
    assert.equal(await inspectDigest(upstream, 'library/busybox', '1.36'), before);
  });

  describe('with token auth', () => {
    let secured: Registry;

    before(async () => {
      secured = await startRegistry({
        dir: path.join(work, 'secured'),
        auth: 'token',
        username: 'alice',
        password: 'alice-secret',
      });
    });

    test('an anonymous push gets 401 with a Bearer challenge naming the token realm', async () => {
      const res = await registryRequest(secured, '/v2/library/busybox/blobs/uploads/', {
        method: 'POST',
        answerChallenge: false,
      });
      assert.equal(res.status, 401);
      const challenge = String(res.headers['www-authenticate']);
      // The registry lists the actions in map order, which varies from run to run.
      assert.match(challenge, /^Bearer realm="https:\/\/127\.0\.0\.1:\d+\/token",service="[^"]+",scope="repository:library\/busybox:(pull,push|push,pull)"$/);
      assert.ok(secured.tokenServer !== undefined);
      assert.ok(challenge.includes(secured.tokenServer.realm));
    });

    test('skopeo without credentials gets no token and cannot push', async () => {
      await assert.rejects(
        pushImage(busybox, `${secured.host}/library/busybox:1.36`, { certDir: secured.certDir }),
        /unauthorized|authentication required|401/i,
      );
      assert.ok(secured.tokenServer?.requests.some((r) => r.status === 401 && r.user === undefined));
    });

    test('skopeo with credentials pushes through the token flow and the token server counts its requests', async () => {
      const tokens = secured.tokenServer;
      assert.ok(tokens !== undefined);
      tokens.reset();
      await pushImage(busybox, `${secured.host}/library/busybox:1.36`, {
        certDir: secured.certDir,
        creds: 'alice:alice-secret',
      });
      assert.ok(tokens.tokenRequests > 0, 'skopeo asked the token server');
      assert.ok(tokens.requests.every((r) => r.status === 200 && r.user === 'alice'));
      assert.ok(tokens.requests.some((r) => r.scopes.some((s) => s.name === 'library/busybox' && s.actions.includes('push'))));

      const pulledBefore = tokens.tokenRequests;
      assert.equal(await inspectDigest(secured, 'library/busybox', '1.36'), busybox.digest);
      assert.equal(tokens.tokenRequests, pulledBefore + 1, 'the harness client ran one token flow');
    });

    test('skopeo pulls from the token-auth registry into a directory with credentials', async () => {
      const out = path.join(work, 'pulled');
      await skopeoCopy(`docker://${secured.host}/library/busybox:1.36`, `dir:${out}`, {
        srcCertDir: secured.certDir,
        srcCreds: 'alice:alice-secret',
      });
      assert.ok(fs.existsSync(path.join(out, 'manifest.json')));
    });
  });

  test('a pull-through registry fetches from an upstream signed by another private CA', async () => {
    const proxy = await startRegistry({
      dir: path.join(work, 'proxy'),
      proxyRemoteUrl: upstream.url,
      trustCaPaths: [upstream.caPath],
    });
    assert.notEqual(proxy.caPath, upstream.caPath);
    const served = await fetchManifest(proxy, 'library/busybox', '1.36');
    assert.equal(served.digest, await inspectDigest(upstream, 'library/busybox', '1.36'));
    await proxy.stop();
  });

  test('an htpasswd registry accepts its bcrypt user and refuses anonymous requests', async () => {
    const basic = await startRegistry({ dir: path.join(work, 'basic'), auth: 'htpasswd' });
    assert.ok(basic.username !== undefined && basic.password !== undefined);
    const anonymous = await registryRequest(basic, '/v2/', { answerChallenge: false });
    assert.equal(anonymous.status, 401);
    assert.match(String(anonymous.headers['www-authenticate']), /^Basic realm=/);
    await pushImage(stub, `${basic.host}/test/stub:1`, {
      certDir: basic.certDir,
      creds: `${basic.username}:${basic.password}`,
    });
    assert.equal(await inspectDigest(basic, 'test/stub', '1'), stub.digest);
    await basic.stop();
  });
});
