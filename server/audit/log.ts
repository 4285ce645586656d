// AuditLog chains events as they happen and appends them in batches (one transaction per tick), so the request
// path never waits on SQLite; a signed checkpoint is stored periodically so truncating the table's tail shows.
import type { KeyObject } from 'node:crypto';
import type { AuditStore } from '../../storage/audit.js';
import { type AuditEvent, type AuditEventInput, chainEvent, type Checkpoint, hashEvent, signCheckpoint, ZERO_HASH } from './chain.js';
import { CSV_HEADER, toCsvRow, toJsonLine } from './format.js';

// AuditFields are what a caller says about an event; time, seq and the chain are added here.
export type AuditFields = Partial<Omit<AuditEventInput, 'time' | 'action'>> & { action: string };

const FLUSH_MS = 20;
const CHECKPOINT_MS = 60000;
const RETRY_MS = 1000;
const EXPORT_BATCH = 512;

// AuditLog is the one writer of the audit chain.
export class AuditLog {
  private readonly store: AuditStore;
  private readonly key: KeyObject;
  private readonly keyId: string;
  private seq = 0;
  private prev = ZERO_HASH;
  private pending: AuditEvent[] = [];
  private timer: NodeJS.Timeout | null = null;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private lastCheckpointSeq = 0;
  private closed = false;
  onAppend: (e: AuditEvent) => void = () => {};
  onFlush: (count: number, ms: number) => void = () => {};
  onError: (err: Error, queued: number) => void = () => {};

  constructor(store: AuditStore, key: KeyObject, keyId: string) {
    this.store = store;
    this.key = key;
    this.keyId = keyId;
  }

  // open continues the chain from the last stored event and checks the stored tail against the last checkpoint.
  open(): { problem: string | null } {
    const last = this.store.last();
    if (last) {
      this.seq = last.seq;
      this.prev = last.hash;
    }
    const cp = this.store.lastCheckpoint();
    this.lastCheckpointSeq = cp?.seq ?? 0;
    this.checkpointTimer = setInterval(() => this.checkpoint(), CHECKPOINT_MS);
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
    const e = chainEvent(
      {
        time: new Date().toISOString(),
        actor: fields.actor ?? null,
        actorSerial: fields.actorSerial ?? null,
        role: fields.role ?? null,
        ip: fields.ip ?? null,
        action: fields.action,
        repository: fields.repository ?? null,
        reference: fields.reference ?? null,
        digest: fields.digest ?? null,
        decision: fields.decision ?? null,
        reason: fields.reason ?? null,
        status: fields.status ?? null,
        bytes: fields.bytes ?? null,
      },
      this.seq + 1,
      this.prev,
    );
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

  // flush writes the queued events in one transaction.
  flush(): void {
    if (this.closed) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.pending.length === 0) return;
    const batch = this.pending;
    const started = performance.now();
    try {
      this.store.append(batch);
    } catch (err) {
      // The events stay queued, in order, and are written by a later tick once the database accepts them again
      // (a full disk): dropping them would leave a gap in the chain.
      this.onError(err as Error, batch.length);
      if (!this.timer) {
        this.timer = setTimeout(() => this.flush(), RETRY_MS);
        this.timer.unref();
      }
      return;
    }
    this.pending = [];
    this.onFlush(batch.length, performance.now() - started);
  }

  // checkpoint signs and stores the chain's head when it moved since the last checkpoint.
  checkpoint(): Checkpoint | null {
    this.flush();
    if (this.pending.length > 0 || this.seq === 0 || this.seq === this.lastCheckpointSeq) return null;
    const cp = signCheckpoint(this.key, this.keyId, this.seq, this.prev);
    this.store.saveCheckpoint(cp);
    this.lastCheckpointSeq = cp.seq;
    return cp;
  }

  // head is the last event's seq and hash.
  head(): { seq: number; hash: string } {
    return { seq: this.seq, hash: this.prev };
  }

  // export yields the lines of an export of [since, until): JSONL ends with a checkpoint signed over its last event.
  *export(since: string, until: string, format: 'jsonl' | 'csv'): Generator<string> {
    this.flush();
    const maxSeq = this.seq;
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

  // close writes what is queued and a final checkpoint.
  close(): void {
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.checkpoint();
    this.closed = true;
  }
}
