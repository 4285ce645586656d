// The audit log end to end: a scripted session lands as chained events, the export verifies with `airlock audit
// verify` and with an independent check, tampering is caught at the right seq, exports stream in flat memory,
// and /metrics moves with the session.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chainEvent } from '../server/audit/chain.js';
import { startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { buildImage, inspectDigest, pushImage } from './harness/images.js';
import { run, stopAll, track, waitFor } from './harness/proc.js';
import { type Registry, startRegistry } from './harness/registry.js';

const jcs = createRequire(import.meta.url)('canonicalize') as (input: unknown) => string | undefined;
const CLI = ['--import', 'tsx', 'server/main.ts'];

interface Event {
  seq: number;
  action: string;
  actor: string | null;
  repository: string | null;
  digest: string | null;
  decision: string | null;
  reason: string | null;
  status: number | null;
  prev: string;
  hash: string;
  [k: string]: unknown;
}

let tmp: string;
let reg: Registry;
let t: TestAirlock;
let pinned: string;
let unpinned: string;
let poisoned: string;
let poisonedLayer: string;
let exportFile: string;
let lines: string[];
let metricsBefore: string;

async function exportAudit(query = 'format=jsonl'): Promise<string> {
  const r = await t.request('audit', `/api/v1/audit?${query}`, { timeoutMs: 120000 });
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  return r.body.toString();
}

function events(): Event[] {
  return lines.filter((l) => !l.includes('"type":"checkpoint"')).map((l) => JSON.parse(l) as Event);
}

async function verifyCli(file: string): Promise<{ code: number | null; out: string }> {
  const r = await run(process.execPath, [...CLI, 'audit', 'verify', file, '--key', path.join(t.dir, 'keys', 'mirror.pub')], { timeoutMs: 60000 });
  return { code: r.code, out: `${r.stdout}${r.stderr}` };
}

function writeVariant(name: string, mutate: (ls: string[]) => string[]): string {
  const f = path.join(tmp, `${name}.jsonl`);
  fs.writeFileSync(f, `${mutate([...lines]).join('\n')}\n`);
  return f;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-audit-'));
  reg = track(await startRegistry({ dir: path.join(tmp, 'upstream') }));
  for (const [name, repo] of [
    ['pinned', 'library/allowed'],
    ['unpinned', 'library/refused'],
    ['poisoned', 'library/poisoned'],
  ] as const) {
    const img = await buildImage(path.join(tmp, 'img', name), { tag: 'v1', files: { '/id': `${name} ${crypto.randomUUID()}\n` } });
    await pushImage(img, `${reg.host}/${repo}:v1`, { certDir: reg.certDir });
  }
  pinned = await inspectDigest(reg, 'library/allowed', 'v1');
  unpinned = await inspectDigest(reg, 'library/refused', 'v1');
  poisoned = await inspectDigest(reg, 'library/poisoned', 'v1');
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [{ name: 'docker.io', url: reg.url, ca: reg.caPath }],
    pins: [`docker.io/library/allowed:v1@${pinned}`, `docker.io/library/poisoned:v1@${poisoned}`],
  });
  metricsBefore = (await t.request('audit', '/metrics')).body.toString();

  // The scripted session.
  assert.equal((await t.request('pull', '/v2/library/allowed/manifests/v1')).status, 200);
  const refused = await t.request('pull', '/v2/library/refused/manifests/v1');
  assert.equal(refused.status, 403);
  const requestId = JSON.parse(refused.body.toString()).errors[0].detail.request as number;
  const approve = await t.request('admin', `/api/v1/requests/${requestId}/approve`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"note":"audit test"}' });
  assert.equal(approve.status, 200, approve.body.toString());
  assert.equal((await t.request('pull', '/v2/library/refused/manifests/v1')).status, 200);

  const victim = t.bundle('pull', 'soon-revoked');
  assert.equal((await t.request('pull', '/v2/')).status, 200);
  const revoke = await run(process.execPath, [...CLI, 'cert', 'revoke', '--config', t.configPath, '--serial', victim.serial, '--reason', 'lost laptop'], { timeoutMs: 60000 });
  assert.equal(revoke.code, 0, revoke.stderr);
  await waitFor(
    async () => {
      try {
        const r = await (await import('./harness/registry.js')).registryRequest(victim.endpoint, '/v2/', { timeoutMs: 2000 });
        return r.status !== 200;
      } catch {
        return true;
      }
    },
    { timeoutMs: 2000, what: 'revoked certificate refused' },
  );

  // A poisoned upstream blob: the real registry's stored layer is overwritten, so it serves wrong bytes for the digest.
  const m = JSON.parse((await t.request('pull', '/v2/library/poisoned/manifests/v1')).body.toString()) as { layers: { digest: string }[] };
  poisonedLayer = m.layers[0].digest;
  const hex = poisonedLayer.slice(7);
  const data = path.join(reg.dataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  const bytes = fs.readFileSync(data);
  bytes[bytes.length >> 1] ^= 0xff;
  fs.writeFileSync(data, bytes);
  // A small blob is verified before its first byte is sent (503); a large one is cut off mid-stream.
  const poisonedAnswer = await t.request('pull', `/v2/library/poisoned/blobs/${poisonedLayer}`, { timeoutMs: 10000 }).then(
    (r) => r.status,
    () => -1,
  );
  assert.ok(poisonedAnswer === 503 || poisonedAnswer === -1, `poisoned blob answered ${poisonedAnswer}`);

  const text = await exportAudit();
  exportFile = path.join(tmp, 'export.jsonl');
  fs.writeFileSync(exportFile, text);
  lines = text.trimEnd().split('\n');
});

after(async () => {
  await t?.stop();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('audit log', () => {
  test('the export holds one event for each step of the scripted session, with actor, decision and reason', () => {
    const ev = events();
    const find = (pred: (e: Event) => boolean, what: string): Event => {
      const e = ev.find(pred);
      assert.ok(e, `missing event: ${what}`);
      return e;
    };
    const allowed = find((e) => e.action === 'pull.manifest' && e.repository === 'docker.io/library/allowed' && e.decision === 'allow', 'allowed pull');
    assert.equal(allowed.actor, 'test-pull');
    assert.equal(allowed.reason, 'pin');
    assert.equal(allowed.status, 200);
    const refused = find((e) => e.action === 'pull.manifest' && e.repository === 'docker.io/library/refused' && e.decision === 'deny', 'refused pull');
    assert.equal(refused.reason, 'unknown');
    assert.equal(refused.status, 403);
    assert.equal(refused.digest, unpinned);
    const approval = find((e) => e.action === 'admin.approve', 'approval');
    assert.equal(approval.actor, 'test-admin');
    assert.equal(approval.repository, 'docker.io/library/refused');
    find((e) => e.action === 'pull.manifest' && e.repository === 'docker.io/library/refused' && e.decision === 'allow' && e.reason === 'approval', 'pull after approval');
    find((e) => e.action === 'image.admitted' && e.digest === unpinned && e.reason === 'approval', 'admission by approval');
    const tls = find((e) => e.action === 'tls.refused' && e.actor === 'soon-revoked', 'revoked certificate refused');
    assert.equal(tls.decision, 'deny');
    assert.match(String(tls.reason), /revoked/);
    const fault = find((e) => e.action === 'upstream.fault' && e.digest === poisonedLayer, 'poisoned blob');
    assert.equal(fault.reason, 'digest_mismatch');
  });

  test('airlock audit verify passes on the export', async () => {
    const r = await verifyCli(exportFile);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /intact/);
  });

  test('airlock audit verify names the first bad seq when a field is edited, a line deleted or two lines swapped', async () => {
    const ev = events();
    const k = Math.floor(ev.length / 2);
    const edited = writeVariant('edited', (ls) => {
      const e = JSON.parse(ls[k]) as Event;
      e.decision = e.decision === 'allow' ? 'deny' : 'allow';
      ls[k] = JSON.stringify(e);
      return ls;
    });
    const deleted = writeVariant('deleted', (ls) => ls.filter((_, i) => i !== k));
    const swapped = writeVariant('swapped', (ls) => {
      [ls[k], ls[k + 1]] = [ls[k + 1], ls[k]];
      return ls;
    });
    for (const [file, seq] of [
      [edited, ev[k].seq],
      [deleted, ev[k + 1].seq],
      [swapped, ev[k + 1].seq],
    ] as const) {
      const r = await verifyCli(file);
      assert.equal(r.code, 1, `${file}: ${r.out}`);
      assert.match(r.out, new RegExp(`seq ${seq}\\b`), `${path.basename(file)} names seq ${seq}: ${r.out}`);
    }
  });

  test('airlock audit verify fails on a forged checkpoint', async () => {
    const forged = writeVariant('forged', (ls) => {
      const cp = JSON.parse(ls[ls.length - 1]) as Record<string, unknown>;
      const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      cp.signature = crypto.sign('sha256', Buffer.from(`airlock-audit-checkpoint:v1:${cp.seq}:${cp.hash}`), other.privateKey).toString('base64');
      ls[ls.length - 1] = JSON.stringify(cp);
      return ls;
    });
    const r = await verifyCli(forged);
    assert.equal(r.code, 1, r.out);
    const truncated = writeVariant('truncated', (ls) => ls.slice(0, -1));
    assert.equal((await verifyCli(truncated)).code, 1);
  });

  test('an export of a time range verifies on its own', async () => {
    const ev = events();
    const from = ev[Math.floor(ev.length / 3)];
    const to = ev[Math.floor((2 * ev.length) / 3)];
    const text = await exportAudit(`format=jsonl&since=${encodeURIComponent(String(from.time))}&until=${encodeURIComponent(String(to.time))}`);
    const f = path.join(tmp, 'range.jsonl');
    fs.writeFileSync(f, text);
    const r = await verifyCli(f);
    assert.equal(r.code, 0, r.out);
    const first = JSON.parse(text.split('\n')[0]) as Event;
    assert.ok(first.seq > 1);
  });

  test('an independent verification (node:crypto, canonicalize and openssl) agrees with airlock audit verify', async () => {
    let prev: string | null = null;
    for (const e of events()) {
      const { hash, ...rest } = e;
      if (prev !== null) assert.equal(e.prev, prev, `link at ${e.seq}`);
      const expect = crypto.createHash('sha256').update(e.prev).update(jcs(rest) ?? '').digest('hex');
      assert.equal(hash, expect, `hash at ${e.seq}`);
      prev = hash;
    }
    const cp = JSON.parse(lines[lines.length - 1]) as { seq: number; hash: string; signature: string };
    assert.equal(cp.hash, prev);
    const dir = path.join(tmp, 'openssl');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'msg'), `airlock-audit-checkpoint:v1:${cp.seq}:${cp.hash}`);
    fs.writeFileSync(path.join(dir, 'sig.der'), Buffer.from(cp.signature, 'base64'));
    const r = await run('openssl', ['dgst', '-sha256', '-verify', path.join(t.dir, 'keys', 'mirror.pub'), '-signature', path.join(dir, 'sig.der'), path.join(dir, 'msg')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Verified OK/);
  });

  test('the CSV export has the SPEC columns', async () => {
    const csv = await exportAudit('format=csv');
    const [header] = csv.split('\r\n');
    assert.equal(header, 'seq,time,actor,actorSerial,role,ip,action,repository,reference,digest,decision,reason,status,bytes,prev,hash');
    assert.ok(csv.split('\r\n').length > 5);
  });

  test('/metrics parses as Prometheus text, moved with the session, and is refused to a pull certificate', async () => {
    const r = await t.request('audit', '/metrics');
    assert.equal(r.status, 200);
    const text = r.body.toString();
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfa]+$/, `not a sample line: ${line}`);
    }
    const value = (body: string, series: string): number =>
      body
        .split('\n')
        .filter((l) => l.startsWith(series))
        .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    assert.ok(value(text, 'airlock_requests_total') > value(metricsBefore, 'airlock_requests_total'));
    assert.ok(value(text, 'airlock_admission_decisions_total{decision="deny"') >= 1);
    assert.ok(value(text, 'airlock_audit_events_total') > 10);
    assert.ok(value(text, 'airlock_upstream_errors_total') >= 1);
    assert.ok(text.includes('airlock_blob_cache_bytes'));
    const pull = await t.request('pull', '/metrics');
    assert.equal(pull.status, 403);
  });

  test('an export of 1,000,000 events streams with the server memory staying flat', async () => {
    const s = t.airlock.services;
    await s.audit.stored();
    const head = s.audit.head();
    let prev = head.hash;
    let seq = head.seq;
    const time = new Date().toISOString();
    for (let batch = 0; batch < 20; batch++) {
      const evs = [];
      for (let i = 0; i < 50000; i++) {
        const e = chainEvent({ time, actor: 'load', actorSerial: 'ab', role: 'pull', ip: '127.0.0.1', action: 'pull.blob', repository: 'docker.io/library/allowed', reference: null, digest: pinned, decision: 'allow', reason: 'pin', status: 200, bytes: 1024 }, ++seq, prev);
        prev = e.hash;
        evs.push(e);
      }
      s.auditStore.append(evs);
    }
    // The in-memory head must follow the rows written behind its back, so the next event chains correctly.
    await t.restart();
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    let peak = rssBefore;
    let bytes = 0;
    let lineCount = 0;
    const a = t.bundle('audit');
    await new Promise<void>((resolve, reject) => {
      const req = https.get(
        `${t.url}/api/v1/audit?format=jsonl`,
        { ca: fs.readFileSync(t.caPath), cert: fs.readFileSync(a.endpoint.clientCertPath ?? ''), key: fs.readFileSync(a.endpoint.clientKeyPath ?? '') },
        (res) => {
          assert.equal(res.statusCode, 200);
          res.on('data', (chunk: Buffer) => {
            bytes += chunk.length;
            for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) lineCount++;
            peak = Math.max(peak, process.memoryUsage().rss);
          });
          res.on('end', resolve);
          res.on('error', reject);
        },
      );
      req.on('error', reject);
    });
    const rssAfter = process.memoryUsage().rss;
    console.log(`export of ${lineCount} lines (${(bytes / 2 ** 20).toFixed(0)} MiB): RSS before ${(rssBefore / 2 ** 20).toFixed(0)} MiB, peak ${(peak / 2 ** 20).toFixed(0)} MiB, after ${(rssAfter / 2 ** 20).toFixed(0)} MiB`);
    assert.ok(lineCount > 1_000_000);
    assert.ok(peak - rssBefore < 256 * 2 ** 20, `RSS grew by ${((peak - rssBefore) / 2 ** 20).toFixed(0)} MiB while streaming ${(bytes / 2 ** 20).toFixed(0)} MiB`);
  });
});

describe('verification with standard tools only', () => {
  test('scripts/verify-audit.sh (python3 and openssl) accepts the export and rejects an edited one', async () => {
    const pub = path.join(t.dir, 'keys', 'mirror.pub');
    const ok = await run('sh', ['scripts/verify-audit.sh', exportFile, pub], { timeoutMs: 60000 });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Verified OK/);
    const edited = writeVariant('edited-for-script', (ls) => {
      const e = JSON.parse(ls[2]) as Event;
      e.status = 299;
      ls[2] = JSON.stringify(e);
      return ls;
    });
    const bad = await run('sh', ['scripts/verify-audit.sh', edited, pub], { timeoutMs: 60000 });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /hash does not match/);
  });
});

describe('an audit database that refuses writes for long', () => {
  test('a write waiting for a held lock gets 503; past the queue bound airlock refuses pulls and changes with 503 and /healthz says so; once it can write it serves again and one audit.overflow event counts what went unrecorded', async () => {
    const held = await startTestAirlock({
      dir: path.join(tmp, 'airlock-held'),
      upstreams: [{ name: 'docker.io', url: reg.url, ca: reg.caPath }],
      pins: [`docker.io/library/allowed:v1@${pinned}`],
      maxAuditQueue: 20,
    });
    const Database = createRequire(import.meta.url)('better-sqlite3') as typeof import('better-sqlite3');
    const db = new Database(path.join(held.dir, 'airlock.db'));
    try {
      // Twice, so that the second is a remembered answer: that path must refuse too.
      for (let i = 0; i < 2; i++) assert.equal((await held.request('pull', '/v2/library/allowed/manifests/v1')).status, 200);
      // Certificates are issued (a database write) before the lock is taken.
      for (const role of ['audit', 'admin'] as const) held.bundle(role);
      await held.airlock.services.audit.stored();
      // Another connection holds the write lock, as a backup tool or a stuck process might.
      db.exec('BEGIN IMMEDIATE');
      // A request that must write (a refusal opens an approval request) waits a moment for the lock, then gets 503.
      const locked = await held.request('pull', '/v2/library/refused/manifests/v1');
      assert.equal(locked.status, 503, locked.body.toString());
      assert.match(locked.body.toString(), /"code":"UNAVAILABLE".*the database is locked by another process; try again/);
      const statuses: number[] = [];
      let refusal = '';
      for (let i = 0; i < 100 && refusal === ''; i++) {
        const r = await held.request('pull', '/v2/library/allowed/manifests/v1');
        statuses.push(r.status);
        if (r.status !== 200) refusal = r.body.toString();
      }
      assert.equal(statuses.at(-1), 503, `statuses: ${statuses.join(' ')}`);
      assert.ok(statuses.length >= 15 && statuses.slice(0, -1).every((s) => s === 200), `served until the queue of 20 filled: ${statuses.join(' ')}`);
      assert.match(refusal, /"code":"UNAVAILABLE".*the audit log cannot be written/);
      const blob = await held.request('pull', `/v2/library/allowed/blobs/${pinned}`);
      assert.equal(blob.status, 503, 'every registry request is refused');
      const health = await held.request('pull', '/healthz');
      assert.equal(health.status, 503);
      assert.equal(JSON.parse(health.body.toString()).status, 'unavailable');
      assert.equal((await held.request('audit', '/api/v1/pins')).status, 200, 'reads of the API go on');
      const change = await held.request('admin', '/api/v1/pins', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repository: 'docker.io/library/other', digest: pinned }) });
      assert.equal(change.status, 503, change.body.toString());
      assert.equal(held.airlock.services.policyStore.pins().length, 1, 'the refused change changed nothing');

      db.exec('ROLLBACK');
      await waitFor(async () => (await held.request('pull', '/v2/library/allowed/manifests/v1')).status === 200, { timeoutMs: 15000, what: 'pulls served again' });
      assert.equal((await held.request('pull', '/healthz')).status, 200);
      const refused = await held.request('pull', '/v2/library/refused/manifests/v1');
      assert.equal(refused.status, 403, 'refused, with its approval request, once the database takes writes');
      assert.equal(typeof JSON.parse(refused.body.toString()).errors[0].detail.request, 'number');
      const r = await held.request('audit', '/api/v1/audit?format=jsonl');
      const exported = r.body.toString().trimEnd().split('\n');
      const overflow = exported.map((l) => JSON.parse(l) as Event).filter((e) => e.action === 'audit.overflow');
      assert.equal(overflow.length, 1, 'one event for the whole episode');
      assert.match(overflow[0].reason ?? '', /^\d+ events went unrecorded while 20 waited for the audit database .*v2_manifests\.get \d+/);
      const file = path.join(tmp, 'held.jsonl');
      fs.writeFileSync(file, `${exported.join('\n')}\n`);
      const verified = await run(process.execPath, [...CLI, 'audit', 'verify', file, '--key', path.join(held.dir, 'keys', 'mirror.pub')], { timeoutMs: 60000 });
      assert.equal(verified.code, 0, `${verified.stdout}${verified.stderr}`);
    } finally {
      if (db.inTransaction) db.exec('ROLLBACK');
      db.close();
      await held.stop();
    }
  });
});
