// Crashes and a full disk, with airlock as a separate process (`airlock serve`): kill -9 in the middle of a large
// uncached download leaves only a temp file, which the next start removes; a download larger than the free space
// fails for its client while cached content keeps being served, and nothing corrupt lands under a digest.
// The full-disk cases pull from the real CNCF registry (docker-registry 2.8, over TLS) with a 100 MiB layer. The kill -9
// case uses an in-process fake upstream (DripUpstream) because it needs a download paced slowly enough to kill airlock
// part-way through, which a real registry on loopback cannot be made to do.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Pool } from 'undici';
import { cachedBlobFiles, DripUpstream, hashFile, mib, mtlsPool, send, sha256, spawnAirlock, type SpawnedAirlock, tmpBlobFiles } from './fixtures/abuse-kit.js';
import { verifyAuditExport } from '../server/audit/verify.js';
import { BlobStore } from '../storage/blobs.js';
import { type Bundle, startTestAirlock, TEST_KEY_PASSWORD, type TestUpstream } from './harness/airlock.js';
import { buildImage, fetchManifest, pushImage } from './harness/images.js';
import { freePort, run, stopAll, track, waitFor } from './harness/proc.js';
import { type Registry, startRegistry } from './harness/registry.js';

const ENV = { AIRLOCK_TEST_KEY_PASSWORD: TEST_KEY_PASSWORD };
const BIG = 200 * 1024 * 1024;
const DRIP_RATE = 20 * 1024 * 1024;

let tmp: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-crash-'));
});

after(async () => {
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// prepare writes a data directory and config for upstream under dir (starting airlock once in-process to initialise
// it and issue a pull certificate), and returns the config path and the pull bundle.
async function prepare(dir: string, upstream: TestUpstream, pins: string[]): Promise<{ configPath: string; pull: Bundle; audit: Bundle; dataDir: string }> {
  const t = await startTestAirlock({ dir, upstreams: [upstream], pins });
  const pull = t.bundle('pull');
  const audit = t.bundle('audit');
  await t.stop();
  return { configPath: t.configPath, pull, audit, dataDir: t.dir };
}

// streamBlob GETs a blob and counts the bytes as they arrive, hashing them; it resolves when the response ends or fails.
function streamBlob(pool: Pool, urlPath: string, progress: { bytes: number }): Promise<{ status: number; bytes: number; digest: string; error: Error | null }> {
  return (async () => {
    const h = crypto.createHash('sha256');
    let status = -1;
    try {
      const r = await pool.request({ method: 'GET', path: urlPath, headersTimeout: 60_000, bodyTimeout: 60_000 });
      status = r.statusCode;
      for await (const chunk of r.body) {
        progress.bytes += (chunk as Buffer).length;
        h.update(chunk as Buffer);
      }
      return { status, bytes: progress.bytes, digest: `sha256:${h.digest('hex')}`, error: null };
    } catch (err) {
      return { status, bytes: progress.bytes, digest: '', error: err as Error };
    }
  })();
}

// mountSmall mounts a file system of sizeMiB at dir: tmpfs, else a loop-mounted ext4 image; it needs root.
async function mountSmall(dir: string, sizeMiB: number): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const tmpfs = await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', dir]);
  if (tmpfs.code === 0) return;
  const img = `${dir}.img`;
  const loop = await run('sh', ['-c', `truncate -s ${sizeMiB}M "${img}" && mkfs.ext4 -q "${img}" && mount -o loop "${img}" "${dir}"`]);
  if (loop.code !== 0) {
    throw new Error(
      `the disk-full tests need a small file system: mount -t tmpfs failed (${tmpfs.stderr.trim()}) and so did a loop-mounted ext4 image (${loop.stderr.trim()}); run the tests as root`,
    );
  }
}

// unmount detaches a file system mounted by mountSmall, lazily when something still holds it open.
async function unmount(dir: string): Promise<void> {
  if ((await run('umount', [dir])).code !== 0) await run('umount', ['-l', dir]);
}

describe('kill -9 in the middle of a large uncached download', () => {
  let upstream: DripUpstream;
  let image: { manifest: string; config: string; layers: string[] };
  let big: Buffer;

  before(async () => {
    upstream = new DripUpstream();
    await upstream.start();
    big = crypto.randomBytes(BIG);
    image = upstream.addImage('library/huge', 'v1', [big], DRIP_RATE);
  });

  after(async () => {
    await upstream?.stop();
  });

  test('leaves only a temp file, which the restart removes, and the next pull gets the right bytes', async () => {
    const { configPath, pull, dataDir } = await prepare(path.join(tmp, 'kill'), { name: 'docker.io', url: upstream.url, insecure: true, readTimeoutMs: 5000 }, [`docker.io/library/huge:v1@${image.manifest}`]);
    const port = await freePort();
    const first: SpawnedAirlock = await spawnAirlock(configPath, port, ENV, 'airlock-first');
    const pool = mtlsPool(pull, 2, first.url);
    const layer = image.layers[0];
    const finalPath = path.join(dataDir, 'blobs', 'sha256', layer.slice(7, 9), layer.slice(7));
    try {
      const m = await send(pool, { path: '/v2/library/huge/manifests/v1' });
      assert.equal(m.status, 200, m.body.toString());
      const progress = { bytes: 0 };
      const download = streamBlob(pool, `/v2/library/huge/blobs/${layer}`, progress);
      const tmpSize = (): number => tmpBlobFiles(dataDir).reduce((n, f) => n + fs.statSync(path.join(dataDir, 'blobs', 'tmp', f)).size, 0);
      await waitFor(() => tmpSize() >= 40 * 1024 * 1024, { timeoutMs: 30_000, what: 'airlock to write 40 MiB of the blob' });
      const written = tmpSize();
      process.kill(first.proc.pid, 'SIGKILL');
      const code = await first.proc.exited;
      const client = await download;
      console.log(`killed airlock (pid ${first.proc.pid}, exit ${String(code)}) with ${mib(written)} of ${mib(BIG)} in its temp file; the client had ${mib(client.bytes)}`);
      assert.ok(client.error !== null || client.bytes < BIG, 'the client did not get a complete blob');
      assert.ok(written < BIG, 'the kill landed mid-download');
      assert.equal(fs.existsSync(finalPath), false, 'nothing under blobs/sha256 for the digest');
      assert.equal(cachedBlobFiles(dataDir).some(([d]) => d === layer), false);
      const leftovers = tmpBlobFiles(dataDir);
      assert.ok(leftovers.length >= 1, 'the unfinished download is a temp file in blobs/tmp');
      assert.equal(upstream.count('GET', layer), 1);
    } finally {
      await pool.close();
    }

    upstream.blobs.set(layer, { bytes: big, rate: 0 });
    const second = await spawnAirlock(configPath, port, ENV, 'airlock-second');
    const pool2 = mtlsPool(pull, 2, second.url);
    try {
      assert.deepEqual(tmpBlobFiles(dataDir), [], 'the temp file is removed at start');
      const progress = { bytes: 0 };
      const again = await streamBlob(pool2, `/v2/library/huge/blobs/${layer}`, progress);
      assert.equal(again.error, null, again.error?.message);
      assert.equal(again.status, 200);
      assert.equal(again.bytes, BIG);
      assert.equal(again.digest, layer);
      await waitFor(() => fs.existsSync(finalPath), { timeoutMs: 10_000, what: 'the blob to be cached' });
      assert.equal(await hashFile(finalPath), layer);
      assert.equal(fs.statSync(finalPath).size, BIG);
      const ping = await send(pool2, { path: '/v2/' });
      assert.equal(ping.status, 200);
    } finally {
      await pool2.close();
      await second.proc.stop();
    }
    // The log is buffered; it is complete once the process has stopped.
    assert.match(second.proc.output(), /removed unfinished blob downloads/);
  });
});

describe('a full disk', () => {
  const SIZE_MIB = 64;
  let mountPoint: string;
  let mounted = false;
  let reg: Registry;
  let airlock: SpawnedAirlock | undefined;
  let pool: Pool | undefined;
  let configPath = '';
  let pullBundle: Bundle;
  let dataDir = '';
  let audit: Bundle;
  let smallImage: { manifest: string; config: string; layers: string[] };

  before(async () => {
    mountPoint = path.join(tmp, 'full');
    await mountSmall(mountPoint, SIZE_MIB);
    mounted = true;
    // The registry keeps its storage outside the small file system.
    reg = track(await startRegistry({ dir: path.join(tmp, 'full-registry') }));
  });

  after(async () => {
    await airlock?.proc.stop();
    await reg?.stop();
    if (mounted) await unmount(mountPoint);
  });

  // pushed builds an image with a layer of layerBytes random bytes, pushes it to the registry as library/<name>:v1, and
  // returns its digests and the layer's size.
  async function pushed(name: string, layerBytes: number): Promise<{ manifest: string; config: string; layers: string[]; layerSize: number }> {
    const img = await buildImage(path.join(tmp, 'images', name), { tag: 'v1', files: { '/name.txt': `${name}\n` }, layerBytes });
    await pushImage(img, `${reg.host}/library/${name}:v1`, { certDir: reg.certDir });
    const m = await fetchManifest(reg, `library/${name}`, 'v1');
    const doc = JSON.parse(m.bytes.toString()) as { config: { digest: string }; layers: { digest: string; size: number }[] };
    return { manifest: m.digest, config: doc.config.digest, layers: doc.layers.map((l) => l.digest), layerSize: doc.layers[0].size };
  }

  test('a download larger than the free space fails for its client, cached content is still served, and nothing corrupt is cached', async () => {
    const [small, hugeImage] = await Promise.all([pushed('small', 1024 * 1024), pushed('toobig', 100 * 1024 * 1024)]);
    smallImage = small;
    const hugeSize = hugeImage.layerSize;
    // The data directory is made outside the small file system (the in-process start keeps its log file open) and
    // copied in; its config uses relative paths (the registry's CA is outside it, by an absolute path).
    const made = await prepare(
      path.join(tmp, 'full-src'),
      { name: 'docker.io', url: reg.url, ca: reg.caPath, readTimeoutMs: 5000 },
      [`docker.io/library/small:v1@${smallImage.manifest}`, `docker.io/library/toobig:v1@${hugeImage.manifest}`],
    );
    dataDir = path.join(mountPoint, 'data');
    fs.cpSync(made.dataDir, dataDir, { recursive: true, filter: (src) => path.basename(src) !== 'airlock.log' });
    configPath = path.join(dataDir, path.basename(made.configPath));
    const pull = made.pull;
    pullBundle = pull;
    audit = made.audit;
    const free = (): number => {
      const st = fs.statfsSync(mountPoint);
      return st.bavail * st.bsize;
    };
    console.log(`data directory on a ${SIZE_MIB} MiB file system, ${mib(free())} free before start`);
    assert.ok(free() < hugeSize, 'the big blob does not fit');
    airlock = await spawnAirlock(configPath, await freePort(), ENV, 'airlock-full', tmp);
    pool = mtlsPool(pull, 4, airlock.url);
    {
      const sm = await send(pool, { path: '/v2/library/small/manifests/v1' });
      assert.equal(sm.status, 200);
      for (const d of [smallImage.config, ...smallImage.layers]) {
        const b = await send(pool, { path: `/v2/library/small/blobs/${d}` });
        assert.equal(b.status, 200);
        assert.equal(sha256(b.body), d);
      }
      const hm = await send(pool, { path: '/v2/library/toobig/manifests/v1' });
      assert.equal(hm.status, 200);

      for (let attempt = 0; attempt < 2; attempt++) {
        const progress = { bytes: 0 };
        const r = await streamBlob(pool, `/v2/library/toobig/blobs/${hugeImage.layers[0]}`, progress);
        console.log(`pull of a ${mib(hugeSize)} blob with ${mib(free())} free: status ${r.status}, ${mib(r.bytes)} received, ${r.error?.message ?? 'no transport error'}`);
        assert.ok(r.error !== null || r.status >= 500, 'the client gets an error');
        assert.ok(r.digest !== hugeImage.layers[0], 'the client did not get the whole blob');
        await waitFor(() => tmpBlobFiles(dataDir).length === 0 || !airlock?.proc.running(), { timeoutMs: 10_000, what: 'the failed download to be discarded' });
        assert.ok(airlock.proc.running(), `airlock is still running after the disk filled up:\n${airlock.proc.output().slice(-1500)}`);

        const ping = await send(pool, { path: '/v2/' });
        assert.equal(ping.status, 200, ping.error?.message);
        const again = await send(pool, { path: '/v2/library/small/manifests/v1' });
        assert.equal(again.status, 200);
        assert.deepEqual(again.body, sm.body);
        for (const d of [smallImage.config, ...smallImage.layers]) {
          const b = await send(pool, { path: `/v2/library/small/blobs/${d}` });
          assert.equal(b.status, 200, `cached blob ${d} after the failed download`);
          assert.equal(sha256(b.body), d);
        }
      }
      const files = cachedBlobFiles(dataDir);
      assert.ok(files.length > 0, 'the small image is cached');
      for (const [digest, file] of files) assert.equal(await hashFile(file), digest, `${file} hashes to its name`);
      assert.equal(files.some(([d]) => d === hugeImage.layers[0]), false, 'the big blob is not cached');
      assert.ok(airlock.proc.running(), 'airlock survived the full disk');
    }
  });

  test('while the disk stays full, cached content is still served, and the audit chain is intact once space is freed', async () => {
    if (!configPath) throw new Error('the data directory is made by the previous test');
    if (!airlock?.proc.running()) {
      // The previous test failed with airlock gone: start it again on the same data directory.
      await pool?.close();
      airlock = await spawnAirlock(configPath, await freePort(), ENV, 'airlock-full-again', tmp);
      pool = mtlsPool(pullBundle, 4, airlock.url);
    }
    const live = airlock;
    const client = pool;
    if (!client) throw new Error('no client pool');
    const filler = path.join(mountPoint, 'filler');
    const fd = fs.openSync(filler, 'w');
    const chunk = Buffer.alloc(1 << 20, 1);
    try {
      for (;;) fs.writeSync(fd, chunk);
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
    } finally {
      fs.closeSync(fd);
    }
    const st = fs.statfsSync(mountPoint);
    console.log(`filled the file system: ${st.bavail * st.bsize} bytes free`);
    const statuses = new Map<number, number>();
    const started = Date.now();
    // Requests keep coming for over a second, so the audit log tries to write them while the disk is full.
    while (Date.now() - started < 1500) {
      for (const d of [smallImage.manifest, smallImage.config, ...smallImage.layers]) {
        const kind = d === smallImage.manifest ? 'manifests' : 'blobs';
        const r = await send(client, { path: `/v2/library/small/${kind}/${d}` });
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status === 200 && kind === 'blobs') assert.equal(sha256(r.body), d);
      }
      assert.ok(live.proc.running(), `airlock is still running with the disk full:\n${live.proc.output().slice(-1500)}`);
    }
    console.log(`with the disk full: ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.deepEqual([...statuses.keys()], [200], 'cached content is served while the disk is full');
    assert.ok((statuses.get(200) ?? 0) > 0);
    fs.rmSync(filler);
    assert.ok(live.proc.running(), `airlock is still running after the disk was full:\n${live.proc.output().slice(-1500)}`);
    const b = await send(client, { path: `/v2/library/small/blobs/${smallImage.layers[0]}` });
    assert.equal(b.status, 200);
    const auditPool = mtlsPool(audit, 1, live.url);
    try {
      const exp = await send(auditPool, { path: '/api/v1/audit?format=jsonl' });
      assert.equal(exp.status, 200);
      const lines = exp.body.toString().trimEnd().split('\n');
      const key = crypto.createPublicKey(fs.readFileSync(path.join(dataDir, 'keys', 'mirror.pub')));
      const result = await verifyAuditExport(
        (async function* () {
          yield* lines;
        })(),
        key,
      );
      assert.equal(result.ok, true, `the audit export verifies after the disk was full: ${JSON.stringify(result)}`);
    } finally {
      await auditPool.close();
    }
  });

  after(async () => {
    await pool?.close();
  });

  test('a blob store write that runs out of space fails and leaves nothing under its digest', async () => {
    const dir = path.join(tmp, 'tiny');
    await mountSmall(dir, 4);
    try {
      const store = new BlobStore(path.join(dir, 'data'), 1 << 30);
      store.init();
      const bytes = crypto.randomBytes(6 * 1024 * 1024);
      const digest = sha256(bytes);
      // One write larger than the free space: the kernel writes what fits and reports a short count, not an error.
      await assert.rejects(store.put(digest, bytes), 'storing a blob larger than the free space fails');
      assert.equal(store.size(digest), null);
      assert.equal(fs.existsSync(store.pathOf(digest)), false, 'no truncated file under the digest');
      assert.deepEqual(tmpBlobFiles(path.join(dir, 'data')), []);
    } finally {
      await unmount(dir);
    }
  });
});
