import { AUDIT_FIELDS, type AuditEvent, type Checkpoint } from './chain.js';

/** toJsonLine renders an event (keys in AUDIT_FIELDS order) or a checkpoint as one JSONL line, without the newline. */
export function toJsonLine(e: AuditEvent | Checkpoint): string {
  if (isCheckpoint(e)) {
    return JSON.stringify({ type: e.type, seq: e.seq, hash: e.hash, keyId: e.keyId, signature: e.signature });
  }
  const ordered: Record<string, unknown> = {};
  for (const field of AUDIT_FIELDS) ordered[field] = e[field] ?? null;
  return JSON.stringify(ordered);
}

function isCheckpoint(e: AuditEvent | Checkpoint): e is Checkpoint {
  return 'type' in e && e.type === 'checkpoint';
}

/** CSV_HEADER is the CSV export's header row: the AUDIT_FIELDS names, without the line terminator. */
export const CSV_HEADER = AUDIT_FIELDS.join(',');

// A cell starting with one of these is read as a formula by spreadsheet programs
// (OWASP "CSV injection"): an actor CN or a repository name chosen by a client
// could otherwise run `=HYPERLINK(...)` or DDE when a compliance officer opens the
// export. Such cells get a leading `'`, which spreadsheets show as text. The CSV is
// for reading; the JSONL export is the verifiable one and is never altered.
const FORMULA_START = /^[=+\-@\t\r]/;

function csvCell(value: string | number | null): string {
  if (value === null) return '';
  let text = String(value);
  if (typeof value === 'string' && FORMULA_START.test(text)) text = `'${text}`;
  // RFC 4180: a field holding a quote, comma, CR or LF is quoted and its quotes doubled.
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** toCsvRow renders an event as one RFC 4180 row (nulls empty, formula-like text defused), without the CRLF. */
export function toCsvRow(e: AuditEvent): string {
  return AUDIT_FIELDS.map((field) => csvCell(e[field] ?? null)).join(',');
}
