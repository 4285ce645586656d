import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AUDIT_FIELDS,
  ZERO_HASH,
  chainEvent,
  checkpointMessage,
  hashEvent,
  keyIdOf,
  signCheckpoint,
  verifyCheckpoint,
  type AuditEvent,
  type AuditEventInput,
  type Checkpoint,
} from '../server/audit/chain.js';
import { CSV_HEADER, toCsvRow, toJsonLine } from '../server/audit/format.js';
import { formatVerifyResult, verifyAuditExport, verifyAuditFile, type VerifyResult } from '../server/audit/verify.js';

// The independent checker below uses the JCS package directly, not the code under test.
const jcs = createRequire(import.meta.url)('canonicalize') as (input: unknown) => string | undefined;

const EVENT_COUNT = 300;
let dir = '';
let mirrorPrivate: KeyObject;
let mirrorPublic: KeyObject;
let otherPrivate: KeyObject;
let otherPublic: KeyObject;
let events: AuditEvent[] = [];
let intact: string[] = [];

function syntheticInput(i: number): AuditEventInput {
  const time = new Date(Date.UTC(2025, 0, 1) + i * 1500).toISOString();
  switch (i % 5) {
    case 0:
      return {
        time, actor: `builder-${i}`, actorSerial: (0x1000 + i).toString(16), role: 'pull', ip: '10.0.0.7',
        action: 'pull.manifest', repository: 'docker.io/library/alpine', reference: '3.20',
        digest: `sha256:${createHash('sha256').update(String(i)).digest('hex')}`,
        decision: 'allow', reason: 'pin', status: 200, bytes: 1234 + i,
      };
    case 1:
      return {
        time, actor: 'ci, "nightly"', actorSerial: 'ab01', role: 'pull', ip: '::1',
        action: 'pull.blob', repository: 'ghcr.io/acme/app', reference: null, digest: null,
        decision: 'deny', reason: 'unsigned: no trusted publisher — café', status: 403, bytes: null,
      };
    case 2:
      return {
        time, actor: 'admin', actorSerial: 'ff', role: 'admin', ip: '127.0.0.1',
        action: 'admin.pin.create', repository: 'quay.io/x/y', reference: 'v1\nv2', digest: null,
        decision: null, reason: null, status: 201, bytes: 0,
      };
    case 3:
      return {
        time, actor: null, actorSerial: null, role: null, ip: '192.0.2.9',
        action: 'tls.refused', repository: null, reference: null, digest: null,
        decision: 'deny', reason: 'certificate revoked', status: null, bytes: null,
      };
    default:
      return {
        time, actor: null, actorSerial: null, role: null, ip: null,
        action: 'upstream.error', repository: 'registry.k8s.io/pause', reference: '3.9', digest: null,
        decision: null, reason: 'connect ECONNREFUSED', status: 502, bytes: null,
      };
  }
}

function buildChain(count: number): AuditEvent[] {
  const out: AuditEvent[] = [];
  let prev = ZERO_HASH;
  for (let seq = 1; seq <= count; seq++) {
    const e = chainEvent(syntheticInput(seq), seq, prev);
    out.push(e);
    prev = e.hash;
  }
  return out;
}

function exportLines(from: number, to: number, key: KeyObject = mirrorPrivate): string[] {
  const slice = events.slice(from - 1, to);
  const last = slice[slice.length - 1];
  return [...slice.map(toJsonLine), toJsonLine(signCheckpoint(key, keyIdOf(key), last.seq, last.hash))];
}

let fileCounter = 0;
function writeExport(lines: string[], ending = '\n'): string {
  const path = join(dir, `export-${++fileCounter}.jsonl`);
  writeFileSync(path, lines.join(ending) + ending);
  return path;
}

async function verifyLines(lines: string[], key: KeyObject | null = mirrorPublic): Promise<VerifyResult> {
  return verifyAuditFile(writeExport(lines), key);
}

function assertFailsAt(r: VerifyResult, badSeq: number | null, pattern?: RegExp): void {
  assert.equal(r.ok, false, `expected a failure, got ${formatVerifyResult(r)}`);
  if (r.ok) return;
  assert.equal(r.badSeq, badSeq, formatVerifyResult(r));
  if (pattern) assert.match(r.error, pattern);
}

function editLine(lines: string[], index: number, edit: (obj: Record<string, unknown>) => void): string[] {
  const copy = [...lines];
  const obj = JSON.parse(copy[index]) as Record<string, unknown>;
  edit(obj);
  copy[index] = JSON.stringify(obj);
  return copy;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-audit-'));
  ({ privateKey: mirrorPrivate, publicKey: mirrorPublic } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }));
  ({ privateKey: otherPrivate, publicKey: otherPublic } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }));
  events = buildChain(EVENT_COUNT);
  intact = exportLines(1, EVENT_COUNT);
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('hashEvent is SHA-256 over prev followed by the hand-written RFC 8785 form of the event', () => {
  const event: Omit<AuditEvent, 'hash'> = {
    seq: 7, time: '2025-03-04T05:06:07.089Z', actor: 'builder', actorSerial: '0a1b', role: 'pull',
    ip: '10.1.2.3', action: 'pull.manifest', repository: 'docker.io/library/alpine', reference: '3.20',
    digest: null, decision: 'deny', reason: 'café "quoted"\n', status: 403, bytes: null,
    prev: 'ab'.repeat(32),
  };
  // Keys sorted by UTF-16 code units, no whitespace, non-ASCII kept as UTF-8, quotes and newline escaped.
  const canonical =
    '{"action":"pull.manifest","actor":"builder","actorSerial":"0a1b","bytes":null,"decision":"deny",' +
    '"digest":null,"ip":"10.1.2.3","prev":"' + 'ab'.repeat(32) + '","reason":"café \\"quoted\\"\\n",' +
    '"reference":"3.20","repository":"docker.io/library/alpine","role":"pull","seq":7,"status":403,' +
    '"time":"2025-03-04T05:06:07.089Z"}';
  const expected = createHash('sha256')
    .update(Buffer.concat([Buffer.from('ab'.repeat(32), 'ascii'), Buffer.from(canonical, 'utf8')]))
    .digest('hex');
  assert.equal(hashEvent(event), expected);
  assert.equal(hashEvent({ ...event, hash: 'f'.repeat(64) } as AuditEvent), expected, 'an existing hash is ignored');
  const { seq, prev, ...input } = event;
  assert.equal(chainEvent(input, seq, prev).hash, expected);
});

test('the first event ever links to 64 zeros and each event links to the previous hash', () => {
  assert.equal(ZERO_HASH, '0'.repeat(64));
  assert.equal(events[0].prev, ZERO_HASH);
  for (let i = 1; i < events.length; i++) assert.equal(events[i].prev, events[i - 1].hash);
});

test('JSONL lines keep the SPEC field order for events and checkpoints', () => {
  assert.deepEqual(Object.keys(JSON.parse(intact[0]) as object), [...AUDIT_FIELDS]);
  assert.deepEqual(Object.keys(JSON.parse(intact[intact.length - 1]) as object), [
    'type', 'seq', 'hash', 'keyId', 'signature',
  ]);
  assert.ok(!intact[0].endsWith('\n'));
});

test('keyIdOf is the SHA-256 of the SPKI DER, the same for the private and the public key', () => {
  const pem = join(dir, 'keyid.pub.pem');
  writeFileSync(pem, mirrorPublic.export({ type: 'spki', format: 'pem' }));
  const der = spawnSync('openssl', ['pkey', '-pubin', '-in', pem, '-outform', 'DER']);
  assert.equal(der.status, 0, der.stderr.toString());
  const expected = `sha256:${createHash('sha256').update(der.stdout).digest('hex')}`;
  assert.equal(keyIdOf(mirrorPublic), expected);
  assert.equal(keyIdOf(mirrorPrivate), expected);
});

test('checkpointMessage and signCheckpoint produce a DER signature that verifyCheckpoint accepts', () => {
  assert.equal(checkpointMessage(12, 'ab').toString('utf8'), 'airlock-audit-checkpoint:v1:12:ab');
  const cp = signCheckpoint(mirrorPrivate, keyIdOf(mirrorPrivate), 5, events[4].hash);
  assert.equal(cp.type, 'checkpoint');
  assert.match(cp.signature, /^[A-Za-z0-9+/]+={0,2}$/);
  assert.equal(Buffer.from(cp.signature, 'base64')[0], 0x30, 'a DER SEQUENCE');
  assert.equal(verifyCheckpoint(mirrorPublic, cp), true);
  assert.equal(verifyCheckpoint(otherPublic, cp), false);
  assert.equal(verifyCheckpoint(mirrorPublic, { ...cp, seq: 6 }), false);
});

test('verifyCheckpoint returns false on junk instead of throwing', () => {
  const cp = signCheckpoint(mirrorPrivate, keyIdOf(mirrorPrivate), 5, events[4].hash);
  const { publicKey: edKey } = generateKeyPairSync('ed25519');
  const junk: Checkpoint[] = [
    { ...cp, signature: '' },
    { ...cp, signature: 'not base64 !!' },
    { ...cp, signature: Buffer.from('garbage').toString('base64') },
    { ...cp, signature: 'AAAA' },
  ];
  for (const bad of junk) assert.equal(verifyCheckpoint(mirrorPublic, bad), false, bad.signature);
  assert.equal(verifyCheckpoint(edKey, cp), false);
  assert.equal(verifyCheckpoint(mirrorPrivate, cp), false);
  assert.equal(verifyCheckpoint(mirrorPublic, { ...cp, seq: 'x' } as unknown as Checkpoint), false);
});

test('an intact export verifies and the summary names its range and signing key', async () => {
  const r = await verifyLines(intact);
  assert.ok(r.ok, formatVerifyResult(r));
  assert.equal(r.events, EVENT_COUNT);
  assert.equal(r.firstSeq, 1);
  assert.equal(r.lastSeq, EVENT_COUNT);
  assert.equal(r.signatureVerified, true);
  assert.equal(
    formatVerifyResult(r),
    `audit log intact: events 1..${EVENT_COUNT} (${EVENT_COUNT} events), checkpoint signed by ${keyIdOf(mirrorPublic)}`,
  );
});

test('an export of a sub-range verifies on its own', async () => {
  const r = await verifyLines(exportLines(50, 120));
  assert.ok(r.ok, formatVerifyResult(r));
  assert.equal(r.firstSeq, 50);
  assert.equal(r.lastSeq, 120);
  assert.equal(r.events, 71);
});

test('a trailing blank line and CRLF line endings are accepted', async () => {
  assert.ok((await verifyAuditFile(writeExport([...intact, '']), mirrorPublic)).ok);
  assert.ok((await verifyAuditFile(writeExport(intact, '\r\n'), mirrorPublic)).ok);
});

test('editing a field of an event names that event', async () => {
  const r = await verifyLines(editLine(intact, 39, (o) => { o.decision = 'allow-edited'; }));
  assertFailsAt(r, 40, /hash does not match the event/);
  assert.equal(r.ok ? 0 : r.line, 40);
  assert.equal(formatVerifyResult(r), 'audit log NOT intact at seq 40 (line 40): hash does not match the event');
});

test('editing a field and recomputing its hash breaks the link to the next event', async () => {
  const r = await verifyLines(
    editLine(intact, 39, (o) => {
      o.decision = 'deny';
      o.hash = hashEvent(o as unknown as AuditEvent);
    }),
  );
  assertFailsAt(r, 41, /prev does not match the hash of seq 40/);
});

test('rewriting the whole chain after an edit is caught by the signed checkpoint', async () => {
  const forged = events.map((e) => ({ ...e }));
  forged[39].decision = 'deny';
  for (let i = 39; i < forged.length; i++) {
    if (i > 0) forged[i].prev = forged[i - 1].hash;
    forged[i].hash = hashEvent(forged[i]);
  }
  const lines = [...forged.map(toJsonLine), intact[intact.length - 1]];
  assertFailsAt(await verifyLines(lines), EVENT_COUNT, /checkpoint hash does not match/);
});

test('deleting an event names the event after the gap', async () => {
  const lines = intact.filter((_, i) => i !== 39);
  assertFailsAt(await verifyLines(lines), 41, /seq 41 follows seq 39/);
});

test('swapping two events names the first one found out of place', async () => {
  const lines = [...intact];
  [lines[39], lines[40]] = [lines[40], lines[39]];
  const r = await verifyLines(lines);
  assertFailsAt(r, 41, /out of order/);
  assert.equal(r.ok ? 0 : r.line, 40);
});

test('a checkpoint signed by a different key fails with a clear message', async () => {
  const r = await verifyLines(exportLines(1, EVENT_COUNT, otherPrivate));
  assertFailsAt(r, EVENT_COUNT, /checkpoint names key sha256:[0-9a-f]{64}, but the verifying key is sha256:/);
});

test('a checkpoint signed by a different key that claims the mirror key id fails', async () => {
  const last = events[EVENT_COUNT - 1];
  const forged = signCheckpoint(otherPrivate, keyIdOf(mirrorPublic), last.seq, last.hash);
  const lines = [...intact.slice(0, -1), toJsonLine(forged)];
  assertFailsAt(await verifyLines(lines), EVENT_COUNT, /signature does not verify/);
});

test('a checkpoint with an altered hash or seq fails naming the checkpoint seq', async () => {
  const cpIndex = intact.length - 1;
  assertFailsAt(await verifyLines(editLine(intact, cpIndex, (o) => { o.hash = 'a'.repeat(64); })), EVENT_COUNT);
  assertFailsAt(await verifyLines(editLine(intact, cpIndex, (o) => { o.seq = EVENT_COUNT + 1; })), EVENT_COUNT + 1);
  const shortened = editLine(intact.filter((_, i) => i !== cpIndex - 1), cpIndex - 1, (o) => {
    o.seq = EVENT_COUNT - 1;
    o.hash = events[EVENT_COUNT - 2].hash;
  });
  assertFailsAt(await verifyLines(shortened), EVENT_COUNT - 1, /signature does not verify/);
});

test('an export without its checkpoint fails as truncated', async () => {
  const r = await verifyLines(intact.slice(0, -1));
  assertFailsAt(r, null, /without a signed checkpoint/);
  assert.equal(r.ok ? 0 : r.line, EVENT_COUNT + 1);
  assert.match(formatVerifyResult(r), /^audit log NOT intact at line 301: /);
});

test('dropping the last events while keeping the checkpoint fails', async () => {
  const lines = [...intact.slice(0, 250), intact[intact.length - 1]];
  assertFailsAt(await verifyLines(lines), EVENT_COUNT, /last event is seq 250/);
});

test('verifying with the wrong key fails', async () => {
  assertFailsAt(await verifyLines(intact, otherPublic), EVENT_COUNT, /verifying key/);
});

test('without a key the chain is checked but the summary says the signature was not', async () => {
  const r = await verifyLines(intact, null);
  assert.ok(r.ok);
  assert.equal(r.signatureVerified, false);
  assert.match(formatVerifyResult(r), /NOT checked/);
  assertFailsAt(await verifyLines(intact.slice(0, -1), null), null);
});

test('anything after the checkpoint fails', async () => {
  const r = await verifyLines([...intact, '', intact[0]]);
  assertFailsAt(r, 1, /after the checkpoint/);
  assertFailsAt(await verifyLines([...intact, intact[intact.length - 1]]), EVENT_COUNT, /after the checkpoint/);
});

test('malformed lines fail: not JSON, wrong fields, wrong types, duplicate keys, blank lines', async () => {
  const withLine = (index: number, text: string): string[] => intact.map((l, i) => (i === index ? text : l));
  assertFailsAt(await verifyLines(withLine(9, '{"seq":10,')), null, /not valid JSON \(after seq 9\)/);
  assertFailsAt(await verifyLines(withLine(9, '[1,2]')), null, /not a JSON object/);
  assertFailsAt(await verifyLines(editLine(intact, 9, (o) => { o.extra = 1; })), 10, /unexpected extra/);
  assertFailsAt(await verifyLines(editLine(intact, 9, (o) => { delete o.ip; })), 10, /missing ip/);
  assertFailsAt(await verifyLines(editLine(intact, 9, (o) => { o.status = '200'; })), 10, /status/);
  assertFailsAt(await verifyLines(editLine(intact, 9, (o) => { o.time = '2025-01-01 00:00:00'; })), 10, /time/);
  const dup = intact[9].replace(/,"hash":/, `,"decision":"allow","hash":`);
  assert.equal((JSON.parse(dup) as AuditEvent).hash, events[9].hash);
  assertFailsAt(await verifyLines(withLine(9, dup)), 10, /duplicate key/);
  assertFailsAt(await verifyLines(withLine(9, '')), null, /blank line after seq 9/);
  assertFailsAt(await verifyLines(['', ...intact]), null, /blank line before the first event/);
  const empty = join(dir, 'empty.jsonl');
  writeFileSync(empty, '');
  assertFailsAt(await verifyAuditFile(empty, mirrorPublic), null, /no events/);
  assertFailsAt(await verifyLines([intact[intact.length - 1]]), EVENT_COUNT, /no events before it/);
});

test('an export starting at seq 1 must start from 64 zeros', async () => {
  const bad = chainEvent(syntheticInput(1), 1, 'c'.repeat(64));
  const cp = signCheckpoint(mirrorPrivate, keyIdOf(mirrorPrivate), 1, bad.hash);
  assertFailsAt(await verifyLines([toJsonLine(bad), toJsonLine(cp)]), 1, /64 zeros/);
});

test('verification streams and stops reading at the first fault', async () => {
  const tampered = editLine(intact, 39, (o) => { o.reason = 'edited'; });
  let pulled = 0;
  async function* lines(): AsyncGenerator<string> {
    for (const l of tampered) {
      pulled++;
      yield l;
    }
  }
  assertFailsAt(await verifyAuditExport(lines(), mirrorPublic), 40);
  assert.equal(pulled, 40);
});

test('a missing export file rejects instead of reporting a result', async () => {
  await assert.rejects(verifyAuditFile(join(dir, 'nope.jsonl'), mirrorPublic), { code: 'ENOENT' });
});

// An independent verifier: node:crypto and the JCS package for the chain, the openssl
// command line for the checkpoint signature.
function independentVerify(path: string, publicKeyPem: string): { ok: boolean; badSeq: number | null } {
  const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l !== '');
  let prevHash: string | null = null;
  let prevSeq: number | null = null;
  for (const [i, text] of lines.entries()) {
    const obj = JSON.parse(text) as Record<string, unknown>;
    if (obj.type === 'checkpoint') {
      if (i !== lines.length - 1 || obj.seq !== prevSeq || obj.hash !== prevHash) {
        return { ok: false, badSeq: obj.seq as number };
      }
      const msg = join(dir, 'independent.msg');
      const sig = join(dir, 'independent.sig.der');
      const pub = join(dir, 'independent.pub.pem');
      writeFileSync(msg, `airlock-audit-checkpoint:v1:${String(obj.seq)}:${String(obj.hash)}`);
      writeFileSync(sig, Buffer.from(obj.signature as string, 'base64'));
      writeFileSync(pub, publicKeyPem);
      const run = spawnSync('openssl', ['dgst', '-sha256', '-verify', pub, '-signature', sig, msg]);
      return run.status === 0 ? { ok: true, badSeq: null } : { ok: false, badSeq: obj.seq as number };
    }
    const { hash, ...withoutHash } = obj;
    const digest = createHash('sha256')
      .update(Buffer.from(String(obj.prev), 'utf8'))
      .update(Buffer.from(jcs(withoutHash) ?? '', 'utf8'))
      .digest('hex');
    const seq = obj.seq as number;
    if (digest !== hash) return { ok: false, badSeq: seq };
    if (prevSeq === null && seq === 1 && obj.prev !== '0'.repeat(64)) return { ok: false, badSeq: seq };
    if (prevSeq !== null && (seq !== prevSeq + 1 || obj.prev !== prevHash)) return { ok: false, badSeq: seq };
    prevSeq = seq;
    prevHash = hash as string;
  }
  return { ok: false, badSeq: null };
}

test('an independent verifier with openssl agrees on intact and tampered exports', async () => {
  const pem = mirrorPublic.export({ type: 'spki', format: 'pem' }).toString();
  const last = events[EVENT_COUNT - 1];
  const forgedCheckpoint = signCheckpoint(otherPrivate, keyIdOf(mirrorPublic), last.seq, last.hash);
  const cases: Array<[string, string[]]> = [
    ['intact', intact],
    ['sub-range', exportLines(50, 120)],
    ['edited field', editLine(intact, 39, (o) => { o.decision = 'allow-edited'; })],
    ['deleted line', intact.filter((_, i) => i !== 39)],
    ['forged signature', [...intact.slice(0, -1), toJsonLine(forgedCheckpoint)]],
  ];
  for (const [name, lines] of cases) {
    const path = writeExport(lines);
    const ours = await verifyAuditFile(path, mirrorPublic);
    const theirs = independentVerify(path, pem);
    assert.equal(ours.ok, theirs.ok, `${name}: ${formatVerifyResult(ours)}`);
    assert.equal(ours.ok ? null : ours.badSeq, theirs.badSeq, name);
  }
});

test('the CSV header lists the SPEC fields in order', () => {
  assert.equal(CSV_HEADER, AUDIT_FIELDS.join(','));
  assert.equal(CSV_HEADER.split(',').length, 16);
});

test('CSV rows quote commas, quotes and line breaks and leave nulls empty', () => {
  const e: AuditEvent = {
    ...events[0],
    actor: 'ci, "nightly"', actorSerial: null, role: 'pull', ip: null, reference: 'v1\r\nv2',
    reason: 'plain', status: 200, bytes: null,
  };
  const cells = toCsvRow(e);
  assert.equal(
    cells,
    [
      '1', e.time, '"ci, ""nightly"""', '', 'pull', '', e.action, e.repository, '"v1\r\nv2"', e.digest, e.decision,
      'plain', '200', '', e.prev, e.hash,
    ].join(','),
  );
});

test('CSV cells that a spreadsheet would run as a formula get a leading quote', () => {
  const base = events[3];
  const row = (actor: string): string => toCsvRow({ ...base, actor }).split(',')[2];
  assert.equal(row('=HYPERLINK(1)'), `'=HYPERLINK(1)`);
  assert.equal(row('+1'), `'+1`);
  assert.equal(row('-2'), `'-2`);
  assert.equal(row('@SUM(A1)'), `'@SUM(A1)`);
  assert.equal(row('\tcmd'), `'\tcmd`);
  assert.equal(row('\rcmd'), `"'\rcmd"`);
  assert.equal(row('safe=text'), 'safe=text');
  assert.ok(toCsvRow({ ...base, actor: '=1+2, "x"' }).includes(',"\'=1+2, ""x""",'));
});

test('hashEvent agrees with the general RFC 8785 canonicaliser for generated events, unicode and control characters included', async () => {
  const fc = await import('fast-check');
  const text = fc.option(fc.string({ unit: 'binary', maxLength: 40 }), { nil: null });
  const int = fc.option(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), { nil: null });
  fc.assert(
    fc.property(text, text, text, text, text, text, text, text, text, int, int, fc.integer({ min: 1, max: 2 ** 40 }), (actor, serial, role, ip, repository, reference, digest, decision, reason, status, bytes, seq) => {
      const e = { seq, time: '2026-11-28T00:00:00.000Z', actor, actorSerial: serial, role, ip, action: 'pull.manifest', repository, reference, digest, decision, reason, status, bytes, prev: 'a'.repeat(64) };
      const expected = createHash('sha256').update(e.prev).update(jcs(e) ?? '').digest('hex');
      assert.equal(hashEvent(e), expected);
    }),
    { numRuns: 500 },
  );
});

test('a number not written as a plain integer fails: 200.0 and 2e2 read as 200 but would hash otherwise elsewhere', async () => {
  for (const spelling of ['200.0', '2e2', '2E2', '200.00000000000001']) {
    const edited = [...intact];
    const status = JSON.parse(edited[39]).status as number | null;
    assert.equal(status, 200);
    edited[39] = edited[39].replace('"status":200,', `"status":${spelling},`);
    assertFailsAt(await verifyLines(edited), 40, /a number is not written as a plain integer/);
  }
});

// The reviewer's edit: sed '2s/"bytes":0,/"bytes":-0,/' on an export. JSON reads -0 as 0, so the hash still matches.
function minusZeroBytes(lines: string[]): string[] {
  assert.equal((JSON.parse(lines[1]) as AuditEvent).bytes, 0);
  return lines.map((l, i) => (i === 1 ? l.replace('"bytes":0,', '"bytes":-0,') : l));
}

function checkpointText(lines: string[], edit: (text: string) => string): string[] {
  const last = lines.length - 1;
  return lines.map((l, i) => (i === last ? edit(l) : l));
}

test('a number with a minus sign fails: -0 reads as 0 and hashes the same, and no audit field is negative', async () => {
  const minusZero = minusZeroBytes(intact);
  assert.equal(hashEvent(JSON.parse(minusZero[1]) as AuditEvent), events[1].hash, 'the edit keeps the hash');
  assertFailsAt(await verifyLines(minusZero), 2, /a number is written with a minus sign/);
  const minusOne = intact.map((l, i) => (i === 1 ? l.replace('"bytes":0,', '"bytes":-1,') : l));
  assertFailsAt(await verifyLines(minusOne), 2, /minus sign/);
  assertFailsAt(await verifyLines(checkpointText(intact, (l) => l.replace(`"seq":${EVENT_COUNT},`, `"seq":-${EVENT_COUNT},`))), null, /minus sign/);
});

test('the checkpoint is held to the same number spelling as the events: 300.0 fails', async () => {
  const r = await verifyLines(checkpointText(intact, (l) => l.replace(`"seq":${EVENT_COUNT},`, `"seq":${EVENT_COUNT}.0,`)));
  assertFailsAt(r, EVENT_COUNT, /a number is not written as a plain integer/);
});

test('a checkpoint with an added field, or naming another key while signed by the mirror key, fails', async () => {
  const extra = checkpointText(intact, (l) => l.replace(/}$/, ',"x":1}'));
  assertFailsAt(await verifyLines(extra), EVENT_COUNT, /checkpoint has wrong fields \(unexpected x\)/);
  const renamed = checkpointText(intact, (l) => l.replace(keyIdOf(mirrorPublic), keyIdOf(otherPublic)));
  assert.notDeepEqual(renamed, intact);
  assertFailsAt(await verifyLines(renamed), EVENT_COUNT, /checkpoint names key sha256:[0-9a-f]{64}, but the verifying key is/);
});

test('the layout of a line is not checked: spaces, key order and escapes that keep every value verify', async () => {
  const spaced = intact.map((l) => l.replaceAll('","', '", "').replace(/^\{/, '{ '));
  const reordered = intact.map((l) => JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(l) as object).reverse())));
  const escaped = intact.map((l) => l.replace('"action":"p', '"action":"\\u0070'));
  for (const lines of [spaced, reordered, escaped]) {
    assert.notDeepEqual(lines, intact);
    const r = await verifyLines(lines);
    assert.ok(r.ok, formatVerifyResult(r));
  }
});

test('a line longer than 1 MiB fails with one line, without reading it into memory', async () => {
  const path = join(dir, 'one-long-line.jsonl');
  writeFileSync(path, `${intact[0]}\n${'x'.repeat(3 * 1024 * 1024)}`);
  const r = await verifyAuditFile(path, mirrorPublic);
  assertFailsAt(r, null, /line 2 is longer than 1048576 bytes: not an audit export/);
});

test('an export saved with a byte order mark fails at line 1 with a message that says so', async () => {
  const path = join(dir, 'with-bom.jsonl');
  writeFileSync(path, `\ufeff${intact.join('\n')}\n`);
  assertFailsAt(await verifyAuditFile(path, mirrorPublic), null, /^line starts with a byte order mark \(U\+FEFF\)/);
});

test('a byte that is not UTF-8 fails where a lenient decoder would read it as the U+FFFD the event holds', async () => {
  // What airlock writes for a client's control characters: U+FFFD, the bytes EF BF BD.
  const first = chainEvent({ ...syntheticInput(1), reference: 'v1\ufffd' }, 1, ZERO_HASH);
  const lines = [toJsonLine(first), toJsonLine(signCheckpoint(mirrorPrivate, keyIdOf(mirrorPrivate), 1, first.hash))];
  const genuine = Buffer.from(`${lines.join('\n')}\n`);
  const at = genuine.indexOf(Buffer.from('\ufffd'));
  const edited = join(dir, 'fffd-as-ff.jsonl');
  writeFileSync(edited, Buffer.concat([genuine.subarray(0, at), Buffer.from([0xff]), genuine.subarray(at + 3)]));
  assert.equal(new TextDecoder().decode(readFileSync(edited)), genuine.toString(), 'a lenient decoder reads the edited bytes as the genuine text');
  assert.ok((await verifyAuditFile(writeExport(lines), mirrorPublic)).ok);
  assertFailsAt(await verifyAuditFile(edited, mirrorPublic), null, /^line 1 holds bytes that are not UTF-8: not an audit export$/);
  const pem = join(dir, 'fffd-mirror.pub');
  writeFileSync(pem, mirrorPublic.export({ type: 'spki', format: 'pem' }).toString());
  const script = spawnSync('sh', ['scripts/verify-audit.sh', edited, pem], { encoding: 'utf8' });
  assert.equal(script.status, 1);
  assert.match(script.stderr, /^line 1: not UTF-8/m);
});

test('scripts/verify-audit.sh (python3 and openssl) and airlock audit verify agree', async () => {
  const pem = join(dir, 'script-mirror.pub');
  writeFileSync(pem, mirrorPublic.export({ type: 'spki', format: 'pem' }).toString());
  const cases: Array<[string, string[], boolean]> = [
    ['intact', intact, true],
    ['sub-range', exportLines(50, 120), true],
    ['a blank line after the checkpoint', [...intact, ''], true],
    ['a line of spaces, a tab and a CR after the checkpoint', [...intact, ' \t \r'], true],
    ['a line of Unicode spaces after the checkpoint', [...intact, '\u00a0\u3000\u2028\ufeff'], false],
    ['a line of C0 separators and NEL after the checkpoint', [...intact, '\x1c\x1d\x85'], false],
    ['edited field', editLine(intact, 39, (o) => { o.decision = 'allow-edited'; }), false],
    ['a duplicate key showing another value', intact.map((l, i) => (i === 39 ? l.replace('{"seq"', '{"decision":"forged","seq"') : l)), false],
    ['a float', intact.map((l, i) => (i === 39 ? l.replace('"status":200,', '"status":200.0,') : l)), false],
    ['a line that is not an object', intact.map((l, i) => (i === 39 ? '[]' : l)), false],
    ['an extra field', editLine(intact, 39, (o) => { o.extra = 1; }), false],
    ['no checkpoint', intact.slice(0, -1), false],
    ['-0 for a 0', minusZeroBytes(intact), false],
    ['-1 for a 0', intact.map((l, i) => (i === 1 ? l.replace('"bytes":0,', '"bytes":-1,') : l)), false],
    ['a float checkpoint seq', checkpointText(intact, (l) => l.replace(`"seq":${EVENT_COUNT},`, `"seq":${EVENT_COUNT}.0,`)), false],
    ['an added checkpoint field', checkpointText(intact, (l) => l.replace(/}$/, ',"x":1}')), false],
    ['a checkpoint field missing', editLine(intact, EVENT_COUNT, (o) => { delete o.keyId; }), false],
    ['a checkpoint naming another key', checkpointText(intact, (l) => l.replace(keyIdOf(mirrorPublic), keyIdOf(otherPublic))), false],
    ['a checkpoint naming a made-up key', checkpointText(intact, (l) => l.replace(keyIdOf(mirrorPublic), `sha256:${'a'.repeat(64)}`)), false],
    ['a signature with a space appended', checkpointText(intact, (l) => l.replace(/"signature":"([^"]*)"/, '"signature":"$1 "')), false],
    ['a signature with = appended', checkpointText(intact, (l) => l.replace(/"signature":"([^"]*)"/, '"signature":"$1="')), false],
    ['spaces between tokens', intact.map((l) => l.replaceAll('","', '", "').replace(/^\{/, '{ ')), true],
    ['keys in another order', intact.map((l) => JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(l) as object).reverse()))), true],
  ];
  for (const [name, lines, ok] of cases) {
    const file = writeExport(lines);
    const ours = await verifyAuditFile(file, mirrorPublic);
    assert.equal(ours.ok, ok, `airlock: ${name}: ${formatVerifyResult(ours)}`);
    const script = spawnSync('sh', ['scripts/verify-audit.sh', file, pem], { encoding: 'utf8' });
    assert.equal(script.status === 0, ok, `script: ${name}: ${script.stdout}${script.stderr}`);
    if (!ok) assert.doesNotMatch(script.stderr, /Traceback/, `script: ${name} fails with one line: ${script.stderr}`);
  }
  // Bytes that are not UTF-8: both refuse, with one line.
  const bad = join(dir, 'not-utf8.jsonl');
  writeFileSync(bad, Buffer.concat([Buffer.from(`${intact.slice(0, 3).join('\n')}\n`), Buffer.from([0xff, 0x0a]), Buffer.from(`${intact.slice(3).join('\n')}\n`)]));
  assert.equal((await verifyAuditFile(bad, mirrorPublic)).ok, false);
  const script = spawnSync('sh', ['scripts/verify-audit.sh', bad, pem], { encoding: 'utf8' });
  assert.notEqual(script.status, 0);
  assert.match(script.stderr, /^line 4: not UTF-8/m);
  assert.doesNotMatch(script.stderr, /Traceback/);
});

test('scripts/verify-audit.sh names the line of -0, an added checkpoint field, a keyId that is not the key\'s SPKI fingerprint, a missing, misplaced or forged checkpoint and a first event after another', () => {
  const pem = join(dir, 'script-names.pub');
  writeFileSync(pem, mirrorPublic.export({ type: 'spki', format: 'pem' }).toString());
  const script = (lines: string[]) => spawnSync('sh', ['scripts/verify-audit.sh', writeExport(lines), pem], { encoding: 'utf8' });
  const ok = script(intact);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /Verified OK/);
  const cases: Array<[string[], RegExp]> = [
    [minusZeroBytes(intact), /^line 2: not an audit event \(-0 is written with a minus sign\)$/m],
    [checkpointText(intact, (l) => l.replace(/}$/, ',"x":1}')), new RegExp(`^line ${EVENT_COUNT + 1}: not the fields of a checkpoint$`, 'm')],
    [
      checkpointText(intact, (l) => l.replace(keyIdOf(mirrorPublic), keyIdOf(otherPublic))),
      new RegExp(`^line ${EVENT_COUNT + 1}: checkpoint names key ${keyIdOf(otherPublic)}, but the verifying key is ${keyIdOf(mirrorPublic)}$`, 'm'),
    ],
    [intact.slice(0, -1), new RegExp(`^line ${EVENT_COUNT + 1}: the export ends at seq ${EVENT_COUNT} without a checkpoint \\(truncated\\)$`, 'm')],
    [[...intact.slice(0, 9), exportLines(1, 10)[10]], /^line 10: the checkpoint is for seq 10 but the last event is seq 9 \(truncated or forged\)$/m],
    [[...intact.slice(0, 10), toJsonLine({ ...signCheckpoint(mirrorPrivate, keyIdOf(mirrorPrivate), 10, events[10].hash), hash: events[9].hash })], /^line 11: checkpoint signature does not verify$/m],
    [editLine(intact, 0, (o) => { o.prev = 'f'.repeat(64); }), /^line 1 seq 1: prev is not 64 zeros/m],
  ];
  for (const [lines, message] of cases) {
    const r = script(lines);
    assert.equal(r.status, 1, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stdout, /Verified OK/);
  }
  const notAKey = spawnSync('sh', ['scripts/verify-audit.sh', writeExport(intact), writeExport(intact)], { encoding: 'utf8' });
  assert.equal(notAKey.status, 1);
  assert.match(notAKey.stderr, /^\S+: not a public key$/m);
  for (const [file, why] of [[join(dir, 'no-such-export.jsonl'), 'No such file or directory'], [dir, 'Is a directory']]) {
    const r = spawnSync('sh', ['scripts/verify-audit.sh', file, pem], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `${file}: cannot read it (${why})\n`);
  }
  const usage = spawnSync('sh', ['scripts/verify-audit.sh', writeExport(intact)], { encoding: 'utf8' });
  assert.equal(usage.status, 2);
  assert.equal(usage.stderr, 'usage: sh scripts/verify-audit.sh EXPORT.jsonl MIRROR.pub\n');
});
