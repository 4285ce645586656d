// The benchmark's verdicts: the medians, ratios and targets of scripts/bench/report.ts, for a whole run and for a partial
// one (--only), which must judge only what it measured.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RequestsResult } from '../scripts/bench/load.js';
import { emptyResults, evaluate, median, type Results } from '../scripts/bench/report.js';

function rps(n: number, p99Ms = 10): RequestsResult {
  return { mode: 'requests', connections: 64, requests: n * 10, seconds: 10, rps: n, p50Ms: p99Ms / 3, p99Ms, maxMs: p99Ms * 2, errors: 0, statuses: { '200': n * 10 } };
}

function empty(): Results {
  return emptyResults(
    { nproc: 2, cpu: 'test', memoryGiB: 24, node: 'v20', kernel: '6', nginx: 'nginx', registry: '2.8', date: '2026-12-07 00:00 UTC', loadAverage: 0, otherCpus: 0 },
    { quick: false, runs: 3, blobBytes: 256 * 2 ** 20, manifestBytes: 1687, manifestSeconds: 10, connections: 64, airlockCommand: 'node', loadGenerator: 'load.ts', tls: 'TLSv1.3' },
  );
}

describe('the benchmark report', () => {
  test('median takes the middle value, or the mean of the two middle ones', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.ok(Number.isNaN(median([])));
  });

  test('a manifests-only run judges the manifest targets and nothing else', () => {
    const r = empty();
    r.manifests.airlockDigest = [rps(7000), rps(7400), rps(7200, 30)];
    r.manifests.airlockTag = [rps(8000), rps(8100), rps(8200)];
    r.manifests.registryDigest = [rps(1000), rps(900), rps(950)];
    r.manifests.registryTag = [rps(1000), rps(1000), rps(1000)];
    r.manifests.bare = [rps(10000), rps(10000), rps(10000)];
    const { checks, markdown } = evaluate(r);
    assert.deepEqual(
      checks.map((c) => [c.name, c.verdict]),
      [
        ['manifest by digest: airlock/registry req/s', 'MISS'],
        ['manifest by digest: airlock/bare req/s', 'PASS'],
        ['manifest by digest: airlock p99', 'PASS'],
        ['manifest by pinned tag: airlock/registry req/s', 'PASS'],
        ['manifest by pinned tag: airlock/bare req/s', 'PASS'],
        ['manifest by pinned tag: airlock p99', 'PASS'],
      ],
    );
    // Medians: 7,200 req/s by digest against the registry's 950 (7.58×) and the bare server's 10,000 (0.72×).
    assert.ok(Math.abs((checks[0]?.value ?? 0) - 7200 / 950) < 1e-9);
    assert.match(markdown, /\| manifest by digest, 64 connections \(req\/s\) \| 7,200 \|/);
    assert.doesNotMatch(markdown, /warm|cold|fan-in|peak RSS/);
    assert.match(markdown, /5 of 6 targets met/);
  });

  test('a whole run judges all thirteen targets', () => {
    const r = empty();
    r.warm = { airlock: { c1: [900], c8: [950] }, nginx: { c1: [1000], c8: [900] }, registry: { c1: [880], c8: [850] } };
    for (const k of ['airlockDigest', 'airlockTag', 'registryDigest', 'registryTag', 'bare'] as const) r.manifests[k] = [rps(k.startsWith('registry') ? 1000 : 9000)];
    r.cold = { airlock: [1.2], direct: [0.6], registryProxy: [1.1] };
    r.fanIn = { airlock: { seconds: [3.3], upstreamGets: [1] }, registryProxy: { seconds: [6.5], upstreamGets: [9] } };
    r.memory.peakBytes = [190 * 2 ** 20];
    const { checks } = evaluate(r);
    assert.equal(checks.length, 13);
    const verdict = (name: string): string | undefined => checks.find((c) => c.name === name)?.verdict;
    assert.equal(verdict('warm 1 client: airlock/nginx'), 'MISS');
    assert.equal(verdict('warm 1 client: airlock/registry'), 'PASS');
    assert.equal(verdict('cold pull: airlock/direct time'), 'MISS');
    assert.equal(verdict('fan-in: upstream GETs (worst run)'), 'PASS');
    assert.equal(verdict('peak RSS during 8-client runs'), 'PASS');
  });
});
