// Sustained load on airlock as its own process: 64 keep-alive mutual-TLS connections pull a mix of cached manifests
// (by tag and by digest) and blobs for a minute. No request may fail, and the process's memory must stay flat.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Pool } from 'undici';
import { mib, mtlsPool, rssBytes, send, sha256, spawnAirlock, type SpawnedAirlock } from './fixtures/abuse-kit.js';
import { type Bundle, startTestAirlock, TEST_KEY_PASSWORD } from './harness/airlock.js';
import { buildImage, inspectDigest, pushImage } from './harness/images.js';
import { freePort, stopAll, track } from './harness/proc.js';
import { registryRequest, startRegistry, type Registry } from './harness/registry.js';

const CONNECTIONS = 64;
const SECONDS = Number(process.env.AIRLOCK_LOAD_SECONDS ?? 60);
const RSS_GROWTH_LIMIT = 200 * 1024 * 1024;
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

let tmp: string;
let upstream: Registry;
let airlock: SpawnedAirlock;
let pull: Bundle;

// Target is one request of the mix with the digest its body must hash to.
interface Target {
  path: string;
  digest: string;
  size: number;
  kind: 'manifest' | 'blob';
}

const targets: Target[] = [];

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-load-'));
  upstream = track(await startRegistry({ dir: path.join(tmp, 'upstream'), logLevel: 'error' }));
  const pins: string[] = [];
  const images: { name: string; digest: string }[] = [];
  for (let i = 0; i < 3; i++) {
    const img = await buildImage(path.join(tmp, 'images'), {
      tag: `load${i}`,
      files: { '/etc/motd': `image ${i} ${crypto.randomUUID()}\n` },
      layerBytes: i === 0 ? 4 * 1024 * 1024 : i === 1 ? 256 * 1024 : undefined,
    });
    await pushImage(img, `${upstream.host}/library/load${i}:v1`, { certDir: upstream.certDir });
    const digest = await inspectDigest(upstream, `library/load${i}`, 'v1');
    pins.push(`docker.io/library/load${i}:v1@${digest}`);
    images.push({ name: `load${i}`, digest });
  }
  const t = await startTestAirlock({ dir: path.join(tmp, 'airlock'), upstreams: [{ name: 'docker.io', url: upstream.url, ca: upstream.caPath }], pins });
  pull = t.bundle('pull');
  await t.stop();
  airlock = await spawnAirlock(t.configPath, await freePort(), { AIRLOCK_TEST_KEY_PASSWORD: TEST_KEY_PASSWORD }, 'airlock-load', tmp);
  for (const { name, digest } of images) {
    const m = await registryRequest(upstream, `/v2/library/${name}/manifests/${digest}`, { headers: { accept: ACCEPT } });
    const doc = JSON.parse(m.body.toString()) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
    targets.push({ path: `/v2/library/${name}/manifests/v1`, digest, size: m.body.length, kind: 'manifest' });
    targets.push({ path: `/v2/library/${name}/manifests/${digest}`, digest, size: m.body.length, kind: 'manifest' });
    for (const b of [doc.config, ...doc.layers]) targets.push({ path: `/v2/library/${name}/blobs/${b.digest}`, digest: b.digest, size: b.size, kind: 'blob' });
  }
  // Everything is pulled once through airlock, so the load runs on cached content.
  const warm = mtlsPool(pull, 4, airlock.url);
  try {
    for (const tg of targets) {
      const r = await send(warm, { path: tg.path, headers: { accept: ACCEPT } });
      assert.equal(r.status, 200, `${tg.path}: ${r.status} ${r.body.toString().slice(0, 200)}`);
      assert.equal(sha256(r.body), tg.digest);
    }
  } finally {
    await warm.close();
  }
});

after(async () => {
  await airlock?.proc.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// pick chooses a request of the mix: mostly manifests, then small blobs, now and then the 4 MiB layer.
function pick(): Target {
  const r = Math.random();
  const manifests = targets.filter((t) => t.kind === 'manifest');
  const small = targets.filter((t) => t.kind === 'blob' && t.size < 1024 * 1024);
  const large = targets.filter((t) => t.kind === 'blob' && t.size >= 1024 * 1024);
  const from = r < 0.7 ? manifests : r < 0.97 || large.length === 0 ? small : large;
  return from[Math.floor(Math.random() * from.length)] ?? manifests[0];
}

describe('sustained load', () => {
  test(`${CONNECTIONS} connections pulling cached manifests and blobs for ${SECONDS} s get no errors and airlock's memory stays flat`, async () => {
    const pool: Pool = mtlsPool(pull, CONNECTIONS, airlock.url);
    const pid = airlock.proc.pid;
    const rssStart = rssBytes(pid);
    let rssPeak = rssStart;
    const timeline: string[] = [];
    let ticks = 0;
    const sampler = setInterval(() => {
      const rss = rssBytes(pid);
      rssPeak = Math.max(rssPeak, rss);
      if (++ticks % 40 === 0) timeline.push(`${ticks / 4}s ${(rss / 2 ** 20).toFixed(0)}`);
    }, 250);
    const errors: string[] = [];
    let requests = 0;
    let bytes = 0;
    const latencies: number[] = [];
    const deadline = performance.now() + SECONDS * 1000;
    const started = performance.now();
    try {
      await Promise.all(
        Array.from({ length: CONNECTIONS }, async () => {
          while (performance.now() < deadline) {
            const tg = pick();
            const t0 = performance.now();
            const r = await send(pool, { path: tg.path, headers: { accept: ACCEPT }, timeoutMs: 30_000 });
            latencies.push(performance.now() - t0);
            requests++;
            bytes += r.body.length;
            if (r.status !== 200) errors.push(`${tg.path}: ${r.status} ${r.error?.message ?? r.body.toString().slice(0, 200)}`);
            else if (r.body.length !== tg.size || (requests % 16 === 0 && sha256(r.body) !== tg.digest)) errors.push(`${tg.path}: wrong bytes`);
          }
        }),
      );
    } finally {
      clearInterval(sampler);
      await pool.close();
    }
    const seconds = (performance.now() - started) / 1000;
    const rssEnd = rssBytes(pid);
    rssPeak = Math.max(rssPeak, rssEnd);
    latencies.sort((a, b) => a - b);
    const q = (p: number): string => (latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0).toFixed(1);
    console.log(
      `load: ${requests} requests in ${seconds.toFixed(1)} s = ${(requests / seconds).toFixed(0)} req/s, ${mib(bytes / seconds)}/s, ` +
        `latency p50 ${q(0.5)} ms p99 ${q(0.99)} ms max ${q(1)} ms, errors ${errors.length}; ` +
        `airlock RSS start ${mib(rssStart)}, peak ${mib(rssPeak)}, end ${mib(rssEnd)} (MiB every 10 s: ${timeline.join(', ')})`,
    );
    assert.deepEqual(errors.slice(0, 10), [], `${errors.length} errors`);
    // Growth is measured from the cached, idle start to the end of the run; the peak includes the buffers of 64
    // connections streaming blobs in 1 MiB chunks at the same time, and is logged.
    assert.ok(rssEnd - rssStart < RSS_GROWTH_LIMIT, `RSS grew by ${mib(rssEnd - rssStart)} (peak ${mib(rssPeak)})`);
    const ping = await send(mtlsPool(pull, 1, airlock.url), { path: '/v2/' });
    assert.equal(ping.status, 200);
  });
});
