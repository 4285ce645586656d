import { createHash, createPublicKey, hash, sign, verify, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';

// canonicalize 2 is CommonJS whose typings declare `export default`; under NodeNext
// TypeScript would type a default import as `{ default }` while Node hands over the
// function itself, so load it with require and state its real shape.
const canonicalize = createRequire(import.meta.url)('canonicalize') as (input: unknown) => string | undefined;

// The audit chain (SPEC §7): each event's hash covers the previous event's hash and
// the RFC 8785 canonical JSON of the event itself, and a checkpoint signed by the
// mirror key pins the last hash of an export. Everything here is pure.

/** AuditEvent is one stored audit record, with exactly the fields of SPEC §7 in export order. */
export interface AuditEvent {
  seq: number;
  time: string;
  actor: string | null;
  actorSerial: string | null;
  role: string | null;
  ip: string | null;
  action: string;
  repository: string | null;
  reference: string | null;
  digest: string | null;
  decision: string | null;
  reason: string | null;
  status: number | null;
  bytes: number | null;
  prev: string;
  hash: string;
}

/** AUDIT_FIELDS lists the event fields in the order of SPEC §7, used for JSONL key order and CSV columns. */
export const AUDIT_FIELDS = [
  'seq',
  'time',
  'actor',
  'actorSerial',
  'role',
  'ip',
  'action',
  'repository',
  'reference',
  'digest',
  'decision',
  'reason',
  'status',
  'bytes',
  'prev',
  'hash',
] as const satisfies readonly (keyof AuditEvent)[];

/** AuditEventInput is what a caller records; the chain assigns seq, prev and hash. */
export type AuditEventInput = Omit<AuditEvent, 'seq' | 'prev' | 'hash'>;

/** ZERO_HASH is the `prev` of the first event ever recorded. */
export const ZERO_HASH = '0'.repeat(64);

/** Checkpoint is the signed last line of an export, pinning the hash of event `seq`. */
export interface Checkpoint {
  type: 'checkpoint';
  seq: number;
  hash: string;
  keyId: string;
  signature: string;
}

// HASHED_FIELDS are the hashed fields in RFC 8785 order (UTF-16 code units, which is what Array.prototype.sort compares).
const HASHED_FIELDS = AUDIT_FIELDS.filter((f) => f !== 'hash').sort();

// isPlain tells whether every hashed value is a string, null or a safe integer, the only values airlock writes.
function isPlain(e: Omit<AuditEvent, 'hash'>): boolean {
  if (typeof e.prev !== 'string') return false;
  for (const field of HASHED_FIELDS) {
    const v = e[field];
    if (v !== null && typeof v !== 'string' && !(typeof v === 'number' && Number.isSafeInteger(v))) return false;
  }
  return true;
}

/** hashEvent returns hex(SHA-256(prev ‖ JCS(event without "hash"))), ignoring any `hash` already present. */
export function hashEvent(e: Omit<AuditEvent, 'hash'>): string {
  if (isPlain(e)) {
    // With keys written in JCS order and only strings, safe integers and nulls as values, JSON.stringify writes exactly
    // the RFC 8785 form (the RFC defines string and integer output as ECMAScript's), several times faster than the
    // general canonicaliser, which handles everything else. test/audit-chain.test.ts checks the two agree.
    const canonical = JSON.stringify({
      action: e.action, actor: e.actor, actorSerial: e.actorSerial, bytes: e.bytes, decision: e.decision, digest: e.digest, ip: e.ip, prev: e.prev,
      reason: e.reason, reference: e.reference, repository: e.repository, role: e.role, seq: e.seq, status: e.status, time: e.time,
    });
    return hash('sha256', e.prev + canonical, 'hex');
  }
  // Build the hashed object from the field list so stray properties never reach the hash.
  const body: Record<string, unknown> = {};
  for (const field of HASHED_FIELDS) body[field] = e[field];
  const canonical = canonicalize(body);
  if (canonical === undefined) throw new Error('audit event cannot be canonicalised');
  return createHash('sha256').update(e.prev, 'utf8').update(canonical, 'utf8').digest('hex');
}

/** chainEvent turns an input into the event numbered `seq` that follows the event whose hash is `prev`; fields it does
 * not name are null, and `time` defaults to the input's. Text that came from outside (an admin's reason, a name in a
 * request) may hold a lone UTF-16 surrogate, which JSON allows and UTF-8 cannot store: SQLite and every export would
 * then hold other characters than the ones hashed. Such a surrogate becomes U+FFFD before the event is hashed. */
export function chainEvent(input: Partial<AuditEventInput> & { action: string }, seq: number, prev: string, time = input.time): AuditEvent {
  if (time === undefined) throw new Error('an audit event needs a time');
  const e: AuditEvent = {
    seq,
    time,
    actor: text(input.actor),
    actorSerial: input.actorSerial ?? null,
    role: input.role ?? null,
    ip: input.ip ?? null,
    action: input.action.toWellFormed(),
    repository: text(input.repository),
    reference: text(input.reference),
    digest: text(input.digest),
    decision: input.decision ?? null,
    reason: text(input.reason),
    status: input.status ?? null,
    bytes: input.bytes ?? null,
    prev,
    hash: '',
  };
  e.hash = hashEvent(e);
  return e;
}

/** checkpointMessage is the byte string a checkpoint signature covers. */
export function checkpointMessage(seq: number, hash: string): Buffer {
  return Buffer.from(`airlock-audit-checkpoint:v1:${seq}:${hash}`, 'utf8');
}

/** keyIdOf names a key as `sha256:<hex of SHA-256 of its public SPKI DER>`, for a private or public key. */
export function keyIdOf(key: KeyObject): string {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  if (publicKey.type !== 'public') throw new Error('audit key must be an asymmetric key');
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(der).digest('hex')}`;
}

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** signCheckpoint signs (seq, hash) with the mirror's ECDSA P-256 key, DER signature in standard base64. */
export function signCheckpoint(privateKey: KeyObject, keyId: string, seq: number, hash: string): Checkpoint {
  if (privateKey.type !== 'private' || !isP256(privateKey)) {
    throw new Error('audit checkpoints are signed with an ECDSA P-256 private key');
  }
  const signature = sign('sha256', checkpointMessage(seq, hash), { key: privateKey, dsaEncoding: 'der' });
  return { type: 'checkpoint', seq, hash, keyId, signature: signature.toString('base64') };
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** verifyCheckpoint reports whether the checkpoint's signature verifies with the P-256 public key; it never throws. */
export function verifyCheckpoint(publicKey: KeyObject, cp: Checkpoint): boolean {
  try {
    if (publicKey.type !== 'public' || !isP256(publicKey)) return false;
    if (typeof cp.seq !== 'number' || typeof cp.hash !== 'string') return false;
    if (typeof cp.signature !== 'string' || cp.signature === '' || !BASE64.test(cp.signature)) return false;
    return verify(
      'sha256',
      checkpointMessage(cp.seq, cp.hash),
      { key: publicKey, dsaEncoding: 'der' },
      Buffer.from(cp.signature, 'base64'),
    );
  } catch {
    return false;
  }
}

// text is an event's free-text field, well-formed (see chainEvent), or null.
function text(value: string | null | undefined): string | null {
  return value === undefined || value === null ? null : value.toWellFormed();
}
