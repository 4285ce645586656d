// The one error table: every OCI registry code with its HTTP status, and the admin API's codes.

// OCI_CODES maps each registry error code to the HTTP status it is sent with (as distribution registers them).
export const OCI_CODES = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 404,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  PAGINATION_NUMBER_INVALID: 400,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNKNOWN: 500,
  UNAVAILABLE: 503,
} as const;

// OciCode is one registry error code.
export type OciCode = keyof typeof OCI_CODES;

// RegistryError is thrown anywhere under /v2/ and turned into the OCI error body by one handler.
export class RegistryError extends Error {
  readonly code: OciCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(code: OciCode, message: string, detail: unknown = null, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'RegistryError';
    this.code = code;
    this.status = OCI_CODES[code];
    this.detail = detail;
    this.headers = headers;
  }

  // body is the OCI error document for this error.
  body(): { errors: { code: string; message: string; detail: unknown }[] } {
    return { errors: [{ code: this.code, message: this.message, detail: this.detail }] };
  }
}

// API_CODES maps each admin API error code to its HTTP status.
export const API_CODES = {
  BAD_REQUEST: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UNPROCESSABLE: 422,
  INTERNAL: 500,
  UNAVAILABLE: 503,
} as const;

// ApiCode is one admin API error code.
export type ApiCode = keyof typeof API_CODES;

// apiCodeFor names an HTTP status of the 4xx and 5xx the API answers; a status without a code of its own is BAD_REQUEST.
export function apiCodeFor(status: number): ApiCode {
  if (status >= 500) return status === 503 ? 'UNAVAILABLE' : 'INTERNAL';
  return (Object.keys(API_CODES) as ApiCode[]).find((c) => API_CODES[c] === status) ?? 'BAD_REQUEST';
}

// ApiError is thrown by admin API routes and rendered as {"error":{"code","message"}}.
export class ApiError extends Error {
  readonly code: ApiCode;
  readonly status: number;

  constructor(code: ApiCode, message: string) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = API_CODES[code];
  }
}

// databaseUnavailable says why the database refused a statement it may take later (a write lock another process holds
// for longer than the request thread waits, a full disk), or null for any other error: such a request is answered
// 503, to be tried again, not 500 as a bug.
export function databaseUnavailable(err: unknown): string | null {
  const code = (err as { code?: unknown }).code;
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return 'the database is locked by another process';
  if (code === 'SQLITE_FULL') return 'the database has no space left on its disk';
  return null;
}

// UserError is a mistake in a command line or configuration: printed as one line, never with a stack.
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

// whyUnreadable says in words why a file or directory could not be read: the usual errno codes named, with the code
// after them, and any other code as it is.
export function whyUnreadable(err: unknown, kind: 'file' | 'directory' = 'file'): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `no such ${kind} (ENOENT)`;
  if (code === 'EACCES') return 'permission denied (EACCES)';
  if (code === 'EISDIR') return 'a directory, not a file (EISDIR)';
  if (code === 'ENOTDIR') return 'not a directory (ENOTDIR)';
  return code ?? (err instanceof Error ? err.message : String(err));
}
