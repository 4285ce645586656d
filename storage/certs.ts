// Issued client certificates and their revocation, shared between the CLI and the running server.
import type { Db } from './db.js';
import { now } from './db.js';

// CertRecord is one issued client certificate.
export interface CertRecord {
  serial: string;
  name: string;
  role: string;
  notAfter: string;
  issuedAt: string;
  issuedBy: string | null;
  revokedAt: string | null;
  revokeReason: string | null;
}

interface CertRow { serial: string; name: string; role: string; not_after: string; issued_at: string; issued_by: string | null; revoked_at: string | null; revoke_reason: string | null }

const cert = (r: CertRow): CertRecord => ({
  serial: r.serial, name: r.name, role: r.role, notAfter: r.not_after, issuedAt: r.issued_at, issuedBy: r.issued_by, revokedAt: r.revoked_at, revokeReason: r.revoke_reason,
});

// createCertStore prepares the certificate statements once.
export function createCertStore(db: Db) {
  const insert = db.prepare<[string, string, string, string, string, string | null]>(
    'INSERT INTO certs (serial, name, role, not_after, issued_at, issued_by) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const all = db.prepare<[], CertRow>('SELECT * FROM certs ORDER BY issued_at DESC');
  const one = db.prepare<[string], CertRow>('SELECT * FROM certs WHERE serial = ?');
  const revoke = db.prepare<[string, string, string]>('UPDATE certs SET revoked_at = ?, revoke_reason = ? WHERE serial = ? AND revoked_at IS NULL');
  const revokeUnknown = db.prepare<[string, string, string, string]>(
    "INSERT OR IGNORE INTO certs (serial, name, role, not_after, issued_at, revoked_at, revoke_reason) VALUES (?, '(unknown)', '(unknown)', '', ?, ?, ?)",
  );
  const revoked = db.prepare<[], { serial: string }>('SELECT serial FROM certs WHERE revoked_at IS NOT NULL');
  const lastAdmin = db.prepare<[], { end: string | null }>("SELECT max(not_after) AS end FROM certs WHERE role = 'admin' AND revoked_at IS NULL AND not_after != ''");

  return {
    record: (c: { serial: string; name: string; role: string; notAfter: string; issuedBy: string | null }): void => {
      insert.run(c.serial, c.name, c.role, c.notAfter, now(), c.issuedBy);
    },
    list: (): CertRecord[] => all.all().map(cert),
    get: (serial: string): CertRecord | null => {
      const r = one.get(serial);
      return r ? cert(r) : null;
    },
    // revoke marks a certificate revoked; a serial airlock never recorded is revoked too (it may come from an older CA bundle).
    revoke: db.transaction((serial: string, reason: string): 'revoked' | 'already' => {
      const t = now();
      if (revoke.run(t, reason, serial).changes > 0) return 'revoked';
      if (one.get(serial)) return 'already';
      revokeUnknown.run(serial, t, t, reason);
      return 'revoked';
    }),
    revokedSerials: (): Set<string> => new Set(revoked.all().map((r) => r.serial)),
    // lastAdminEnd is when the admin certificate not revoked that ends last ends (ISO 8601), null when there is none.
    lastAdminEnd: (): string | null => lastAdmin.get()?.end ?? null,
  };
}

// CertStore is the certificate records' operations.
export type CertStore = ReturnType<typeof createCertStore>;
