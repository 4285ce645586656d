// The audit chain's rows: appended in batches, never updated or deleted, read back in order for exports.
import { Worker } from 'node:worker_threads';
import type { AuditEvent, Checkpoint } from '../server/audit/chain.js';
import type { AuditFields } from '../server/audit/log.js';
import type { Db } from './db.js';
import { now } from './db.js';

// INSERT_AUDIT appends one row; parameters are positional (binding by name costs a property lookup per column, a fifth
// of the insert), in the order of auditRow.
export const INSERT_AUDIT = `INSERT INTO audit (seq, time, actor, actor_serial, role, ip, action, repository, reference, digest, decision, reason, status, bytes, prev, hash)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

// AuditRowValues are an event's column values in the order of INSERT_AUDIT.
export type AuditRowValues = (string | number | null)[];

// auditRow lists an event's values for INSERT_AUDIT.
export function auditRow(e: AuditEvent): AuditRowValues {
  return [e.seq, e.time, e.actor, e.actorSerial, e.role, e.ip, e.action, e.repository, e.reference, e.digest, e.decision, e.reason, e.status, e.bytes, e.prev, e.hash];
}

interface AuditRow {
  seq: number; time: string; actor: string | null; actor_serial: string | null; role: string | null; ip: string | null; action: string;
  repository: string | null; reference: string | null; digest: string | null; decision: string | null; reason: string | null;
  status: number | null; bytes: number | null; prev: string; hash: string;
}

const event = (r: AuditRow): AuditEvent => ({
  seq: r.seq, time: r.time, actor: r.actor, actorSerial: r.actor_serial, role: r.role, ip: r.ip, action: r.action, repository: r.repository,
  reference: r.reference, digest: r.digest, decision: r.decision, reason: r.reason, status: r.status, bytes: r.bytes, prev: r.prev, hash: r.hash,
});

// OUTBOX_TEXT and OUTBOX_COUNTS are the fields a queued event may carry besides its action (the chain adds seq, time,
// prev and hash).
const OUTBOX_TEXT = new Set(['actor', 'actorSerial', 'role', 'ip', 'repository', 'reference', 'digest', 'decision', 'reason']);
const OUTBOX_COUNTS = new Set(['status', 'bytes']);

// parseFields reads a queued event's fields, or null when the row holds anything else. Each field must have its
// column's type: one row that the audit table refused would hold back every event queued with it, at every start.
function parseFields(text: string): AuditFields | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  if (typeof o.action !== 'string' || o.action === '') return null;
  for (const [k, x] of Object.entries(o)) {
    if (k === 'action' || x === null) continue;
    const fits = OUTBOX_TEXT.has(k) ? typeof x === 'string' : OUTBOX_COUNTS.has(k) && typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
    if (!fits) return null;
  }
  return o as AuditFields;
}

// createAuditStore prepares the audit statements once.
export function createAuditStore(db: Db) {
  const insert = db.prepare(INSERT_AUDIT);
  const last = db.prepare<[], AuditRow>('SELECT * FROM audit ORDER BY seq DESC LIMIT 1');
  const bySeq = db.prepare<[number], AuditRow>('SELECT * FROM audit WHERE seq = ?');
  const bounds = db.prepare<[string, string, number], { first: number | null; last: number | null }>(
    'SELECT min(seq) AS first, max(seq) AS last FROM audit WHERE time >= ? AND time < ? AND seq <= ?',
  );
  const span = db.prepare<[number, number, number], AuditRow>('SELECT * FROM audit WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?');
  const count = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM audit');
  const cpLast = db.prepare<[], { seq: number; hash: string; key_id: string; signature: string }>('SELECT * FROM checkpoints ORDER BY seq DESC LIMIT 1');
  const cpInsert = db.prepare<[number, string, string, string, string]>('INSERT OR REPLACE INTO checkpoints (seq, hash, key_id, signature, created_at) VALUES (?, ?, ?, ?, ?)');
  const outboxPut = db.prepare<[string, string]>('INSERT INTO audit_outbox (fields, created_at) VALUES (?, ?)');
  const outboxAfter = db.prepare<[number], { id: number; fields: string }>('SELECT id, fields FROM audit_outbox WHERE id > ? ORDER BY id');
  const outboxDrop = db.prepare<[number]>('DELETE FROM audit_outbox WHERE id <= ?');
  const appendMany = db.transaction((events: AuditEvent[]) => {
    for (const e of events) insert.run(auditRow(e));
  });

  return {
    // append stores a batch of chained events in one transaction.
    append: (events: AuditEvent[]): void => appendMany(events),
    last: (): AuditEvent | null => {
      const r = last.get();
      return r ? event(r) : null;
    },
    get: (seq: number): AuditEvent | null => {
      const r = bySeq.get(seq);
      return r ? event(r) : null;
    },
    count: (): number => count.get()?.n ?? 0,
    // range iterates, a page at a time, every event from the first to the last (up to maxSeq) stamped since <= time <
    // until. The span follows seq, not time, so that a range stays one unbroken piece of the chain even when the clock
    // stepped back inside it. Pages, rather than one open iterator, leave the connection free for other statements.
    *range(since: string, until: string, maxSeq: number, pageSize = 2000): Generator<AuditEvent> {
      const b = bounds.get(since, until, maxSeq);
      if (!b || b.first === null || b.last === null) return;
      let after = b.first - 1;
      for (;;) {
        const rows = span.all(after, b.last, pageSize);
        for (const r of rows) yield event(r);
        if (rows.length < pageSize) return;
        after = rows[rows.length - 1].seq;
      }
    },
    lastCheckpoint: (): Checkpoint | null => {
      const r = cpLast.get();
      return r ? { type: 'checkpoint', seq: r.seq, hash: r.hash, keyId: r.key_id, signature: r.signature } : null;
    },
    saveCheckpoint: (cp: Checkpoint): void => {
      cpInsert.run(cp.seq, cp.hash, cp.keyId, cp.signature, now());
    },
    // queue leaves an event for the server to chain: the command line cannot append to a chain a server may be extending.
    queue: (fields: AuditFields): void => {
      outboxPut.run(JSON.stringify(fields), now());
    },
    // queued lists the waiting events after id, oldest first; a row that is not an event's fields is skipped.
    queued: (afterId: number): { id: number; fields: AuditFields | null }[] =>
      outboxAfter.all(afterId).map((r) => ({ id: r.id, fields: parseFields(r.fields) })),
    // unqueue drops the waiting events up to id, once they are stored in the chain.
    unqueue: (id: number): void => {
      outboxDrop.run(id);
    },
  };
}

// AuditStore is the audit rows' operations.
export type AuditStore = ReturnType<typeof createAuditStore>;

// AuditWriter appends batches of audit events on a thread of its own (storage/audit-writer.mjs), with its own connection
// to the database: the request thread neither binds the rows nor waits for a commit or a WAL checkpoint's fsync.
export interface AuditWriter {
  // write resolves once the batch is committed, and rejects (the batch not stored) when it cannot be.
  write(events: AuditEvent[]): Promise<void>;
  close(): Promise<void>;
}

// WRITER_MODULE is the writer thread's module, next to this file (build copies it into dist/storage).
const WRITER_MODULE = new URL('./audit-writer.mjs', import.meta.url);

// startAuditWriter starts the writer thread for the database file; a thread that dies fails its batches and is started
// again by the next write.
export function startAuditWriter(file: string): AuditWriter {
  let worker: Worker | null = null;
  let nextId = 1;
  const waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  const failAll = (err: Error): void => {
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  const spawn = (): Worker => {
    const w = new Worker(WRITER_MODULE, { workerData: { file, insertSql: INSERT_AUDIT } });
    w.on('message', (m: { id: number; error: string | null }) => {
      const p = waiting.get(m.id);
      waiting.delete(m.id);
      if (waiting.size === 0) w.unref();
      if (m.error === null) p?.resolve();
      else p?.reject(new Error(m.error));
    });
    w.on('error', (err) => failAll(err));
    w.on('exit', (code) => {
      if (worker === w) worker = null;
      failAll(new Error(`the audit writer thread stopped (exit code ${code})`));
    });
    return w;
  };
  return {
    write(events) {
      worker ??= spawn();
      const id = nextId++;
      const rows = events.map(auditRow);
      const w = worker;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        // Only a write under way keeps the process alive.
        w.ref();
        w.postMessage({ id, rows });
      });
    },
    async close() {
      const w = worker;
      worker = null;
      if (!w) return;
      // The thread finishes the batch under way (at most the database's busy timeout), then closes its connection.
      const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
      w.ref();
      w.postMessage({ close: true });
      await exited;
    },
  };
}
