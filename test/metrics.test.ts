// The counters of the request path: counted in plain numbers, handed to prom-client whenever the registry is read, and
// exported as prom-client exports any counter.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import client from 'prom-client';
import { TalliedCounter } from '../server/metrics.js';

test('a tallied counter exports the sums of its series, once each, across reads of the registry', async () => {
  const registry = new client.Registry();
  const requests = new TalliedCounter(registry, 'test_requests_total', 'requests', ['route', 'status']);
  const bytes = new TalliedCounter(registry, 'test_bytes_total', 'bytes', ['source']);
  for (let i = 0; i < 5; i++) requests.inc('v2_manifests', '200');
  requests.inc('v2_blobs', '404');
  bytes.add(1687, 'cache');
  bytes.add(313, 'cache');
  const first = await registry.metrics();
  assert.match(first, /^test_requests_total\{route="v2_manifests",status="200"\} 5$/m);
  assert.match(first, /^test_requests_total\{route="v2_blobs",status="404"\} 1$/m);
  assert.match(first, /^test_bytes_total\{source="cache"\} 2000$/m);
  assert.equal(await registry.metrics(), first, 'a second read adds nothing');
  requests.inc('v2_manifests', '200');
  bytes.add(1, 'upstream');
  const second = await registry.metrics();
  assert.match(second, /^test_requests_total\{route="v2_manifests",status="200"\} 6$/m);
  assert.match(second, /^test_bytes_total\{source="cache"\} 2000$/m);
  assert.match(second, /^test_bytes_total\{source="upstream"\} 1$/m);
});

test('a tallied counter keeps label values apart and escapes them as prom-client does', async () => {
  const registry = new client.Registry();
  const c = new TalliedCounter(registry, 'test_pairs_total', 'pairs', ['a', 'b']);
  // The same characters split differently are different series.
  c.inc('x', 'yz');
  c.inc('xy', 'z');
  c.inc('say "hi"', 'back\\slash');
  const text = await registry.metrics();
  assert.match(text, /^test_pairs_total\{a="x",b="yz"\} 1$/m);
  assert.match(text, /^test_pairs_total\{a="xy",b="z"\} 1$/m);
  assert.match(text, /^test_pairs_total\{a="say \\"hi\\"",b="back\\\\slash"\} 1$/m);
});

test('a tallied counter refuses a count with the wrong number of label values', () => {
  const c = new TalliedCounter(new client.Registry(), 'test_arity_total', 'arity', ['route', 'method', 'status']);
  assert.throws(() => c.inc('v2_manifests', 'GET'), /test_arity_total takes 3 label values, not 2/);
});
