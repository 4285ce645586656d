// Property-based abuse of the registry and admin API with fast-check: generated names, references, ns values, Range,
// Accept and query strings under /v2/, generated JSON bodies for the admin API's writes, oversized headers and bodies.
// Whatever arrives, airlock answers without a 5xx (but 503 from the unreachable upstream), keeps answering, speaks
// the OCI error body under /v2/, and caches, admits and pins nothing it should not.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { Pool } from 'undici';
import { API_CODES } from '../server/errors.js';
import { routeName } from '../server/registry/names.js';
import type { Admission, Pin, Publisher } from '../storage/policy.js';
import { type Answer, cachedBlobFiles, isClientSideRefusal, mtlsPool, ociCode, ociErrorProblem, send, type SendOptions } from './fixtures/abuse-kit.js';
import { startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { buildImage, inspectDigest, pushImage } from './harness/images.js';
import { freePort, stopAll, track, waitFor } from './harness/proc.js';
import { type Registry, registryRequest, startRegistry } from './harness/registry.js';

// SCALE multiplies the number of runs (AIRLOCK_FUZZ_SCALE=10 for a long hunt).
const SCALE = Number(process.env.AIRLOCK_FUZZ_SCALE ?? 1);
// SEED is fixed, so that a CI run fails only for a change it tests; AIRLOCK_FUZZ_SEED=random (or a number) explores.
const SEED = process.env.AIRLOCK_FUZZ_SEED === 'random' ? Date.now() % 2 ** 31 : Number(process.env.AIRLOCK_FUZZ_SEED ?? 20261207);
const HEX = '0123456789abcdef'.split('');
const DEAD_UPSTREAM = 'ghcr.io';

let tmp: string;
let upstream: Registry;
let t: TestAirlock;
let pull: Pool;
let admin: Pool;
let pinned: string;
let pinnedBlobs: Set<string>;
let pendingRequest: number;
let unseenLayer: string;
let pinsBefore: Pin[];
let publishersBefore: Publisher[];
let certsBefore: number;
let sent = 0;
let refusedByClient = 0;
const statuses = new Map<number, number>();

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-fuzz-'));
  upstream = track(await startRegistry({ dir: path.join(tmp, 'upstream'), logLevel: 'error' }));
  const work = path.join(tmp, 'images');
  const img = await buildImage(work, { tag: 'fuzzed', files: { '/hello.txt': `hello ${crypto.randomUUID()}\n` } });
  await pushImage(img, `${upstream.host}/library/fuzzed:v1`, { certDir: upstream.certDir });
  const other = await buildImage(work, { tag: 'other', files: { '/other.txt': `other ${crypto.randomUUID()}\n` } });
  await pushImage(other, `${upstream.host}/library/other:v1`, { certDir: upstream.certDir });
  const unseen = await buildImage(work, { tag: 'unseen', files: { '/unseen.txt': `unseen ${crypto.randomUUID()}\n` } });
  await pushImage(unseen, `${upstream.host}/library/unseen:v1`, { certDir: upstream.certDir });
  const unseenManifest = JSON.parse((await registryRequest(upstream, '/v2/library/unseen/manifests/v1', { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).body.toString()) as {
    layers: { digest: string }[];
  };
  unseenLayer = unseenManifest.layers[0].digest;
  pinned = await inspectDigest(upstream, 'library/fuzzed', 'v1');
  const m = JSON.parse((await registryRequest(upstream, `/v2/library/fuzzed/manifests/${pinned}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).body.toString()) as {
    config: { digest: string };
    layers: { digest: string }[];
  };
  pinnedBlobs = new Set([m.config.digest, ...m.layers.map((l) => l.digest)]);
  const dead = await freePort();
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [
      { name: 'docker.io', url: upstream.url, ca: upstream.caPath },
      { name: DEAD_UPSTREAM, url: `http://127.0.0.1:${dead}`, insecure: true, connectTimeoutMs: 500, readTimeoutMs: 1000 },
    ],
    defaultUpstream: 'docker.io',
    pins: [`docker.io/library/fuzzed:v1@${pinned}`],
  });
  pull = mtlsPool(t.bundle('pull'), 4);
  admin = mtlsPool(t.bundle('admin'), 2);
  const warm = await send(pull, { path: '/v2/library/fuzzed/manifests/v1' });
  assert.equal(warm.status, 200, 'the pinned image is served');
  const refused = await send(pull, { path: '/v2/library/other/manifests/v1' });
  assert.equal(refused.status, 403, 'the unpinned image is refused');
  pendingRequest = (JSON.parse(refused.body.toString()) as { errors: { detail: { request: number } }[] }).errors[0].detail.request;
  const s = t.airlock.services;
  pinsBefore = s.policyStore.pins();
  publishersBefore = s.policyStore.publishers();
  certsBefore = s.certs.list().length;
  console.log(`fuzz seed ${SEED} (set AIRLOCK_FUZZ_SEED to replay)`);
});

after(async () => {
  console.log(`fuzz: ${sent} requests, ${refusedByClient} refused by the client library before sending; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
  const upstreamErrors = (upstream?.logs() ?? '').split('\n').filter((l) => /level=error/.test(l) && !/manifest unknown|blob unknown/.test(l));
  if (upstreamErrors.length > 0) console.log(`upstream errors during the run (${upstreamErrors.length}):\n${upstreamErrors.slice(0, 3).map((l) => l.slice(0, 400)).join('\n')}`);
  await pull?.close();
  await admin?.close();
  await t?.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---- generators ----

const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...HEX), minLength: n, maxLength: n });
const component = fc.stringMatching(/^[a-z0-9]{1,8}([._-][a-z0-9]{1,6}){0,2}$/);
const validPath = fc.array(component, { minLength: 1, maxLength: 4 }).map((c) => c.join('/'));

const names: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.constantFrom('fuzzed', 'library/fuzzed', 'docker.io/library/fuzzed', 'index.docker.io/fuzzed', 'other', `${DEAD_UPSTREAM}/acme/app`), weight: 4 },
  { arbitrary: validPath, weight: 3 },
  { arbitrary: fc.tuple(fc.constantFrom('docker.io/', 'Docker.IO/', `${DEAD_UPSTREAM}/`, 'unknown.example/', 'registry-1.docker.io/', 'localhost:5000/'), validPath).map(([a, b]) => a + b), weight: 3 },
  {
    arbitrary: fc.constantFrom(
      'Library/Fuzzed', 'library/../fuzzed', '..', 'a/%2e%2e/b', '%2e%2e/%2e%2e', 'a%2Fb', 'ümlaut/ñame', 'emoji/😀', 'a'.repeat(300), `${'ab/'.repeat(100)}c`,
      'a//b', '/a', 'a/', '-a', 'a-', 'a__b', 'a...b', 'a b', 'a\tb', '%', '%zz', '%00', 'a;b', 'a?b', '\u0000', 'a/.', './a',
    ),
    weight: 3,
  },
  { arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 40 }), weight: 1 },
);

const badDigests = fc.oneof(
  hex(64).map((h) => `sha512:${h}`),
  hex(128).map((h) => `sha512:${h}`),
  hex(64).map((h) => `sha256:${h.toUpperCase()}`),
  fc.nat({ max: 130 }).chain((n) => hex(n)).filter((h) => h.length !== 64).map((h) => `sha256:${h}`),
  fc.constantFrom('md5:d41d8cd98f00b204e9800998ecf8427e', 'foo+bar:abc', ':', 'sha256:', ':abc', 'sha256::', 'SHA256:abc', 'sha256:../../etc/passwd', 'blake3:abc'),
  fc.string({ maxLength: 30 }).map((s) => `sha256:${s}`),
);

const digests = (): fc.Arbitrary<string> =>
  fc.oneof(
    { arbitrary: fc.constantFrom(pinned, ...pinnedBlobs), weight: 3 },
    { arbitrary: hex(64).map((h) => `sha256:${h}`), weight: 3 },
    { arbitrary: badDigests, weight: 3 },
  );

const references = (): fc.Arbitrary<string> =>
  fc.oneof(
    { arbitrary: fc.constantFrom('v1', 'latest', 'V1', `sha256-${pinned.slice(7)}.sig`), weight: 3 },
    { arbitrary: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,20}$/), weight: 2 },
    { arbitrary: fc.constantFrom('a'.repeat(128), 'a'.repeat(129), '.hidden', '-dash', 'tag:with:colons', 'ta/g', '..', '%2e%2e', 'täg', '😀'), weight: 2 },
    { arbitrary: hex(64).map((h) => `sha256-${h}.sig`), weight: 1 },
    { arbitrary: fc.constantFrom('sha256-abc.sig', `sha256-${pinned.slice(7).toUpperCase()}.sig`, `sha512-${pinned.slice(7)}.sig`), weight: 1 },
    { arbitrary: digests(), weight: 3 },
    { arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }), weight: 1 },
  );

const nsValues = fc.option(
  fc.oneof(
    fc.constantFrom('docker.io', 'DOCKER.IO', 'index.docker.io', DEAD_UPSTREAM, 'unknown.example', '', 'docker.io:443', '..', '%00'),
    fc.string({ unit: 'grapheme', maxLength: 20 }),
  ),
  { nil: undefined },
);

const ranges = fc.option(
  fc.oneof(
    fc.tuple(fc.option(fc.oneof(fc.nat(), fc.constantFrom(2 ** 53, 2 ** 53 + 1, 2 ** 64)), { nil: undefined }), fc.option(fc.oneof(fc.nat(), fc.constantFrom(2 ** 53, 2 ** 64)), { nil: undefined })).map(
      ([a, b]) => `bytes=${a === undefined ? '' : BigInt(a).toString()}-${b === undefined ? '' : BigInt(b).toString()}`,
    ),
    fc.constantFrom(
      'bytes=0-', 'bytes=-0', 'bytes=0-0', 'bytes=-1', 'bytes=--1', 'bytes=1-2,3-4', 'BYTES=0-1', 'bytes = 0-1', 'bytes=18446744073709551616-',
      'bytes=99999999999999999-', 'bytes=0-99999999999999999', 'bytes=-99999999999999999', 'bytes=1e3-', 'bytes=0x10-', 'bytes=', 'bytes', 'items=0-1', '',
    ),
    fc.string({ maxLength: 40 }),
  ),
  { nil: undefined },
);

const accepts = fc.option(
  fc.oneof(
    fc.constantFrom(
      'application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.index.v1+json',
      '*/*', 'text/html', 'application/json;q=0', 'application/vnd.oci.image.manifest.v1+json;q=0.5, */*;q=0.1', '', ',,,', 'a/b; q=NaN',
    ),
    fc.string({ maxLength: 60 }),
    fc.nat({ max: 8000 }).map((n) => `application/x-${'a'.repeat(n)}`),
  ),
  { nil: undefined },
);

const queryValue = fc.oneof(
  fc.constantFrom('0', '1', '-1', '1e3', '100000000000', '00', ' 1', '1.5', 'NaN', '', '9'.repeat(20), 'v1', 'zzz'),
  fc.integer().map(String),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
);

const queries = fc.array(fc.tuple(fc.constantFrom('n', 'last', 'ns', 'artifactType', 'junk', '', 'n[]', '__proto__', 'constructor'), queryValue), { maxLength: 4 });

// encodePath percent-encodes what cannot appear raw in a request target, keeping '%' literal so escapes reach the server.
function encodePath(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (c > 0x20 && c < 0x7f && ch !== '?' && ch !== '#') out += ch;
    else out += Buffer.from(ch, 'utf8').toString('hex').replace(/../g, (h) => `%${h.toUpperCase()}`);
  }
  return out;
}

function queryString(q: [string, string][], ns: string | undefined): string {
  const all: [string, string][] = ns === undefined ? q : [['ns', ns], ...q];
  if (all.length === 0) return '';
  return `?${all.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')}`;
}

interface V2Request extends SendOptions {
  method: string;
  // dead says the name routes to the unreachable upstream, where 503 UNAVAILABLE is the right answer.
  dead?: boolean;
}

const TABLE = { upstreams: ['docker.io', DEAD_UPSTREAM], defaultUpstream: 'docker.io' };

function routesToDead(name: string, ns: string | undefined): boolean {
  try {
    return routeName(name, ns, TABLE).upstream === DEAD_UPSTREAM;
  } catch {
    return false;
  }
}

const v2Requests = (): fc.Arbitrary<V2Request> =>
  fc.oneof(
    fc.record({ method: fc.constantFrom('GET', 'HEAD'), name: names, ref: references(), ns: nsValues, accept: accepts, inm: fc.option(fc.constantFrom(`"${pinned}"`, '*', 'W/"x"'), { nil: undefined }) }).map(
      (r): V2Request => ({
        method: r.method,
        dead: routesToDead(r.name, r.ns),
        path: `/v2/${encodePath(r.name)}/manifests/${encodePath(r.ref)}${queryString([], r.ns)}`,
        headers: { ...(r.accept === undefined ? {} : { accept: r.accept }), ...(r.inm === undefined ? {} : { 'if-none-match': r.inm }) },
      }),
    ),
    fc.record({ method: fc.constantFrom('GET', 'HEAD'), name: names, digest: digests(), ns: nsValues, range: ranges }).map(
      (r): V2Request => ({
        method: r.method,
        dead: routesToDead(r.name, r.ns),
        path: `/v2/${encodePath(r.name)}/blobs/${encodePath(r.digest)}${queryString([], r.ns)}`,
        headers: r.range === undefined ? {} : { range: r.range },
      }),
    ),
    fc.record({ name: names, q: queries, ns: nsValues }).map((r): V2Request => ({ method: 'GET', path: `/v2/${encodePath(r.name)}/tags/list${queryString(r.q, r.ns)}` })),
    fc.record({ name: names, digest: digests(), q: queries }).map((r): V2Request => ({ method: 'GET', path: `/v2/${encodePath(r.name)}/referrers/${encodePath(r.digest)}${queryString(r.q, undefined)}` })),
    fc.record({ method: fc.constantFrom('GET', 'HEAD', 'OPTIONS', 'TRACE'), tail: fc.string({ unit: 'grapheme', maxLength: 60 }), q: queries }).map(
      (r): V2Request => ({ method: r.method, path: `/v2/${encodePath(r.tail)}${queryString(r.q, undefined)}` }),
    ),
    fc.record({ n: fc.nat({ max: 5000 }) }).map((r): V2Request => ({ method: 'GET', path: `/v2/${'a/'.repeat(r.n)}manifests/v1` })),
    fc.record({
      method: fc.constantFrom('POST', 'PUT', 'PATCH', 'DELETE'),
      name: names,
      tail: fc.constantFrom('blobs/uploads/', 'blobs/uploads/abc', 'manifests/v1', `manifests/${pinned}`, `blobs/${pinned}`, 'tags/list'),
      body: fc.option(fc.string({ maxLength: 200 }), { nil: undefined }),
    }).map((r): V2Request => ({ method: r.method, path: `/v2/${encodePath(r.name)}/${r.tail}`, body: r.body })),
  );

// ---- checks ----

function record(a: Answer): void {
  sent++;
  statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
}

function describeRequest(r: SendOptions): string {
  const p = r.path.length > 300 ? `${r.path.slice(0, 300)}…` : r.path;
  return `${r.method ?? 'GET'} ${p} ${JSON.stringify(r.headers ?? {}).slice(0, 300)}`;
}

// checkV2 asserts the /v2/ properties of one answer; it returns false when the client library refused to send.
function checkV2(r: V2Request | SendOptions, a: Answer): boolean {
  if (isClientSideRefusal(a.error)) {
    refusedByClient++;
    return false;
  }
  record(a);
  const what = describeRequest(r);
  assert.equal(a.error, null, `${what}: transport error ${a.error?.message ?? ''}`);
  const code = ociCode(a.body);
  const deadUpstream = a.status === 503 && (r.method === 'HEAD' ? 'dead' in r && r.dead === true : code === 'UNAVAILABLE' && /upstream ghcr\.io /.test(a.body.toString()));
  assert.ok(a.status < 500 || deadUpstream, `${what}: HTTP ${a.status} ${a.body.toString().slice(0, 300)}`);
  if (a.status >= 400 && r.method !== 'HEAD' && a.status !== 431) {
    const problem = ociErrorProblem(a.body);
    assert.equal(problem, null, `${what}: HTTP ${a.status} body is not an OCI error: ${problem ?? ''}`);
  }
  assert.equal(a.headers['docker-distribution-api-version'] ?? 'registry/2.0', 'registry/2.0');
  return true;
}

function checkApi(r: SendOptions, a: Answer): void {
  if (isClientSideRefusal(a.error)) {
    refusedByClient++;
    return;
  }
  record(a);
  const what = describeRequest({ ...r, headers: {} });
  assert.equal(a.error, null, `${what}: transport error ${a.error?.message ?? ''}`);
  assert.ok(a.status < 500, `${what} (body ${String(r.body).slice(0, 200)}): HTTP ${a.status} ${a.body.toString().slice(0, 300)}`);
  assert.ok(a.status >= 400, `${what} (body ${String(r.body).slice(0, 200)}) was accepted: HTTP ${a.status} ${a.body.toString().slice(0, 300)}`);
  if (a.status === 431) return;
  const doc = JSON.parse(a.body.toString()) as { error?: { code?: string; message?: string } };
  assert.ok(doc.error && typeof doc.error.code === 'string' && doc.error.code in API_CODES, `${what}: HTTP ${a.status} error body ${a.body.toString().slice(0, 300)}`);
}

async function assertAlive(): Promise<void> {
  const ping = await send(pull, { path: '/v2/' });
  assert.equal(ping.status, 200, `GET /v2/ after a batch: ${ping.error?.message ?? ping.status}`);
}

// ---- admin bodies ----

type Json = unknown;
const ADMIN_ROUTES = ['pins', 'publishers', 'approve', 'certs'] as const;
type AdminRoute = (typeof ADMIN_ROUTES)[number];

const deep = fc.nat({ max: 20000 }).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`);
const deepObject = fc.nat({ max: 5000 }).map((n) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`);
const hugeString = fc.nat({ max: 900 * 1024 }).map((n) => JSON.stringify({ note: 'x'.repeat(n), repository: 'y'.repeat(n % 5000) }));

const nearValid = (route: AdminRoute): fc.Arbitrary<Json> => {
  const str = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('', 'docker.io/library/fuzzed', 'docker.io', `${DEAD_UPSTREAM}/x/y`, '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'));
  const value = fc.oneof(str, fc.integer(), fc.constant(null), fc.boolean(), fc.array(str, { maxLength: 3 }), fc.dictionary(str, str, { maxKeys: 2 }));
  const keys: Record<AdminRoute, string[]> = {
    pins: ['repository', 'digest', 'tag', 'note'],
    publishers: ['name', 'publicKey', 'repositories'],
    approve: ['note'],
    certs: ['name', 'role', 'days', 'p12Password'],
  };
  const known = fc.constantFrom(...keys[route], 'extra', '__proto__', 'constructor');
  const field = fc.oneof(value, digests(), fc.constantFrom('pull', 'admin', 'root', 'v1', 'ghcr.io/*', 365, 0, -1, 1e9, 3650.5));
  return fc.dictionary(known, field, { maxKeys: 5 });
};

const bodies = (route: AdminRoute): fc.Arbitrary<{ body: string | Buffer; type: string | undefined }> =>
  fc.record({
    body: fc.oneof(
      { arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)), weight: 3 },
      { arbitrary: nearValid(route).map((v) => JSON.stringify(v)), weight: 4 },
      { arbitrary: fc.oneof(deep, deepObject, hugeString), weight: 1 },
      { arbitrary: fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)), weight: 1 },
      { arbitrary: fc.string({ minLength: 1, maxLength: 100 }), weight: 1 },
    ),
    type: fc.oneof(
      { arbitrary: fc.constant('application/json'), weight: 6 },
      { arbitrary: fc.constantFrom(undefined, 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'application/json; charset=latin1', 'multipart/form-data; boundary=x', '*/*', 'application/jsonx'), weight: 2 },
    ),
  });

// mightBeValid is a conservative model of each route's schema: true when a body could be accepted, so the fuzzer never
// sends a request that would legitimately change the policy (the run must leave pins and requests as they were).
function mightBeValid(route: AdminRoute, raw: string | Buffer, type: string | undefined): boolean {
  if (type !== undefined && !type.startsWith('application/json') && !type.startsWith('text/plain')) return false;
  let v: unknown;
  try {
    v = JSON.parse(raw.toString());
  } catch {
    return type === undefined;
  }
  if (v === null) return true;
  if (typeof v !== 'object' || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  switch (route) {
    case 'pins':
      return typeof o.repository === 'string' && typeof o.digest === 'string' && /^sha256:[a-f0-9]{64}$/.test(o.digest);
    case 'approve':
      return Object.keys(o).every((k) => k === 'note');
    case 'certs':
      return typeof o.name === 'string' && ['pull', 'audit', 'admin'].includes(String(o.role));
    case 'publishers':
      return typeof o.publicKey === 'string' && o.publicKey.includes('BEGIN') && o.publicKey.length > 100;
  }
}

const adminRequests = (): fc.Arbitrary<SendOptions & { route: AdminRoute }> =>
  fc
    .record({
      route: fc.constantFrom(...ADMIN_ROUTES),
      id: fc.oneof(fc.constant(String(pendingRequest)), fc.integer().map(String), fc.constantFrom('0', '-1', '01', '1.0', '+1', '0x1', '1e0', 'abc', '%2e%2e', '9'.repeat(30))),
      format: fc.option(fc.constantFrom('pem', 'p12', 'der', '', 'PEM'), { nil: undefined }),
    })
    .chain((r) => bodies(r.route).map((b) => ({ ...r, ...b })))
    .filter((r) => !mightBeValid(r.route, r.body, r.type))
    .map((r) => {
      const paths: Record<AdminRoute, string> = {
        pins: '/api/v1/pins',
        publishers: '/api/v1/publishers',
        approve: `/api/v1/requests/${r.id}/approve`,
        certs: `/api/v1/certs${r.format === undefined ? '' : `?format=${encodeURIComponent(r.format)}`}`,
      };
      const headers: Record<string, string> = r.type === undefined ? {} : { 'content-type': r.type };
      return { route: r.route, method: 'POST', path: paths[r.route], headers, body: r.body };
    });

const dates = fc.oneof(
  fc.constantFrom(
    '2024-06-30T23:59:60Z', '2016-12-31T23:59:60+00:00', '2024-01-01T00:00:00.123456789Z', '2024-01-01t00:00:00z', '2024-01-01 00:00:00Z', '0000-01-01T00:00:00Z',
    '9999-12-31T23:59:59.999Z', '2024-02-30T00:00:00Z', '2024-01-01T00:00:00+23:59', '2024-01-01T00:00:00-23:59', '2024-01-01', 'now', '', '1e12', '-1',
  ),
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.string({ maxLength: 30 }),
);

const adminReads = (): fc.Arbitrary<SendOptions> =>
  fc.oneof(
    fc.record({ status: fc.option(fc.oneof(fc.constantFrom('pending', 'approved', 'denied', 'PENDING', ''), fc.string({ maxLength: 10 })), { nil: undefined }), q: queries }).map((r) => ({
      path: `/api/v1/requests${queryString(r.status === undefined ? r.q : [['status', r.status], ...r.q], undefined)}`,
    })),
    fc.record({ since: fc.option(dates, { nil: undefined }), until: fc.option(dates, { nil: undefined }), format: fc.option(fc.constantFrom('jsonl', 'csv', 'xml', ''), { nil: undefined }) }).map((r) => {
      const q: [string, string][] = [];
      if (r.since !== undefined) q.push(['since', r.since]);
      if (r.until !== undefined) q.push(['until', r.until]);
      if (r.format !== undefined) q.push(['format', r.format]);
      return { path: `/api/v1/audit${queryString(q, undefined)}` };
    }),
    fc.record({ kind: fc.option(fc.oneof(fc.constantFrom('docker', 'containerd', 'podman', 'Docker', ''), fc.string({ maxLength: 10 })), { nil: undefined }) }).map((r) => ({
      path: `/api/v1/client-config${queryString(r.kind === undefined ? [] : [['kind', r.kind]], undefined)}`,
    })),
    fc.record({ p: fc.constantFrom('pins', 'publishers', 'images', 'drift', 'certs', 'signing-key', 'openapi.json', 'nope', ''), q: queries }).map((r) => ({ path: `/api/v1/${r.p}${queryString(r.q, undefined)}` })),
    fc.record({ id: fc.oneof(fc.integer().map(String), fc.constantFrom('0', 'abc', '1.5', '%2e%2e', '9'.repeat(30))) }).map((r) => ({ method: 'DELETE', path: `/api/v1/pins/${r.id}` })),
    fc.record({ name: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }) }).map((r) => ({ method: 'DELETE', path: `/api/v1/publishers/${encodePath(r.name)}` })),
    fc.record({ serial: fc.oneof(hex(16), fc.string({ maxLength: 20 })) }).map((r) => ({
      method: 'POST',
      path: `/api/v1/certs/${encodePath(r.serial)}/revoke`,
      headers: { 'content-type': 'application/json' },
      body: '{}',
    })),
  );

// ---- tests ----

describe('inputs the fuzzer found mishandled', () => {
  test('a malformed percent-escape or an over-long path under /v2/ is answered with an OCI error body, and audited', async () => {
    const audit = t.airlock.services.audit;
    for (const p of ['/v2/%zz/manifests/v1', '/v2/library/fuzzed/manifests/%E0%A4%A', `/v2/${'a/'.repeat(1100)}manifests/v1`]) {
      const seq = audit.head().seq;
      const r: V2Request = { method: 'GET', path: p };
      const a = await send(pull, r);
      checkV2(r, a);
      assert.ok(a.status >= 400 && a.status < 500, `${p.slice(0, 60)}: HTTP ${a.status}`);
      // Every refused registry request is one audit event (SPEC §7), this one refused before routing too.
      await waitFor(() => audit.head().seq > seq, { timeoutMs: 5000, what: `the audit event of ${p.slice(0, 40)}` });
      await audit.stored();
      const events = [...t.airlock.services.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.seq > seq);
      assert.equal(events.length, 1, p.slice(0, 60));
      assert.equal(events[0].decision, 'deny');
      assert.equal(events[0].status, a.status);
      assert.equal(events[0].actorSerial, t.bundle('pull').serial);
    }
  });

  test('a malformed percent-escape under /api/v1/ is answered with the API error body', async () => {
    const r: SendOptions = { method: 'POST', path: '/api/v1/certs/%zz/revoke', headers: { 'content-type': 'application/json' }, body: '{}' };
    checkApi(r, await send(admin, r));
  });

  test('an audit export bounded by a leap second answers without a 5xx', async () => {
    const a = await send(admin, { path: `/api/v1/audit?since=${encodeURIComponent('2016-12-31T23:59:60Z')}` });
    assert.ok(a.status < 500, `HTTP ${a.status} ${a.body.toString().slice(0, 200)}`);
  });

  test('a layer or config digest asked for as a manifest is MANIFEST_UNKNOWN without asking the upstream', async () => {
    for (const d of pinnedBlobs) {
      for (const method of ['GET', 'HEAD']) {
        const a = await send(pull, { method, path: `/v2/library/fuzzed/manifests/${d}` });
        assert.equal(a.status, 404, `${method} manifests/${d}: ${a.status} ${a.body.toString()}`);
        if (method === 'GET') assert.equal(ociCode(a.body), 'MANIFEST_UNKNOWN');
      }
    }
  });

  test('a name whose canonical form is longer than 255 characters is NAME_INVALID and never reaches the upstream', async () => {
    const name = `${'a/'.repeat(123)}b`;
    assert.equal(`docker.io/${name}`.length, 257);
    const before = upstream.logs().length;
    for (const method of ['GET', 'HEAD']) {
      const a = await send(pull, { method, path: `/v2/${name}/manifests/v1` });
      assert.equal(a.status, 400);
      if (method === 'GET') assert.equal(ociCode(a.body), 'NAME_INVALID');
    }
    assert.ok(!upstream.logs().slice(before).includes(name), 'the upstream was not asked');
    const ok = await send(pull, { path: `/v2/${'a/'.repeat(122)}b/manifests/v1` });
    assert.equal(ok.status, 404, 'a 255-character canonical name is valid (and unknown upstream)');
  });
});

describe('fuzzing the registry and the admin API', () => {
  test('generated /v2/ requests never get a 5xx and every error is an OCI error body with a registered code', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(v2Requests(), async (r) => {
        checkV2(r, await send(pull, r));
        if (++n % 50 === 0) await assertAlive();
      }),
      { numRuns: Math.round(300 * SCALE), seed: SEED, endOnFailure: true, includeErrorInReport: true },
    );
    await assertAlive();
  });

  test('a Range header on a cached blob answers 200, 206 with the exact slice, or 416 with Content-Range', async () => {
    const layer = [...pinnedBlobs][1] ?? [...pinnedBlobs][0];
    const full = await send(pull, { path: `/v2/library/fuzzed/blobs/${layer}` });
    assert.equal(full.status, 200);
    const size = full.body.length;
    await fc.assert(
      fc.asyncProperty(ranges, async (range) => {
        const r: SendOptions = { path: `/v2/library/fuzzed/blobs/${layer}`, headers: range === undefined ? {} : { range } };
        const a = await send(pull, r);
        if (!checkV2(r, a)) return;
        assert.ok([200, 206, 416].includes(a.status), `Range ${String(range)}: HTTP ${a.status}`);
        if (a.status === 206) {
          const m = /^bytes ([0-9]+)-([0-9]+)\/([0-9]+)$/.exec(String(a.headers['content-range']));
          assert.ok(m, `Range ${String(range)}: Content-Range ${String(a.headers['content-range'])}`);
          const [start, end] = [Number(m[1]), Number(m[2])];
          assert.equal(Number(m[3]), size);
          assert.deepEqual(a.body, full.body.subarray(start, end + 1), `Range ${String(range)}`);
        } else if (a.status === 416) {
          assert.equal(a.headers['content-range'], `bytes */${size}`);
        } else {
          assert.deepEqual(a.body, full.body);
        }
      }),
      { numRuns: Math.round(60 * SCALE), seed: SEED, endOnFailure: true, includeErrorInReport: true },
    );
    await assertAlive();
  });

  test('generated admin bodies for pins, publishers, approvals and certificates are refused with a 4xx JSON error', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(adminRequests(), async (r) => {
        checkApi(r, await send(admin, r));
        if (++n % 50 === 0) await assertAlive();
      }),
      { numRuns: Math.round(140 * SCALE), seed: SEED, endOnFailure: true, includeErrorInReport: true },
    );
    await assertAlive();
  });

  test('generated admin reads, deletes and revocations of unknown things never get a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(adminReads(), async (r) => {
        const a = await send(admin, r);
        if (isClientSideRefusal(a.error)) {
          refusedByClient++;
          return;
        }
        record(a);
        assert.equal(a.error, null, `${describeRequest(r)}: transport error ${a.error?.message ?? ''}`);
        assert.ok(a.status < 500, `${describeRequest(r)}: HTTP ${a.status} ${a.body.toString().slice(0, 300)}`);
        if (a.status >= 400) {
          const doc = JSON.parse(a.body.toString()) as { error?: { code?: string } };
          assert.ok(doc.error?.code !== undefined && doc.error.code in API_CODES, `${describeRequest(r)}: HTTP ${a.status} ${a.body.toString().slice(0, 300)}`);
        }
      }),
      { numRuns: Math.round(60 * SCALE), seed: SEED, endOnFailure: true, includeErrorInReport: true },
    );
    await assertAlive();
  });

  test('a 64 KiB header and 2 MiB bodies are refused without a 5xx, and the server keeps answering', async () => {
    const big = 'x'.repeat(64 * 1024);
    const twoMiB = Buffer.alloc(2 * 1024 * 1024, 0x61);
    const jsonTwoMiB = JSON.stringify({ repository: 'docker.io/library/x', digest: `sha256:${'0'.repeat(64)}`, note: 'n'.repeat(2 * 1024 * 1024) });
    const cases: { pool: Pool; r: SendOptions; api: boolean }[] = [
      { pool: pull, r: { path: '/v2/', headers: { 'x-junk': big } }, api: false },
      { pool: pull, r: { path: '/v2/library/fuzzed/manifests/v1', headers: { accept: big } }, api: false },
      { pool: pull, r: { path: `/v2/library/fuzzed/blobs/${pinned}`, headers: { range: `bytes=${'1'.repeat(60_000)}-` } }, api: false },
      { pool: admin, r: { method: 'POST', path: '/api/v1/pins', headers: { 'content-type': 'application/json', 'x-junk': big }, body: '{}' }, api: true },
      { pool: pull, r: { method: 'POST', path: '/v2/library/fuzzed/blobs/uploads/', headers: { 'content-type': 'application/octet-stream' }, body: twoMiB }, api: false },
      { pool: pull, r: { method: 'PUT', path: '/v2/library/fuzzed/manifests/v2', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: twoMiB }, api: false },
      { pool: admin, r: { method: 'POST', path: '/api/v1/pins', headers: { 'content-type': 'application/json' }, body: jsonTwoMiB }, api: true },
      { pool: admin, r: { method: 'POST', path: '/api/v1/certs', headers: { 'content-type': 'application/json' }, body: twoMiB }, api: true },
      { pool: admin, r: { method: 'POST', path: `/api/v1/requests/${pendingRequest}/approve`, headers: { 'content-type': 'application/json' }, body: jsonTwoMiB }, api: true },
    ];
    const seen: string[] = [];
    for (const c of cases) {
      const got: string[] = [];
      for (let i = 0; i < 3; i++) {
        const a = await send(c.pool, c.r);
        got.push(a.error ? a.error.message : String(a.status));
        if (c.api) checkApi(c.r, a);
        else checkV2(c.r, a);
      }
      seen.push(`${c.r.method ?? 'GET'} ${c.r.path.slice(0, 40)}: ${got.join(',')}`);
      await assertAlive();
    }
    console.log(`oversized requests: ${seen.join('; ')}`);
  });

  test('after the run only the pinned image is admitted and cached, and pins, publishers and requests are unchanged', () => {
    const s = t.airlock.services;
    const admitted = s.policyStore.admissions().map((a: Admission) => `${a.repository}@${a.digest}`);
    assert.deepEqual(admitted, [`docker.io/library/fuzzed@${pinned}`]);
    const cached = cachedBlobFiles(t.dir).map(([d]) => d);
    for (const d of cached) assert.ok(pinnedBlobs.has(d), `cached blob ${d} belongs to no pinned image`);
    assert.ok(s.blobs.usage().blobs <= pinnedBlobs.size, `cache holds ${s.blobs.usage().blobs} blobs`);
    assert.deepEqual(s.policyStore.pins(), pinsBefore);
    assert.deepEqual(s.policyStore.publishers(), publishersBefore);
    assert.equal(s.certs.list().length, certsBefore);
    assert.equal(s.policyStore.request(pendingRequest)?.status, 'pending');
    // Refused pulls may open requests (a known digest under another name does); none may have been decided.
    for (let id = 1; id < pendingRequest + 500; id++) {
      const r = s.policyStore.request(id);
      if (r) assert.equal(r.status, 'pending', `request ${JSON.stringify(r)}`);
    }
    const unhandled = fs.readFileSync(t.logPath, 'utf8').split('\n').filter((l) => l.includes('"level":50'));
    assert.deepEqual(unhandled.slice(0, 5), [], 'no error-level log line (unhandled error) during the run');
  });
});

describe('the upstream circuit breaker against what clients ask for', () => {
  // Runs last: when it fails, the breaker of docker.io is open and the other tests would see 503s.
  test('manifests a client asks for that make the upstream answer 500 do not open its breaker for everyone', async () => {
    // distribution answers 500 for a layer digest asked for as a manifest; airlock has never seen this one.
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await send(pull, { path: `/v2/library/unseen/manifests/${unseenLayer}` })).status);
    console.log(`a layer digest asked for as a manifest, 8 times: ${statuses.join(' ')}`);
    const uncached = [...pinnedBlobs].find((d) => t.airlock.services.blobs.size(d) === null) ?? [...pinnedBlobs][0];
    await t.airlock.services.blobs.remove(uncached);
    const victim = await send(pull, { path: `/v2/library/fuzzed/blobs/${uncached}` });
    assert.equal(victim.status, 200, `another client's pull of an uncached blob after those requests: ${victim.status} ${victim.body.toString().slice(0, 300)}`);
  });
});
