// TLS and connection abuse against airlock running as its own process: handshake storms without a certificate, with
// a certificate from another CA, an expired one and a revoked one; slow-loris connections that stall in the request
// line, TLS handshakes that never start, and readers that never read. A good client keeps pulling a cached manifest
// throughout; the server closes idle and slow connections within its timeouts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import type { Pool } from 'undici';
import { createCa, issueClientCert, issueClientCertWithValidity, type CertKeyPair } from '../server/pki/ca.js';
import { parseManifest } from '../server/registry/manifest.js';
import { mtlsPool, OCI_MANIFEST, send, sha256, spawnAirlock, type SpawnedAirlock } from './fixtures/abuse-kit.js';
import { type Bundle, startTestAirlock, TEST_KEY_PASSWORD } from './harness/airlock.js';
import { freePort, stopAll, waitFor } from './harness/proc.js';

const REPO = 'docker.io/library/steady';
const DAY_MS = 86_400_000;
// Bounds from server/runtime.ts: TLS handshakeTimeout 10 s, headersTimeout 15 s; each gets a few seconds of slack.
const HANDSHAKE_BOUND_MS = 13_000;
const SLOWLORIS_BOUND_MS = 20_000;

let tmp: string;
let airlock: SpawnedAirlock;
let pull: Bundle;
let admin: Bundle;
let caPem: Buffer;
let airlockCa: CertKeyPair;
let manifestDigest: string;
let bigBlob: Buffer;
let good: GoodClient;
let foreign: CertKeyPair;
let expired: CertKeyPair;

// GoodClient pulls the cached manifest over and over on a keep-alive connection, recording every latency and failure.
class GoodClient {
  readonly latencies: number[] = [];
  readonly failures: string[] = [];
  private running = true;
  private readonly done: Promise<void>;
  private readonly pool: Pool;

  constructor(bundle: Bundle, url: string) {
    this.pool = mtlsPool(bundle, 1, url);
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const started = performance.now();
      const r = await send(this.pool, { path: `/v2/library/steady/manifests/${manifestDigest}`, headers: { accept: OCI_MANIFEST }, timeoutMs: 10_000 });
      this.latencies.push(performance.now() - started);
      if (r.status !== 200) this.failures.push(`${r.status} ${r.error?.message ?? r.body.toString().slice(0, 200)}`);
      else if (sha256(r.body) !== manifestDigest) this.failures.push('wrong manifest bytes');
    }
  }

  // summary is count, p50, p99 and max latency in ms since the last summary.
  summary(): string {
    const l = [...this.latencies].sort((a, b) => a - b);
    this.latencies.length = 0;
    const at = (q: number): string => (l.length === 0 ? '-' : (l[Math.min(l.length - 1, Math.floor(q * l.length))] ?? 0).toFixed(1));
    return `${l.length} pulls, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms, failures ${this.failures.length}`;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
    await this.pool.close();
  }
}

// Creds is what a hostile or broken client presents.
interface Creds {
  cert?: string;
  key?: string;
}

// attempt connects with creds and sends GET /v2/; it resolves with the HTTP status or the error that stood instead.
function attempt(creds: Creds): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    const req = https.request(
      { host: '127.0.0.1', port: airlock.port, path: '/v2/', ca: caPem, cert: creds.cert, key: creds.key, agent: false, timeout: 15_000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
        res.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.end();
  });
}

// Held is a connection a test keeps open to see when the server closes it.
interface Held {
  openedAt: number;
  closedAt: number | null;
  socket: net.Socket;
}

function hold(socket: net.Socket): Held {
  const h: Held = { openedAt: performance.now(), closedAt: null, socket };
  socket.on('error', () => {});
  socket.on('close', () => {
    h.closedAt = performance.now();
  });
  return h;
}

function closeTimes(held: Held[]): string {
  const t = held.map((h) => (h.closedAt === null ? Infinity : h.closedAt - h.openedAt)).sort((a, b) => a - b);
  const f = (v: number | undefined): string => (v === undefined || v === Infinity ? 'open' : `${(v / 1000).toFixed(1)} s`);
  return `${held.length} connections, closed by the server after min ${f(t[0])}, median ${f(t[Math.floor(t.length / 2)])}, max ${f(t[t.length - 1])}`;
}

async function inBatches<T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i += width) out.push(...(await Promise.all(Array.from({ length: Math.min(width, n - i) }, (_, j) => fn(i + j)))));
  return out;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-abuse-'));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  bigBlob = crypto.randomBytes(8 * 1024 * 1024);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(bigBlob), size: bigBlob.length }],
    }),
  );
  manifestDigest = sha256(manifest);
  const dead = await freePort();
  const t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [{ name: 'docker.io', url: `http://127.0.0.1:${dead}`, insecure: true, connectTimeoutMs: 500, readTimeoutMs: 500 }],
    pins: [`${REPO}:stable@${manifestDigest}`],
  });
  const s = t.airlock.services;
  for (const b of [config, bigBlob]) await s.blobs.put(sha256(b), b);
  const p = parseManifest(manifest, null);
  s.content.saveManifest(REPO, { digest: manifestDigest, mediaType: p.mediaType, size: manifest.length, bytes: manifest }, p.refs, p.subject, p.artifactType);
  pull = t.bundle('pull');
  admin = t.bundle('admin');
  caPem = fs.readFileSync(t.caPath);
  airlockCa = { certPem: caPem.toString(), keyPem: fs.readFileSync(path.join(t.dir, 'pki', 'ca.key'), 'utf8') };
  // Key generation blocks this process for a while, so it happens before the good client starts measuring.
  foreign = issueClientCert(createCa('not the airlock CA', 30), 'intruder', 'admin', 30);
  expired = issueClientCertWithValidity(airlockCa, 'expired', 'pull', new Date(Date.now() - 10 * DAY_MS), new Date(Date.now() - DAY_MS));
  await t.stop();
  airlock = await spawnAirlock(t.configPath, await freePort(), { AIRLOCK_TEST_KEY_PASSWORD: TEST_KEY_PASSWORD }, 'airlock-abuse', tmp);
  const warm = await send(mtlsPool(pull, 1, airlock.url), { path: `/v2/library/steady/manifests/${manifestDigest}` });
  assert.equal(warm.status, 200, warm.body.toString());
  good = new GoodClient(pull, airlock.url);
});

after(async () => {
  await good?.stop();
  await airlock?.proc.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('TLS and connection abuse', () => {
  test('a connection with more than 8 pipelined requests under way is closed; a few are answered in order', async () => {
    const openTls = (): Promise<tls.TLSSocket> =>
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: airlock.port, ca: caPem, cert: fs.readFileSync(pull.endpoint.clientCertPath ?? ''), key: fs.readFileSync(pull.endpoint.clientKeyPath ?? ''), servername: 'localhost' }, () => resolve(s));
        s.once('error', reject);
      });
    const few = await openTls();
    let text = '';
    few.on('data', (d: Buffer) => (text += d.toString('latin1')));
    few.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.repeat(4));
    await waitFor(() => (text.match(/HTTP\/1\.1 200 OK/g) ?? []).length === 4, { timeoutMs: 5000, what: 'four pipelined answers' });
    few.destroy();
    const many = await openTls();
    many.pause();
    const closed = new Promise<void>((resolve) => many.once('close', () => resolve()));
    many.on('error', () => {});
    many.write(`GET /v2/library/steady/blobs/${sha256(bigBlob)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`.repeat(50));
    const started = Date.now();
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the pipelining connection was not closed')), 10_000))]);
    console.log(`closed ${Date.now() - started} ms after 50 pipelined blob GETs`);
    const after = await send(mtlsPool(pull, 1, airlock.url), { path: `/v2/library/steady/manifests/${manifestDigest}` });
    assert.equal(after.status, 200, 'other clients are still answered');
  });

  test('handshakes without a certificate, from another CA, expired or revoked are all refused', async () => {
    const adminPool = mtlsPool(admin, 1, airlock.url);
    let victim: { serial: string; certificate: string; privateKey: string };
    try {
      const issued = await send(adminPool, { method: 'POST', path: '/api/v1/certs', headers: { 'content-type': 'application/json' }, body: '{"name":"to-be-revoked","role":"pull","days":30}' });
      assert.equal(issued.status, 201, issued.body.toString());
      victim = JSON.parse(issued.body.toString()) as typeof victim;
      assert.deepEqual(await attempt({ cert: victim.certificate, key: victim.privateKey }), { status: 200 }, 'the certificate works before it is revoked');
      const rv = await send(adminPool, { method: 'POST', path: `/api/v1/certs/${victim.serial}/revoke`, headers: { 'content-type': 'application/json' }, body: '{"reason":"abuse test"}' });
      assert.equal(rv.status, 200, rv.body.toString());
    } finally {
      await adminPool.close();
    }
    const kinds: [string, Creds][] = [
      ['no certificate', {}],
      ['another CA', { cert: foreign.certPem, key: foreign.keyPem }],
      ['expired', { cert: expired.certPem, key: expired.keyPem }],
      ['revoked', { cert: victim.certificate, key: victim.privateKey }],
    ];
    for (const [what, creds] of kinds) {
      const started = performance.now();
      const outcomes = await inBatches(100, 25, () => attempt(creds));
      const accepted = outcomes.filter((o) => 'status' in o);
      const errors = new Map<string, number>();
      for (const o of outcomes) if ('error' in o) errors.set(o.error, (errors.get(o.error) ?? 0) + 1);
      console.log(`100 handshakes with ${what} in ${(performance.now() - started).toFixed(0)} ms: ${JSON.stringify(Object.fromEntries(errors))}; good client ${good.summary()}`);
      assert.deepEqual(accepted, [], `no request with ${what} gets an HTTP answer`);
    }
    assert.deepEqual(good.failures, []);
  });

  test('slow-loris requests, silent TLS connections, raw TCP that never starts TLS and readers that never read do not stop a good client, and stalled connections are closed within the timeouts', async () => {
    const cert = fs.readFileSync(pull.endpoint.clientCertPath ?? '');
    const key = fs.readFileSync(pull.endpoint.clientKeyPath ?? '');
    const openTls = (): Promise<tls.TLSSocket> =>
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: airlock.port, ca: caPem, cert, key, servername: 'localhost' }, () => resolve(s));
        s.once('error', reject);
      });

    const rawTcp = await inBatches(200, 50, async () => {
      const s = net.connect({ host: '127.0.0.1', port: airlock.port });
      await new Promise<void>((resolve, reject) => {
        s.once('connect', () => resolve());
        s.once('error', reject);
      });
      return hold(s);
    });
    const partialHello = await inBatches(20, 20, async () => {
      const s = net.connect({ host: '127.0.0.1', port: airlock.port });
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
      return hold(s);
    });
    const loris = await inBatches(200, 25, async () => {
      const s = await openTls();
      const h = hold(s);
      s.write('GET /v2/library/steady/manifests/stable HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
      return h;
    });
    const silent = await inBatches(50, 25, async () => hold(await openTls()));
    const readers = await inBatches(20, 20, async () => {
      const s = await openTls();
      s.pause();
      s.write(`GET /v2/library/steady/blobs/${sha256(bigBlob)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      return hold(s);
    });
    // Stalled requests keep trickling a header byte now and then, as slow-loris tools do.
    const trickle = setInterval(() => {
      for (const h of loris) if (h.closedAt === null) h.socket.write('a');
    }, 1000);
    console.log(`opened 200 raw TCP, 20 partial ClientHello, 200 slow-loris, 50 silent TLS and 20 non-reading connections; good client ${good.summary()}`);
    try {
      await waitFor(() => [...rawTcp, ...partialHello].every((h) => h.closedAt !== null), { timeoutMs: HANDSHAKE_BOUND_MS, what: 'connections that never finish a TLS handshake to be closed' }).catch((err: Error) => {
        throw new Error(`${err.message}: raw TCP ${closeTimes(rawTcp)}; partial ClientHello ${closeTimes(partialHello)}`);
      });
      console.log(`raw TCP: ${closeTimes(rawTcp)}; partial ClientHello: ${closeTimes(partialHello)}; good client ${good.summary()}`);
      const lorisDeadline = Math.max(...loris.map((h) => h.openedAt)) + SLOWLORIS_BOUND_MS - performance.now();
      await waitFor(() => loris.every((h) => h.closedAt !== null), { timeoutMs: Math.max(1000, Math.round(lorisDeadline)), what: 'slow-loris connections to be closed' }).catch((err: Error) => {
        throw new Error(`${err.message} (headersTimeout is 15 s): slow-loris ${closeTimes(loris)}; silent TLS ${closeTimes(silent)}`);
      });
      // A connection that finished its handshake and never sends a byte has no bound in the server's configuration
      // (headersTimeout starts with the first byte of a request): it is measured, not asserted.
      console.log(`slow-loris: ${closeTimes(loris)}; silent TLS: ${closeTimes(silent)}; readers that never read: ${readers.filter((h) => h.closedAt === null).length} of ${readers.length} still open; good client ${good.summary()}`);
      for (const h of [...rawTcp, ...partialHello]) assert.ok(h.closedAt !== null && h.closedAt - h.openedAt <= HANDSHAKE_BOUND_MS, 'a handshake that never finishes is cut at the TLS handshake timeout');
      for (const h of loris) assert.ok(h.closedAt !== null && h.closedAt - h.openedAt <= SLOWLORIS_BOUND_MS, 'a request whose headers never end is cut near the headers timeout');
    } finally {
      clearInterval(trickle);
      for (const h of [...rawTcp, ...partialHello, ...loris, ...silent, ...readers]) h.socket.destroy();
    }
    assert.deepEqual(good.failures, [], 'the good client never failed');
    const ping = await send(mtlsPool(pull, 1, airlock.url), { path: '/v2/' });
    assert.equal(ping.status, 200);
  });
});
