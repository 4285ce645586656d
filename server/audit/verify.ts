import type { KeyObject } from 'node:crypto';
import { open } from 'node:fs/promises';
import {
  AUDIT_FIELDS,
  ZERO_HASH,
  hashEvent,
  keyIdOf,
  verifyCheckpoint,
  type AuditEvent,
  type Checkpoint,
} from './chain.js';

// The verifier behind `airlock audit verify` (SPEC §7). It reads an export line by
// line and keeps only the previous event's seq and hash, so a log of any size is
// checked in constant memory. It stops at the first fault and names it.

/** VerifyResult is either an intact export's range and checkpoint, or the first fault with its seq and line. */
export type VerifyResult =
  | {
      ok: true;
      events: number;
      firstSeq: number;
      lastSeq: number;
      checkpoint: Checkpoint;
      /** False when no key was given, so only the chain and the checkpoint's seq/hash were checked. */
      signatureVerified: boolean;
    }
  | { ok: false; badSeq: number | null; line: number; error: string };

const CHECKPOINT_FIELDS = ['type', 'seq', 'hash', 'keyId', 'signature'] as const;
// BLANK is a line of JSON whitespace only. What trim() strips besides (U+00A0, U+2028, U+FEFF, …) is text, which a line
// after the checkpoint may not carry: scripts/verify-audit.sh, whose Python strips other characters, refuses it too.
const BLANK = /^[ \t\r]*$/;
const HEX64 = /^[0-9a-f]{64}$/;
const RFC3339_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const NULLABLE_TEXT = [
  'actor',
  'actorSerial',
  'role',
  'ip',
  'repository',
  'reference',
  'digest',
  'decision',
  'reason',
] as const satisfies readonly (keyof AuditEvent)[];

type ParsedLine =
  | { kind: 'event'; event: AuditEvent }
  | { kind: 'checkpoint'; checkpoint: Checkpoint }
  | { kind: 'invalid'; seq: number | null; error: string };

function isSeq(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
}

// -0 passes as 0 here; numberSpellingError refuses it as written.
function isCount(v: unknown): boolean {
  return v === null || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0);
}

function isNullableText(v: unknown): boolean {
  return v === null || typeof v === 'string';
}

// JSON.parse keeps the last of duplicate keys while other tools keep the first, so a
// line like {"decision":"deny",…,"decision":"allow"} would hash one value and show
// another. Values here are flat primitives, so the pairs in the text are the
// top-level commas (outside strings) plus one.
function pairCount(text: string): number {
  let commas = 0;
  for (const ch of outsideStrings(text)) if (ch === ',') commas++;
  return commas + 1;
}

// airlock writes its numbers as plain non-negative integers. JSON.parse reads 200.0 and 2e2 as 200 and -0 as 0, so a
// byte edit to one of them hashes (RFC 8785) and signs the same, and a tool that hashes the numbers as written would
// not: only plain non-negative integers are accepted, on every line, so that every verifier agrees. Outside strings
// and the literals, what is left of a JSON line is punctuation and numbers, so any of these characters is a number's.
function numberSpellingError(text: string): string | null {
  const bare = outsideStrings(text).replace(/\b(?:null|true|false)\b/g, '');
  if (bare.includes('-')) return 'a number is written with a minus sign (no audit field is negative, and -0 reads as 0)';
  if (/[.eE+]/.test(bare)) return 'a number is not written as a plain integer';
  return null;
}

function outsideStrings(text: string): string {
  return text.replace(/"(?:[^"\\]|\\.)*"/g, '""');
}

function fieldSetError(obj: Record<string, unknown>, fields: readonly string[]): string | null {
  const missing = fields.filter((f) => !Object.hasOwn(obj, f));
  const extra = Object.keys(obj).filter((k) => !fields.includes(k));
  if (missing.length === 0 && extra.length === 0) return null;
  const parts: string[] = [];
  if (missing.length > 0) parts.push(`missing ${missing.join(', ')}`);
  if (extra.length > 0) parts.push(`unexpected ${extra.join(', ')}`);
  return `wrong fields (${parts.join('; ')})`;
}

function parseLine(text: string): ParsedLine {
  // What an editor that saved the export "as UTF-8 with BOM" adds; JSON allows no U+FEFF before a value.
  if (text.startsWith('\ufeff')) {
    return { kind: 'invalid', seq: null, error: 'line starts with a byte order mark (U+FEFF): save the export as UTF-8 without one' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'invalid', seq: null, error: 'line is not valid JSON' };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { kind: 'invalid', seq: null, error: 'line is not a JSON object' };
  }
  const obj = value as Record<string, unknown>;
  const seq = isSeq(obj.seq) ? obj.seq : null;
  const invalid = (error: string): ParsedLine => ({ kind: 'invalid', seq, error });
  const spelling = numberSpellingError(text);
  if (spelling !== null) return invalid(spelling);

  if (Object.hasOwn(obj, 'type')) {
    if (obj.type !== 'checkpoint') return invalid(`unknown line type ${JSON.stringify(obj.type)}`);
    const wrong = fieldSetError(obj, CHECKPOINT_FIELDS);
    if (wrong !== null) return invalid(`checkpoint has ${wrong}`);
    if (!isSeq(obj.seq)) return invalid('checkpoint seq is not a positive integer');
    if (typeof obj.hash !== 'string' || !HEX64.test(obj.hash)) return invalid('checkpoint hash is not 64 hex digits');
    if (typeof obj.keyId !== 'string' || obj.keyId === '') return invalid('checkpoint keyId is not a string');
    if (typeof obj.signature !== 'string' || obj.signature === '') {
      return invalid('checkpoint signature is not a string');
    }
    if (pairCount(text) !== CHECKPOINT_FIELDS.length) return invalid('checkpoint has a duplicate key');
    return {
      kind: 'checkpoint',
      checkpoint: { type: 'checkpoint', seq: obj.seq, hash: obj.hash, keyId: obj.keyId, signature: obj.signature },
    };
  }

  const wrong = fieldSetError(obj, AUDIT_FIELDS);
  if (wrong !== null) return invalid(`event has ${wrong}`);
  if (seq === null) return invalid('seq is not a positive integer');
  if (typeof obj.time !== 'string' || !RFC3339_MS_UTC.test(obj.time) || Number.isNaN(Date.parse(obj.time))) {
    return invalid('time is not an RFC 3339 UTC time with milliseconds');
  }
  if (typeof obj.action !== 'string' || obj.action === '') return invalid('action is not a non-empty string');
  for (const field of NULLABLE_TEXT) {
    if (!isNullableText(obj[field])) return invalid(`${field} is neither a string nor null`);
  }
  if (!isCount(obj.status)) return invalid('status is neither a non-negative integer nor null');
  if (!isCount(obj.bytes)) return invalid('bytes is neither a non-negative integer nor null');
  if (typeof obj.prev !== 'string' || !HEX64.test(obj.prev)) return invalid('prev is not 64 hex digits');
  if (typeof obj.hash !== 'string' || !HEX64.test(obj.hash)) return invalid('hash is not 64 hex digits');
  if (pairCount(text) !== AUDIT_FIELDS.length) return invalid('event has a duplicate key');
  // Every field was checked above, so the object is an AuditEvent.
  return { kind: 'event', event: obj as unknown as AuditEvent };
}

/** verifyAuditExport checks a JSONL export (events then one signed checkpoint) line by line, in constant memory. */
export async function verifyAuditExport(
  input: AsyncIterable<string>,
  publicKey: KeyObject | null,
): Promise<VerifyResult> {
  const expectedKeyId = publicKey === null ? null : keyIdOf(publicKey);
  let line = 0;
  let lastContentLine = 0;
  let events = 0;
  let firstSeq = 0;
  let last: { seq: number; hash: string } | null = null;
  let checkpoint: Checkpoint | null = null;
  let signatureVerified = false;
  const fail = (badSeq: number | null, at: number, error: string): VerifyResult => ({
    ok: false,
    badSeq,
    line: at,
    error,
  });

  for await (const raw of input) {
    line++;
    if (BLANK.test(raw)) {
      if (checkpoint !== null) continue;
      const where = last === null ? 'before the first event' : `after seq ${last.seq}`;
      return fail(null, line, `blank line ${where}`);
    }
    lastContentLine = line;
    const parsed = parseLine(raw);
    if (checkpoint !== null) {
      const seq =
        parsed.kind === 'event' ? parsed.event.seq : parsed.kind === 'checkpoint' ? parsed.checkpoint.seq : parsed.seq;
      return fail(seq, line, `unexpected line after the checkpoint for seq ${checkpoint.seq}`);
    }
    if (parsed.kind === 'invalid') {
      const where = last === null ? '' : ` (after seq ${last.seq})`;
      return fail(parsed.seq, line, `${parsed.error}${where}`);
    }

    if (parsed.kind === 'checkpoint') {
      const cp = parsed.checkpoint;
      if (last === null) return fail(cp.seq, line, 'checkpoint with no events before it');
      if (cp.seq !== last.seq) {
        const error = `checkpoint is for seq ${cp.seq} but the last event is seq ${last.seq} (truncated or forged)`;
        return fail(cp.seq, line, error);
      }
      if (cp.hash !== last.hash) return fail(cp.seq, line, `checkpoint hash does not match the hash of seq ${last.seq}`);
      if (publicKey !== null) {
        if (cp.keyId !== expectedKeyId) {
          return fail(cp.seq, line, `checkpoint names key ${cp.keyId}, but the verifying key is ${expectedKeyId}`);
        }
        if (!verifyCheckpoint(publicKey, cp)) return fail(cp.seq, line, 'checkpoint signature does not verify');
        signatureVerified = true;
      }
      checkpoint = cp;
      continue;
    }

    const e = parsed.event;
    if (hashEvent(e) !== e.hash) return fail(e.seq, line, 'hash does not match the event');
    if (last === null) {
      if (e.seq === 1 && e.prev !== ZERO_HASH) {
        return fail(e.seq, line, 'the first event (seq 1) must have prev of 64 zeros');
      }
      firstSeq = e.seq;
    } else {
      if (e.seq !== last.seq + 1) {
        return fail(e.seq, line, `seq ${e.seq} follows seq ${last.seq}: an event is missing or out of order`);
      }
      if (e.prev !== last.hash) return fail(e.seq, line, `prev does not match the hash of seq ${last.seq}`);
    }
    last = { seq: e.seq, hash: e.hash };
    events++;
  }

  if (last === null) return fail(null, Math.max(line, 1), 'the export holds no events');
  if (checkpoint === null) {
    const error = `the export ends at seq ${last.seq} without a signed checkpoint (truncated)`;
    return fail(null, lastContentLine + 1, error);
  }
  return { ok: true, events, firstSeq, lastSeq: last.seq, checkpoint, signatureVerified };
}

// MAX_LINE bounds a line of an export, in bytes: an event is well under 64 KiB, and a file without line breaks must not
// be read into one string.
const MAX_LINE = 1 << 20;

// UTF8 decodes a line, refusing bytes that are not UTF-8. A lenient decoder reads each such byte as U+FFFD, so an
// export whose U+FFFD (EF BF BD, what airlock writes for a client's control characters) was replaced by one byte FF
// would hash and verify the same, where every other reader sees other bytes.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// NotAnExport is a line that cannot be read as text at all: too long, or not UTF-8.
class NotAnExport extends Error {
  constructor(
    readonly line: number,
    why: string,
  ) {
    super(`line ${line} ${why}: not an audit export`);
  }
}

/** verifyAuditFile verifies the JSONL export at `path`, streaming it; a missing or unreadable file rejects. */
export async function verifyAuditFile(path: string, publicKey: KeyObject | null): Promise<VerifyResult> {
  const handle = await open(path, 'r');
  const stream = handle.createReadStream();
  try {
    return await verifyAuditExport(splitLines(stream), publicKey);
  } catch (err) {
    if (err instanceof NotAnExport) return { ok: false, badSeq: null, line: err.line, error: err.message };
    throw err;
  } finally {
    stream.destroy();
  }
}

// splitLines yields the lines of a byte stream (LF or CRLF) as text, refusing one longer than MAX_LINE or not UTF-8. It
// splits the bytes before decoding them: a byte 0A is a line feed wherever it is in UTF-8.
async function* splitLines(input: AsyncIterable<Buffer>): AsyncGenerator<string> {
  let rest: Buffer = Buffer.alloc(0);
  let line = 0;
  const decode = (bytes: Buffer): string => {
    try {
      return UTF8.decode(bytes);
    } catch {
      throw new NotAnExport(line, 'holds bytes that are not UTF-8');
    }
  };
  for await (const chunk of input) {
    const bytes = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
    let start = 0;
    for (let end = bytes.indexOf(10); end >= 0; end = bytes.indexOf(10, start)) {
      line++;
      if (end - start > MAX_LINE) throw new NotAnExport(line, `is longer than ${MAX_LINE} bytes`);
      yield decode(bytes.subarray(start, end > start && bytes[end - 1] === 13 ? end - 1 : end));
      start = end + 1;
    }
    rest = bytes.subarray(start);
    if (rest.length > MAX_LINE) throw new NotAnExport(line + 1, `is longer than ${MAX_LINE} bytes`);
  }
  if (rest.length > 0) {
    line++;
    yield decode(rest);
  }
}

/** formatVerifyResult is the one-line summary `airlock audit verify` prints. */
export function formatVerifyResult(r: VerifyResult): string {
  if (r.ok) {
    const range = `events ${r.firstSeq}..${r.lastSeq} (${r.events} events)`;
    if (r.signatureVerified) return `audit log intact: ${range}, checkpoint signed by ${r.checkpoint.keyId}`;
    return `audit log chain intact: ${range}, checkpoint signature by ${r.checkpoint.keyId} NOT checked (no key given)`;
  }
  const where = r.badSeq === null ? `line ${r.line}` : `seq ${r.badSeq} (line ${r.line})`;
  return `audit log NOT intact at ${where}: ${r.error}`;
}
