// AuditLog chains events as they happen and appends them in batches (one transaction per tick, written by the sink it
// is given: in the server, a thread of its own), so the request path never waits on SQLite; a signed checkpoint is
// stored periodically so truncating the table's tail shows.
import type { KeyObject } from 'node:crypto';
import type { AuditStore } from '../../storage/audit.js';
import { now } from '../../storage/db.js';
import { type AuditEvent, type AuditEventInput, chainEvent, type Checkpoint, hashEvent, signCheckpoint, ZERO_HASH } from './chain.js';
import { CSV_HEADER, toCsvRow, toJsonLine } from './format.js';

// AuditFields are what a caller says about an event; time, seq and the chain are added here.
export type AuditFields = Partial<Omit<AuditEventInput, 'time' | 'action'>> & { action: string };

// AuditSink stores a batch of chained events, in order; it rejects when the batch was not stored.
export type AuditSink = (events: AuditEvent[]) => Promise<void>;

const FLUSH_MS = 20;
const CHECKPOINT_MS = 60000;
const RETRY_MS = 1000;
const EXPORT_BATCH = 512;
// EXPORT_WAIT_MS bounds how long an export waits for queued events to be stored; it exports what is stored.
const EXPORT_WAIT_MS = 2000;
// CLOSE_WAIT_MS bounds how long close() waits for the last events (a full disk would hold them forever).
const CLOSE_WAIT_MS = 5000;
// MAX_QUEUED bounds the events waiting for the database, at about 2.9 KB each (145 MiB). A database that refuses
// writes for long (a full disk, a held lock) would otherwise grow the queue until the process ran out of memory and
// lost every one of them. Past the bound the server refuses requests (see full) and events are counted, not queued.
export const MAX_QUEUED = 50000;

// AuditLog is the one writer of the audit chain.
export class AuditLog {
  private readonly store: AuditStore;
  private readonly key: KeyObject;
  private readonly keyId: string;
  private seq = 0;
  private prev = ZERO_HASH;
  // stored is the last event known to be stored: what a checkpoint may sign.
  private storedHead = { seq: 0, hash: ZERO_HASH };
  private pending: AuditEvent[] = [];
  private writing = false;
  // inFlight is how many events the batch being written holds: they come back to the queue if it fails.
  private inFlight = 0;
  // waiters wait for every event up to their seq to be stored.
  private waiters: { seq: number; done: () => void }[] = [];
  private readonly sink: AuditSink;
  private timer: NodeJS.Timeout | null = null;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private lastCheckpointSeq = 0;
  private lastCheckpointHash: string | null = null;
  private queuedSeen = 0;
  private readonly maxQueued: number;
  // unrecorded counts, by action, the events not queued while the queue was full; one audit.overflow event says so.
  private unrecorded = new Map<string, number>();
  // outboxLeft is set when the outbox held more than the queue had room for: they are taken once a batch is stored.
  private outboxLeft = false;
  private closed = false;
  private finished = false;
  onAppend: (e: AuditEvent) => void = () => {};
  onFlush: (count: number, ms: number) => void = () => {};
  onError: (err: Error, queued: number) => void = () => {};
  // onOverflow is called when the queue becomes full, and when it has room again with how many events went unrecorded.
  onOverflow: (full: boolean, unrecorded: number) => void = () => {};

  constructor(store: AuditStore, key: KeyObject, keyId: string, sink?: AuditSink, maxQueued = MAX_QUEUED) {
    this.store = store;
    this.key = key;
    this.keyId = keyId;
    this.sink = sink ?? (async (events) => store.append(events));
    this.maxQueued = maxQueued;
  }

  // full tells whether the queue holds as many events as it may: the database has refused them for a while. The server
  // then refuses every request it would have to audit, with 503, until the events are stored.
  get full(): boolean {
    return this.pending.length + this.inFlight >= this.maxQueued;
  }

  // open continues the chain from the last stored event and checks the stored tail against the last checkpoint.
  open(): { problem: string | null } {
    const last = this.store.last();
    if (last) {
      this.seq = last.seq;
      this.prev = last.hash;
      this.storedHead = { seq: last.seq, hash: last.hash };
    }
    const cp = this.store.lastCheckpoint();
    this.lastCheckpointSeq = cp?.seq ?? 0;
    this.lastCheckpointHash = cp?.hash ?? null;
    this.checkpointTimer = setInterval(() => void this.checkpoint(), CHECKPOINT_MS);
    this.checkpointTimer.unref();
    if (!cp) return { problem: null };
    const at = this.store.get(cp.seq);
    if (!at) return { problem: `audit log tail is missing: the checkpoint covers seq ${cp.seq} but the last stored event is ${last?.seq ?? 0}` };
    if (at.hash !== cp.hash || hashEvent(at) !== at.hash) return { problem: `audit event ${cp.seq} does not match its signed checkpoint` };
    return { problem: null };
  }

  // append chains an event now and queues it for the next batch; after close() events have nowhere to go and are dropped.
  append(fields: AuditFields): AuditEvent | null {
    if (this.closed) return null;
    if (this.full) {
      if (this.unrecorded.size === 0) this.onOverflow(true, 0);
      this.unrecorded.set(fields.action, (this.unrecorded.get(fields.action) ?? 0) + 1);
      return null;
    }
    const e = chainEvent(fields, this.seq + 1, this.prev, now());
    this.seq = e.seq;
    this.prev = e.hash;
    this.pending.push(e);
    this.onAppend(e);
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref();
    }
    return e;
  }

  // chainQueued appends the events the command line left in the store's outbox (cert issue and revoke), each once. Their
  // rows go once those events are stored: a stop before then chains them again at the next start rather than never.
  chainQueued(): number {
    // The queue takes only what it has room for: the rest wait in the outbox, where nothing is lost.
    const room = this.maxQueued - this.pending.length - this.inFlight;
    this.outboxLeft = room <= 0;
    if (this.outboxLeft) return 0;
    const waiting = this.store.queued(this.queuedSeen);
    const rows = waiting.slice(0, room);
    this.outboxLeft = rows.length < waiting.length;
    if (rows.length === 0) return 0;
    for (const r of rows) {
      this.append(r.fields ?? { action: 'audit.outbox', decision: 'deny', reason: `queued row ${r.id} is not an audit event; dropped` });
    }
    const upTo = rows[rows.length - 1].id;
    const lastSeq = this.seq;
    this.queuedSeen = upTo;
    // The rows go only once their events are stored, however long the writes take (a full disk): gone before, an event
    // could be lost; left after, it would be chained again at the next start.
    const unqueue = (): void => {
      void this.storedUpTo(lastSeq).then((ok) => {
        if (!ok) {
          if (!this.finished) unqueue();
          return;
        }
        try {
          this.store.unqueue(upTo);
        } catch (err) {
          // The database went away (a stop): the rows stay and are chained again at the next start.
          this.onError(err as Error, 0);
        }
      });
    };
    unqueue();
    return rows.length;
  }

  // flush hands the queued events to the sink as one batch, unless a batch is being written (the next one follows it).
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.writing || this.finished) return;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.writing = true;
    this.inFlight = batch.length;
    const started = performance.now();
    this.sink(batch).then(
      () => {
        this.writing = false;
        this.inFlight = 0;
        const last = batch[batch.length - 1];
        this.storedHead = { seq: last.seq, hash: last.hash };
        this.wakeWaiters();
        this.onFlush(batch.length, performance.now() - started);
        this.recordOverflow();
        if (this.outboxLeft) this.chainQueued();
        this.flush();
      },
      (err: Error) => {
        // The events stay queued, in order, and are written by a later attempt once the database accepts them again
        // (a full disk): dropping them would leave a gap in the chain.
        this.writing = false;
        this.inFlight = 0;
        this.pending = batch.concat(this.pending);
        this.onError(err, this.pending.length);
        if (!this.timer) {
          this.timer = setTimeout(() => this.flush(), RETRY_MS);
          this.timer.unref();
        }
      },
    );
  }

  // stored resolves once every event appended so far is stored, or after waitMs with some still queued (false).
  stored(waitMs = EXPORT_WAIT_MS): Promise<boolean> {
    return this.storedUpTo(this.seq, waitMs);
  }

  // storedUpTo resolves once every event up to seq is stored, or after waitMs (false). Events appended later do not
  // hold it up: under steady traffic the queue is never empty, yet each event is stored within a batch or two.
  storedUpTo(seq: number, waitMs = EXPORT_WAIT_MS): Promise<boolean> {
    if (this.storedHead.seq >= seq) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, waitMs);
      const waiter = {
        seq,
        done: (): void => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      this.waiters.push(waiter);
      if (!this.writing) this.flush();
    });
  }

  // recordOverflow, once the queue has room again, chains one event that counts what went unrecorded while it was full.
  private recordOverflow(): void {
    if (this.unrecorded.size === 0 || this.full) return;
    let total = 0;
    const parts: string[] = [];
    for (const [action, n] of [...this.unrecorded].sort((a, b) => b[1] - a[1])) {
      total += n;
      if (parts.length < 20) parts.push(`${action} ${n}`);
    }
    const more = this.unrecorded.size > parts.length ? `, and ${this.unrecorded.size - parts.length} more actions` : '';
    this.unrecorded = new Map();
    this.append({
      action: 'audit.overflow',
      decision: 'deny',
      reason: `${total} events went unrecorded while ${this.maxQueued} waited for the audit database (requests were refused with 503 meanwhile): ${parts.join(', ')}${more}`,
    });
    this.onOverflow(false, total);
  }

  private wakeWaiters(): void {
    const ready = this.waiters.filter((w) => w.seq <= this.storedHead.seq);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.seq > this.storedHead.seq);
    for (const w of ready) w.done();
  }

  // checkpoint signs and stores the last event stored when it moved since the last checkpoint, after waiting a moment
  // for the events appended so far. It never signs one still queued: a crash then would leave a checkpoint over an
  // event the table lacks.
  async checkpoint(waitMs = EXPORT_WAIT_MS): Promise<Checkpoint | null> {
    await this.stored(waitMs);
    const head = this.storedHead;
    // The head is compared by hash too: after a truncated tail the chain grows again over the seq of a checkpoint that
    // signed the lost events, and that checkpoint must be replaced, not kept as if it covered the new head.
    if (head.seq === 0 || (head.seq === this.lastCheckpointSeq && head.hash === this.lastCheckpointHash)) return null;
    const cp = signCheckpoint(this.key, this.keyId, head.seq, head.hash);
    try {
      this.store.saveCheckpoint(cp);
    } catch (err) {
      // A full disk (or a failing one) refuses the checkpoint as it refuses events: the server keeps serving, and the
      // next tick (or the close) tries again over the head stored by then.
      this.onError(err as Error, this.pending.length);
      return null;
    }
    this.lastCheckpointSeq = cp.seq;
    this.lastCheckpointHash = cp.hash;
    return cp;
  }

  // head is the last event's seq and hash.
  head(): { seq: number; hash: string } {
    return { seq: this.seq, hash: this.prev };
  }

  // export yields the lines of an export of [since, until) of the stored events: JSONL ends with a checkpoint signed
  // over its last event. It first lets the events queued so far be stored (for a moment, not forever).
  async *export(since: string, until: string, format: 'jsonl' | 'csv'): AsyncGenerator<string> {
    const maxSeq = this.seq;
    await this.storedUpTo(maxSeq);
    let last: AuditEvent | null = null;
    let buf: string[] = [];
    if (format === 'csv') buf.push(CSV_HEADER + '\r\n');
    for (const e of this.store.range(since, until, maxSeq)) {
      buf.push(format === 'csv' ? toCsvRow(e) + '\r\n' : toJsonLine(e) + '\n');
      last = e;
      if (buf.length >= EXPORT_BATCH) {
        yield buf.join('');
        buf = [];
      }
    }
    if (format === 'jsonl' && last) buf.push(toJsonLine(signCheckpoint(this.key, this.keyId, last.seq, last.hash)) + '\n');
    if (buf.length > 0) yield buf.join('');
  }

  // close writes what is queued and a final checkpoint; later events are dropped.
  // close stores what it can within CLOSE_WAIT_MS and a last checkpoint, and says how many events were not stored: they
  // are lost, and the next start chains on from the last event stored.
  async close(): Promise<{ lost: number; first: number; last: number }> {
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.closed = true;
    await this.checkpoint(CLOSE_WAIT_MS);
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    return { lost: this.seq - this.storedHead.seq, first: this.storedHead.seq + 1, last: this.seq };
  }
}
