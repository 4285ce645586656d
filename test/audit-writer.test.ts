// Writing the audit chain off the request thread: the writer thread commits batches in order on its own connection,
// a batch it cannot store is refused whole, and the audit log keeps refused events queued, in order, until they are
// stored, so the chain never has a gap; a time range exports an unbroken piece of it.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AuditLog } from '../server/audit/log.js';
import { type AuditEvent, chainEvent, hashEvent, keyIdOf, ZERO_HASH } from '../server/audit/chain.js';
import { verifyAuditExport } from '../server/audit/verify.js';
import { createAuditStore, startAuditWriter } from '../storage/audit.js';
import { DB_FILE, openDatabase } from '../storage/db.js';
import { createPolicyStore } from '../storage/policy.js';
import { waitFor } from './harness/proc.js';

let tmp: string;
let n = 0;

// freshStore opens a new data directory's database and its audit store.
function freshStore(): { dir: string; db: ReturnType<typeof openDatabase>; store: ReturnType<typeof createAuditStore> } {
  n += 1;
  const dir = path.join(tmp, `audit-${n}`);
  const db = openDatabase(dir);
  return { dir, db, store: createAuditStore(db) };
}

function events(count: number, first = 1, prev = ZERO_HASH): AuditEvent[] {
  const out: AuditEvent[] = [];
  for (let seq = first; seq < first + count; seq++) {
    const e = chainEvent(
      { time: new Date().toISOString(), actor: 'tester', actorSerial: 'ab', role: 'pull', ip: '127.0.0.1', action: 'pull.manifest', repository: 'docker.io/library/a', reference: 'v1', digest: null, decision: 'allow', reason: 'pin', status: 200, bytes: seq },
      seq,
      prev,
    );
    prev = e.hash;
    out.push(e);
  }
  return out;
}

const key = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;

// exported is the JSONL export of [since, until) as one string.
async function exported(log: AuditLog, since = '', until = '9999'): Promise<string> {
  let text = '';
  for await (const part of log.export(since, until, 'jsonl')) text += part;
  return text;
}

// verified is what audit verify says of an export, with the test key.
function verified(text: string): ReturnType<typeof verifyAuditExport> {
  return verifyAuditExport(
    (async function* () {
      yield* text.trim().split('\n');
    })(),
    crypto.createPublicKey(key),
  );
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-audit-writer-'));
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the audit writer thread', () => {
  test('committed batches are read back in order from the main connection, and a batch that breaks a constraint is refused whole', async () => {
    const { dir, db, store } = freshStore();
    const writer = startAuditWriter(path.join(dir, DB_FILE));
    try {
      const all = events(1000);
      await Promise.all([writer.write(all.slice(0, 400)), writer.write(all.slice(400))]);
      const back = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)];
      assert.equal(back.length, 1000);
      assert.deepEqual(back.map((e) => e.seq), all.map((e) => e.seq));
      for (const e of back) assert.equal(hashEvent(e), e.hash);

      // seq 1000 holds another event already: the batch 1001..1005 plus that other 1000 fails as one.
      const other = events(1, 1000, all[998].hash)[0];
      assert.notEqual(other.hash, all[999].hash);
      const again = [...events(5, 1001, all[999].hash), other];
      await assert.rejects(writer.write(again), /UNIQUE constraint failed: audit\.seq/);
      assert.equal(store.count(), 1000, 'nothing of the refused batch was stored');
    } finally {
      await writer.close();
      db.close();
    }
  });
  test('a batch stored by a thread that stopped before saying so comes again with newer events: stored once, the chain goes on', async () => {
    const { dir, db, store } = freshStore();
    const writer = startAuditWriter(path.join(dir, DB_FILE));
    try {
      const all = events(30);
      await writer.write(all.slice(0, 20));
      // The log queues a batch it was not told was stored again, ahead of the events that came meanwhile.
      await writer.write(all.slice(10));
      const back = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)];
      assert.deepEqual(back.map((e) => e.hash), all.map((e) => e.hash));
    } finally {
      await writer.close();
      db.close();
    }
  });
  test('a pin is deleted while the writer thread commits batches: the delete waits for the write lock, never "database is locked"', async () => {
    const { dir, db } = freshStore();
    const policy = createPolicyStore(db);
    const writer = startAuditWriter(path.join(dir, DB_FILE));
    try {
      const all = events(4000);
      const writes: Promise<void>[] = [];
      for (let i = 0; i < all.length; i += 4) writes.push(writer.write(all.slice(i, i + 4)));
      // The writer thread works through its batches while this thread adds and deletes pins; a delete that read the
      // pin before taking the write lock would fail whenever a batch committed between its read and its write.
      const until = Date.now() + 1500;
      let deleted = 0;
      for (let i = 0; Date.now() < until; i++) {
        const p = policy.addPin({ repository: 'docker.io/library/a', digest: `sha256:${String(i).padStart(64, '0')}`, tag: null, note: null, source: 'api', createdBy: 'test' });
        assert.ok(p);
        assert.equal(policy.deletePin(p.pin.id), true);
        deleted++;
      }
      await Promise.all(writes);
      assert.ok(deleted > 100, `${deleted} pins were added and deleted`);
      assert.equal(policy.pins().length, 0);
    } finally {
      await writer.close();
      db.close();
    }
  });
});

describe('the audit log with a sink that fails', () => {
  test('a checkpoint the database refuses (a full disk) is reported and retried, never thrown', async () => {
    const { db, store } = freshStore();
    const log = new AuditLog(store, key, keyIdOf(key), async (batch) => store.append(batch));
    const errors: string[] = [];
    log.onError = (err) => errors.push(err.message);
    const save = store.saveCheckpoint;
    try {
      assert.equal(log.open().problem, null);
      for (let i = 0; i < 3; i++) log.append({ action: 'pull.blob', status: 200, bytes: i });
      store.saveCheckpoint = () => {
        throw new Error('database or disk is full');
      };
      assert.equal(await log.checkpoint(), null, 'no checkpoint, and no rejection');
      assert.deepEqual(errors, ['database or disk is full']);
      store.saveCheckpoint = save;
      assert.equal((await log.checkpoint())?.seq, 3, 'the next tick stores it');
      assert.equal(store.lastCheckpoint()?.seq, 3);
    } finally {
      store.saveCheckpoint = save;
      await log.close();
      db.close();
    }
  });

  test('refused events stay queued in order and are stored once the sink accepts them; stored() says whether all are', async () => {
    const { db, store } = freshStore();
    let broken = true;
    const attempts: number[] = [];
    const log = new AuditLog(store, key, 'test-key', async (batch) => {
      attempts.push(batch.length);
      if (broken) throw new Error('database or disk is full');
      store.append(batch);
    });
    const errors: number[] = [];
    log.onError = (_err, queued) => errors.push(queued);
    try {
      assert.equal(log.open().problem, null);
      for (let i = 0; i < 5; i++) log.append({ action: 'pull.blob', status: 200, bytes: i });
      assert.equal(await log.stored(300), false, 'nothing is stored while the sink fails');
      for (let i = 5; i < 8; i++) log.append({ action: 'pull.blob', status: 200, bytes: i });
      assert.equal(store.count(), 0);
      assert.ok(errors.length >= 1 && errors[0] === 5, `the first failure keeps all five queued: ${JSON.stringify(errors)}`);

      broken = false;
      assert.equal(await log.stored(3000), true, 'the retry stores everything');
      const stored = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)];
      assert.deepEqual(stored.map((e) => e.bytes), [0, 1, 2, 3, 4, 5, 6, 7], 'in the order appended, without a gap');
      let prev = ZERO_HASH;
      for (const e of stored) {
        assert.equal(e.prev, prev);
        assert.equal(hashEvent(e), e.hash);
        prev = e.hash;
      }
      assert.deepEqual(log.head(), { seq: 8, hash: prev });

      const cp = await log.checkpoint();
      assert.equal(cp?.seq, 8, 'a checkpoint covers the stored head');
    } finally {
      await log.close();
      db.close();
    }
  });

  test('a full queue counts events instead of keeping them, the batch being written included, and one audit.overflow event says so once stored', async () => {
    const { db, store } = freshStore();
    let broken = true;
    let release: (() => void) | null = null;
    const log = new AuditLog(
      store,
      key,
      keyIdOf(key),
      async (batch) => {
        // The first attempt hangs (a held write lock) until released, then fails; later ones fail until mended.
        if (release === null) await new Promise<void>((resolve) => (release = resolve));
        if (broken) throw new Error('database is locked');
        store.append(batch);
      },
      10,
    );
    const overflows: [boolean, number][] = [];
    log.onOverflow = (full, unrecorded) => overflows.push([full, unrecorded]);
    try {
      log.open();
      for (let i = 0; i < 6; i++) log.append({ action: 'pull.blob', status: 200, bytes: i });
      log.flush();
      assert.ok(release !== null, 'a batch of six is being written');
      for (let i = 6; i < 10; i++) assert.ok(log.append({ action: 'pull.manifest', status: 200, bytes: i }));
      assert.equal(log.full, true, 'six being written and four queued fill a queue of ten');
      assert.equal(log.append({ action: 'pull.manifest', status: 503 }), null);
      assert.equal(log.append({ action: 'tls.refused' }), null);
      assert.equal(log.append({ action: 'pull.manifest', status: 503 }), null);
      assert.deepEqual(overflows, [[true, 0]], 'told once that the queue is full');
      (release as unknown as () => void)();
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(log.full, true, 'the failed batch is queued again: still full');
      assert.equal(log.append({ action: 'pull.blob' }), null);
      assert.equal(store.count(), 0);

      broken = false;
      assert.equal(await log.stored(3000), true);
      assert.equal(log.full, false);
      const stored = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)];
      assert.deepEqual(stored.slice(0, 10).map((e) => e.bytes), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'the queued events, in order');
      assert.equal(stored.length, 11);
      const overflow = stored[10];
      assert.equal(overflow.action, 'audit.overflow');
      assert.equal(overflow.decision, 'deny');
      assert.match(overflow.reason ?? '', /^4 events went unrecorded while 10 waited for the audit database .*: pull\.manifest 2, (tls\.refused 1, pull\.blob 1|pull\.blob 1, tls\.refused 1)$/);
      assert.deepEqual(overflows, [[true, 0], [false, 4]]);
      let prev = ZERO_HASH;
      for (const e of stored) {
        assert.equal(e.prev, prev, `event ${e.seq} links to the one before`);
        assert.equal(hashEvent(e), e.hash);
        prev = e.hash;
      }
      assert.ok(log.append({ action: 'pull.blob' }), 'events are queued again');
    } finally {
      await log.close();
      db.close();
    }
  });

  test('a full queue leaves the command line\'s outbox rows where they are, and takes them once it has room', async () => {
    const { db, store } = freshStore();
    let broken = true;
    const log = new AuditLog(
      store,
      key,
      keyIdOf(key),
      async (batch) => {
        if (broken) throw new Error('database or disk is full');
        store.append(batch);
      },
      3,
    );
    try {
      log.open();
      for (let i = 0; i < 3; i++) log.append({ action: 'pull.blob', bytes: i });
      store.queue({ action: 'admin.cert.revoke', actor: 'cli', decision: 'allow', reason: 'lost laptop' });
      assert.equal(log.chainQueued(), 0, 'nothing taken while full');
      assert.equal(store.queued(0).length, 1, 'the row waits in the outbox');
      broken = false;
      // Taken by the log itself once a batch is stored: nothing else would ask again before the command line's next change.
      await waitFor(async () => store.count() === 4, { timeoutMs: 3000, what: 'the outbox row chained and stored' });
      assert.equal(await log.stored(3000), true);
      const stored = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)];
      assert.deepEqual(stored.map((e) => e.action), ['pull.blob', 'pull.blob', 'pull.blob', 'admin.cert.revoke']);
    } finally {
      await log.close();
      db.close();
    }
  });

  test('an export waits for queued events to be stored and then includes them', async () => {
    const { dir, db, store } = freshStore();
    const writer = startAuditWriter(path.join(dir, DB_FILE));
    const log = new AuditLog(store, key, 'test-key', (batch) => writer.write(batch));
    try {
      log.open();
      for (let i = 0; i < 50; i++) log.append({ action: 'pull.manifest', status: 200, bytes: i });
      const text = await exported(log);
      const lines = text.trimEnd().split('\n').map((l) => JSON.parse(l) as { seq: number; type?: string });
      assert.equal(lines.length, 51, 'fifty events and the checkpoint');
      assert.equal(lines[49].seq, 50);
      assert.equal(lines[50].type, 'checkpoint');
    } finally {
      await log.close();
      await writer.close();
      db.close();
    }
  });
});

describe('the start-up integrity check', () => {
  test('a truncated tail is reported once it is found, and the chain that grows over the lost seqs gets a checkpoint of its own', async () => {
    const { db, store } = freshStore();
    // start opens the log as a server start does, recording a problem the way runtime.ts does.
    const start = (): { log: AuditLog; problem: string | null } => {
      const log = new AuditLog(store, key, keyIdOf(key));
      const { problem } = log.open();
      if (problem) log.append({ action: 'audit.integrity', decision: 'deny', reason: problem });
      return { log, problem };
    };
    try {
      const first = start();
      for (let i = 0; i < 14; i++) first.log.append({ action: 'pull.blob', status: 200, bytes: i });
      assert.equal((await first.log.checkpoint())?.seq, 14);
      await first.log.close();
      // Someone deletes the last two events (seq 13 and 14) that the checkpoint signed.
      db.prepare('DELETE FROM audit WHERE seq >= 13').run();

      const second = start();
      assert.match(second.problem ?? '', /tail is missing/);
      second.log.append({ action: 'pull.blob', status: 200, bytes: 99 });
      assert.deepEqual(second.log.head().seq, 14, 'the integrity event and one more reach the seq of the old checkpoint');
      assert.equal((await second.log.checkpoint())?.seq, 14, 'the new head is signed, replacing the checkpoint of the lost event 14');
      await second.log.close();

      const third = start();
      assert.equal(third.problem, null, 'the next start finds the chain and its checkpoint in agreement');
      await third.log.close();
    } finally {
      db.close();
    }
  });
});

describe('text that UTF-8 cannot hold', () => {
  test('a lone surrogate in an admin\'s reason is stored as U+FFFD, and the export verifies', async () => {
    const { dir, db, store } = freshStore();
    const writer = startAuditWriter(path.join(dir, DB_FILE));
    const log = new AuditLog(store, key, keyIdOf(key), (batch) => writer.write(batch));
    try {
      log.open();
      // JSON allows "\udc00"; SQLite stores text as UTF-8, which has no form for it.
      log.append({ action: 'admin.image.revoke', actor: 'ad\ud800min', reason: 'x\udc00y', repository: 'docker.io/library/a', reference: '\udbff' });
      log.append({ action: 'admin.image.revoke', reason: 'paired \ud83d\ude00 stays' });
      const r = await verified(await exported(log));
      assert.ok(r.ok, JSON.stringify(r));
      const stored = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)];
      assert.equal(stored[0].reason, 'x\ufffdy');
      assert.equal(stored[0].actor, 'ad\ufffdmin');
      assert.equal(stored[0].reference, '\ufffd');
      assert.equal(stored[1].reason, 'paired \u{1f600} stays');
    } finally {
      await log.close();
      await writer.close();
      db.close();
    }
  });
});

describe('an export of a time range', () => {
  test('holds every event from the first to the last one in the range, so a clock stepped back inside it leaves no gap', async () => {
    const { db, store } = freshStore();
    try {
      // seq 3 was stamped after the clock stepped back an hour: by time alone it falls outside the range.
      const times = ['2026-12-02T10:00:01.000Z', '2026-12-02T10:00:03.000Z', '2026-12-02T09:00:03.500Z', '2026-12-02T10:00:03.700Z', '2026-12-02T10:00:09.000Z'];
      let prev = ZERO_HASH;
      const chain = times.map((time, i) => {
        const e = chainEvent({ time, action: 'pull.manifest', decision: 'allow', status: 200 }, i + 1, prev);
        prev = e.hash;
        return e;
      });
      store.append(chain);
      const log = new AuditLog(store, key, keyIdOf(key));
      log.open();
      const text = await exported(log, '2026-12-02T10:00:02.000Z', '2026-12-02T10:00:05.000Z');
      await log.close();
      const lines = text.trim().split('\n').map((l) => JSON.parse(l) as { seq: number; type?: string });
      assert.deepEqual(lines.map((l) => l.type ?? l.seq), [2, 3, 4, 'checkpoint']);
      const r = await verified(text);
      assert.ok(r.ok, JSON.stringify(r));
    } finally {
      db.close();
    }
  });
});

describe('events the command line queued', () => {
  test('a queued row whose fields do not fit the audit columns is chained as audit.outbox, and the rows around it are stored', async () => {
    const { db, store } = freshStore();
    try {
      store.queue({ action: 'admin.cert.issue', actor: 'cli', reference: 'before', decision: 'allow' });
      // An edited database: each row is JSON of the right shape with a value the audit table would refuse.
      const put = db.prepare('INSERT INTO audit_outbox (fields, created_at) VALUES (?, ?)');
      for (const fields of [{ action: 'x', status: 'abc' }, { action: 'x', bytes: 1.5 }, { action: 'x', actor: 5 }, { action: '' }, { action: 'x', bytes: -1 }]) {
        put.run(JSON.stringify(fields), new Date().toISOString());
      }
      store.queue({ action: 'admin.cert.revoke', actor: 'cli', reference: 'after', decision: 'allow', status: 200, bytes: 0 });
      const key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      const log = new AuditLog(store, key, keyIdOf(key));
      log.open();
      assert.equal(log.chainQueued(), 7);
      assert.equal(await log.stored(), true);
      const stored = [...store.range('', '9999', Number.MAX_SAFE_INTEGER)];
      assert.deepEqual(
        stored.map((e) => [e.action, e.reference]),
        [['admin.cert.issue', 'before'], ...Array(5).fill(['audit.outbox', null]), ['admin.cert.revoke', 'after']],
      );
      for (const e of stored.filter((x) => x.action === 'audit.outbox')) assert.match(String(e.reason), /^queued row [0-9]+ is not an audit event; dropped$/);
      await waitUntil(() => store.queued(0).length === 0, 'the queued rows go once their events are stored');
      await log.close();
    } finally {
      db.close();
    }
  });
});

async function waitUntil(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(what);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('checkpoints', () => {
  test('a checkpoint signs the last stored event, not one appended while it was being made', async () => {
    const { db, store } = freshStore();
    try {
      const key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      const log = new AuditLog(store, key, keyIdOf(key));
      log.open();
      const first = log.append({ action: 'registry.ping', decision: 'allow' });
      assert.ok(first);
      assert.equal(await log.stored(), true);
      const signing = log.checkpoint();
      const queued = log.append({ action: 'registry.ping', decision: 'allow' });
      const cp = await signing;
      assert.equal(cp?.seq, first.seq, `signed seq ${cp?.seq}, while seq ${queued?.seq} was still queued`);
      assert.equal(cp?.hash, first.hash);
      await log.close();
    } finally {
      db.close();
    }
  });
});

describe('under steady traffic', () => {
  test('an event is known stored within a batch or two although the queue is never empty, and the outbox empties', async () => {
    const { db, store } = freshStore();
    try {
      store.queue({ action: 'admin.cert.issue', actor: 'cli', reference: 'busy', decision: 'allow' });
      const key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      // Each batch takes 15 ms to write, and an event arrives every 3 ms: there is always one queued.
      const log = new AuditLog(store, key, keyIdOf(key), async (events) => {
        await new Promise((resolve) => setTimeout(resolve, 15));
        store.append(events);
      });
      log.open();
      const traffic = setInterval(() => log.append({ action: 'registry.ping', decision: 'allow' }), 3);
      try {
        assert.equal(log.chainQueued(), 1);
        assert.equal(await log.stored(10_000), true, 'stored() resolves while traffic goes on');
        await waitUntil(() => store.queued(0).length === 0, 'the outbox row goes while traffic goes on');
        const cp = await log.checkpoint(10_000);
        assert.ok(cp !== null && cp.seq > 1, 'and checkpoints are made');
      } finally {
        clearInterval(traffic);
      }
      await log.close();
    } finally {
      db.close();
    }
  });
});
