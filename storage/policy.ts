// The live policy in SQLite: pins, approval requests, publishers, admissions, revocations, drift and signature checks.
import type { Db } from './db.js';
import { now } from './db.js';

// Pin admits one digest of a repository; with a tag it also freezes that tag to the digest.
export interface Pin {
  id: number;
  repository: string;
  digest: string;
  tag: string | null;
  note: string | null;
  source: 'config' | 'api' | 'approval';
  createdBy: string | null;
  createdAt: string;
}

// ApprovalRequest is a refused (repository, digest) waiting for an admin.
export interface ApprovalRequest {
  id: number;
  repository: string;
  digest: string;
  tag: string | null;
  requestedBy: string | null;
  firstSeen: string;
  lastSeen: string;
  count: number;
  status: 'pending' | 'approved' | 'denied';
  decidedBy: string | null;
  decidedAt: string | null;
  note: string | null;
}

// Publisher is a trusted signer: a public key and the repository globs it may vouch for.
export interface Publisher {
  name: string;
  publicKey: string;
  fingerprint: string;
  repositories: string[];
  source: 'config' | 'api';
  createdBy: string | null;
  createdAt: string;
}

// Admission records how a digest was admitted and airlock's signature over it.
export interface Admission {
  repository: string;
  digest: string;
  how: string;
  approvedBy: string | null;
  publisherKey: string | null;
  admittedAt: string;
  signature: string | null;
  signedAt: string | null;
  signingKey: string | null;
}

// Revocation stops a digest being served, whatever else admits it.
export interface Revocation {
  repository: string;
  digest: string;
  reason: string;
  revokedBy: string | null;
  revokedAt: string;
}

// Drift is a pinned tag whose upstream moved elsewhere.
export interface Drift {
  repository: string;
  tag: string;
  pinnedDigest: string;
  upstreamDigest: string;
  firstSeen: string;
  lastSeen: string;
}

interface PinRow { id: number; repository: string; digest: string; tag: string | null; note: string | null; source: Pin['source']; created_by: string | null; created_at: string }
interface RequestRow { id: number; repository: string; digest: string; tag: string | null; requested_by: string | null; first_seen: string; last_seen: string; count: number; status: ApprovalRequest['status']; decided_by: string | null; decided_at: string | null; note: string | null }
interface PublisherRow { name: string; public_key: string; fingerprint: string; repositories: string; source: Publisher['source']; created_by: string | null; created_at: string }
interface AdmissionRow { repository: string; digest: string; how: string; approved_by: string | null; publisher_key: string | null; admitted_at: string; signature: string | null; signed_at: string | null; signing_key: string | null }

const pin = (r: PinRow): Pin => ({ id: r.id, repository: r.repository, digest: r.digest, tag: r.tag, note: r.note, source: r.source, createdBy: r.created_by, createdAt: r.created_at });
const request = (r: RequestRow): ApprovalRequest => ({
  id: r.id, repository: r.repository, digest: r.digest, tag: r.tag, requestedBy: r.requested_by, firstSeen: r.first_seen, lastSeen: r.last_seen,
  count: r.count, status: r.status, decidedBy: r.decided_by, decidedAt: r.decided_at, note: r.note,
});
const publisher = (r: PublisherRow): Publisher => ({
  name: r.name, publicKey: r.public_key, fingerprint: r.fingerprint, repositories: JSON.parse(r.repositories) as string[], source: r.source, createdBy: r.created_by, createdAt: r.created_at,
});
const admission = (r: AdmissionRow): Admission => ({
  repository: r.repository, digest: r.digest, how: r.how, approvedBy: r.approved_by, publisherKey: r.publisher_key, admittedAt: r.admitted_at,
  signature: r.signature, signedAt: r.signed_at, signingKey: r.signing_key,
});

// createPolicyStore prepares the policy statements once and returns them as named operations.
export function createPolicyStore(db: Db) {
  const s = {
    pinsAll: db.prepare<[], PinRow>('SELECT * FROM pins ORDER BY id'),
    pinById: db.prepare<[number], PinRow>('SELECT * FROM pins WHERE id = ?'),
    pinFor: db.prepare<[string, string], PinRow>('SELECT * FROM pins WHERE repository = ? AND digest = ? ORDER BY id LIMIT 1'),
    pinForTag: db.prepare<[string, string], PinRow>('SELECT * FROM pins WHERE repository = ? AND tag = ?'),
    pinDigests: db.prepare<[string], { digest: string }>('SELECT DISTINCT digest FROM pins WHERE repository = ? ORDER BY digest'),
    pinInsert: db.prepare<[string, string, string | null, string | null, string, string | null, string]>(
      'INSERT INTO pins (repository, digest, tag, note, source, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
    ),
    pinFind: db.prepare<[string, string, string], PinRow>("SELECT * FROM pins WHERE repository = ? AND digest = ? AND coalesce(tag, '') = ?"),
    pinDelete: db.prepare<[number]>('DELETE FROM pins WHERE id = ?'),
    // Repositories start with their upstream and a slash; a range on the primary keys' text finds one of a host.
    hostSeen: db.prepare<[string, string, string, string, string, string]>(
      `SELECT 1 FROM admissions WHERE repository >= ? AND repository < ?
       UNION ALL SELECT 1 FROM pins WHERE repository >= ? AND repository < ?
       UNION ALL SELECT 1 FROM requests WHERE repository >= ? AND repository < ? LIMIT 1`,
    ),
    pinAdopt: db.prepare<[string | null, string | null, number]>("UPDATE pins SET source = 'api', note = coalesce(?, note), created_by = ? WHERE id = ?"),
    reqReopen: db.prepare<[string, string]>(
      "UPDATE requests SET status = 'pending', decided_by = NULL, decided_at = NULL WHERE repository = ? AND digest = ? AND status = 'approved'",
    ),
    reqByPair: db.prepare<[string, string], RequestRow>('SELECT * FROM requests WHERE repository = ? AND digest = ?'),
    reqById: db.prepare<[number], RequestRow>('SELECT * FROM requests WHERE id = ?'),
    reqInsert: db.prepare<[string, string, string | null, string | null, string, string]>(
      `INSERT INTO requests (repository, digest, tag, requested_by, first_seen, last_seen, count, status) VALUES (?, ?, ?, ?, ?, ?, 1, 'pending')
       ON CONFLICT (repository, digest) DO UPDATE SET count = count + 1, last_seen = excluded.last_seen,
         tag = coalesce(excluded.tag, tag), requested_by = coalesce(excluded.requested_by, requested_by),
         status = CASE status WHEN 'approved' THEN 'pending' ELSE status END,
         decided_by = CASE status WHEN 'approved' THEN NULL ELSE decided_by END,
         decided_at = CASE status WHEN 'approved' THEN NULL ELSE decided_at END`,
    ),
    reqList: db.prepare<[number], RequestRow>('SELECT * FROM requests ORDER BY last_seen DESC, id DESC LIMIT ?'),
    reqListStatus: db.prepare<[string, number], RequestRow>('SELECT * FROM requests WHERE status = ? ORDER BY last_seen DESC, id DESC LIMIT ?'),
    reqCount: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM requests'),
    reqCountStatus: db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM requests WHERE status = ?'),
    reqDecide: db.prepare<[string, string | null, string, string | null, number]>('UPDATE requests SET status = ?, decided_by = ?, decided_at = ?, note = ? WHERE id = ?'),
    pubAll: db.prepare<[], PublisherRow>('SELECT * FROM publishers ORDER BY name'),
    pubByName: db.prepare<[string], PublisherRow>('SELECT * FROM publishers WHERE name = ?'),
    pubInsert: db.prepare<[string, string, string, string, string, string | null, string]>(
      'INSERT INTO publishers (name, public_key, fingerprint, repositories, source, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
    pubUpdateSeed: db.prepare<[string, string, string, string]>(
      "UPDATE publishers SET public_key = ?, fingerprint = ?, repositories = ? WHERE name = ? AND source = 'config'",
    ),
    pubDelete: db.prepare<[string]>('DELETE FROM publishers WHERE name = ?'),
    checkGet: db.prepare<[string, string, string], { verified: number }>('SELECT verified FROM signature_checks WHERE repository = ? AND digest = ? AND fingerprint = ?'),
    checkPut: db.prepare<[string, string, string, number, string]>(
      'INSERT OR REPLACE INTO signature_checks (repository, digest, fingerprint, verified, checked_at) VALUES (?, ?, ?, ?, ?)',
    ),
    admGet: db.prepare<[string, string], AdmissionRow>('SELECT * FROM admissions WHERE repository = ? AND digest = ?'),
    admAll: db.prepare<[], AdmissionRow>('SELECT * FROM admissions ORDER BY admitted_at DESC'),
    admInsert: db.prepare<[string, string, string, string | null, string | null, string]>(
      'INSERT OR IGNORE INTO admissions (repository, digest, how, approved_by, publisher_key, admitted_at) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    admUpdate: db.prepare<[string, string | null, string | null, string, string]>(
      'UPDATE admissions SET how = ?, approved_by = ?, publisher_key = ?, signature = NULL, signed_at = NULL, signing_key = NULL WHERE repository = ? AND digest = ?',
    ),
    admSigned: db.prepare<[string, string, string, string, string]>('UPDATE admissions SET signature = ?, signed_at = ?, signing_key = ? WHERE repository = ? AND digest = ?'),
    admDelete: db.prepare<[string, string]>('DELETE FROM admissions WHERE repository = ? AND digest = ?'),
    revGet: db.prepare<[string, string], { repository: string; digest: string; reason: string; revoked_by: string | null; revoked_at: string }>(
      'SELECT * FROM revocations WHERE repository = ? AND digest = ?',
    ),
    revInsert: db.prepare<[string, string, string, string | null, string]>(
      'INSERT OR REPLACE INTO revocations (repository, digest, reason, revoked_by, revoked_at) VALUES (?, ?, ?, ?, ?)',
    ),
    driftPut: db.prepare<[string, string, string, string, string, string]>(
      `INSERT INTO drift (repository, tag, pinned_digest, upstream_digest, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (repository, tag) DO UPDATE SET pinned_digest = excluded.pinned_digest, last_seen = excluded.last_seen,
         first_seen = CASE WHEN upstream_digest = excluded.upstream_digest THEN first_seen ELSE excluded.first_seen END,
         upstream_digest = excluded.upstream_digest`,
    ),
    driftGet: db.prepare<[string, string], { upstream_digest: string; pinned_digest: string }>('SELECT upstream_digest, pinned_digest FROM drift WHERE repository = ? AND tag = ?'),
    driftClear: db.prepare<[string, string]>('DELETE FROM drift WHERE repository = ? AND tag = ?'),
    driftAll: db.prepare<[], { repository: string; tag: string; pinned_digest: string; upstream_digest: string; first_seen: string; last_seen: string }>(
      'SELECT * FROM drift ORDER BY last_seen DESC',
    ),
  };

  return {
    pins: (): Pin[] => s.pinsAll.all().map(pin),
    pin: (id: number): Pin | null => {
      const r = s.pinById.get(id);
      return r ? pin(r) : null;
    },
    // pinFor returns a pin admitting (repository, digest), tag pins included.
    pinFor: (repository: string, digest: string): Pin | null => {
      const r = s.pinFor.get(repository, digest);
      return r ? pin(r) : null;
    },
    // pinForTag returns the pin freezing a tag, if any.
    pinForTag: (repository: string, tag: string): Pin | null => {
      const r = s.pinForTag.get(repository, tag);
      return r ? pin(r) : null;
    },
    // pinnedDigests lists the digests pinned in a repository, tag pins included.
    pinnedDigests: (repository: string): string[] => s.pinDigests.all(repository).map((r) => r.digest),
    // addPin creates a pin, or returns the identical one that exists; a tag already pinned elsewhere is a conflict (null).
    // An API pin identical to an approval's pin takes it over (created): the admin's pin must outlive a later deny.
    addPin: (p: { repository: string; digest: string; tag: string | null; note: string | null; source: Pin['source']; createdBy: string | null }): { pin: Pin; created: boolean } | null => {
      const existing = s.pinFind.get(p.repository, p.digest, p.tag ?? '');
      if (existing && existing.source === 'approval' && p.source === 'api') {
        s.pinAdopt.run(p.note, p.createdBy, existing.id);
        return { pin: pin(s.pinById.get(existing.id) as PinRow), created: true };
      }
      if (existing) return { pin: pin(existing), created: false };
      if (p.tag !== null && s.pinForTag.get(p.repository, p.tag)) return null;
      const info = s.pinInsert.run(p.repository, p.digest, p.tag, p.note, p.source, p.createdBy, now());
      const row = s.pinById.get(Number(info.lastInsertRowid));
      return row ? { pin: pin(row), created: true } : null;
    },
    // hostSeen tells whether any admission, pin or request names a repository of upstream host.
    hostSeen: (host: string): boolean => {
      const from = `${host}/`;
      const to = `${host}0`; // '0' follows '/' in code point order
      return s.hostSeen.get(from, to, from, to, from, to) !== undefined;
    },
    // atomically makes several changes as one: all of them are stored, or (a write lock held too long, a full disk) none,
    // and the caller's 503 can be tried again. The write lock is taken first, as deletePin's is.
    atomically: <T>(fn: () => T): T => db.transaction(fn).immediate(),

    // deletePin removes a pin; an approved request for its (repository, digest) is pending again once no pin admits it:
    // the approval no longer holds. The transaction takes the write lock first (IMMEDIATE): one that read first and then
    // wrote would fail at once with "database is locked" whenever the audit writer committed in between, as SQLite's
    // busy timeout does not cover a read snapshot grown stale.
    deletePin: db.transaction((id: number): boolean => {
      const p = s.pinById.get(id);
      if (!p || s.pinDelete.run(id).changes === 0) return false;
      if (!s.pinFor.get(p.repository, p.digest)) s.reqReopen.run(p.repository, p.digest);
      return true;
    }).immediate,

    // recordRefusal creates or bumps the approval request for a refused (repository, digest).
    recordRefusal: (repository: string, digest: string, tag: string | null, requestedBy: string | null): ApprovalRequest => {
      const t = now();
      s.reqInsert.run(repository, digest, tag, requestedBy, t, t);
      return request(s.reqByPair.get(repository, digest) as RequestRow);
    },
    requestFor: (repository: string, digest: string): ApprovalRequest | null => {
      const r = s.reqByPair.get(repository, digest);
      return r ? request(r) : null;
    },
    request: (id: number): ApprovalRequest | null => {
      const r = s.reqById.get(id);
      return r ? request(r) : null;
    },
    // requests lists up to limit requests (of a status, or all), newest activity first, and how many there are in all.
    requests: (status: ApprovalRequest['status'] | null, limit: number): { requests: ApprovalRequest[]; total: number } => ({
      requests: (status === null ? s.reqList.all(limit) : s.reqListStatus.all(status, limit)).map(request),
      total: (status === null ? s.reqCount.get() : s.reqCountStatus.get(status))?.n ?? 0,
    }),
    decideRequest: db.transaction((id: number, status: 'approved' | 'denied', by: string | null, note: string | null): ApprovalRequest | null => {
      s.reqDecide.run(status, by, now(), note, id);
      const r = s.reqById.get(id);
      return r ? request(r) : null;
    }),

    publishers: (): Publisher[] => s.pubAll.all().map(publisher),
    publisher: (name: string): Publisher | null => {
      const r = s.pubByName.get(name);
      return r ? publisher(r) : null;
    },
    addPublisher: (p: Omit<Publisher, 'createdAt'>): void => {
      s.pubInsert.run(p.name, p.publicKey, p.fingerprint, JSON.stringify(p.repositories), p.source, p.createdBy, now());
    },
    // updateSeededPublisher refreshes a publisher that came from the config; API-made ones are left alone.
    updateSeededPublisher: (p: { name: string; publicKey: string; fingerprint: string; repositories: string[] }): boolean =>
      s.pubUpdateSeed.run(p.publicKey, p.fingerprint, JSON.stringify(p.repositories), p.name).changes > 0,
    deletePublisher: (name: string): boolean => s.pubDelete.run(name).changes > 0,

    // signatureCheck is a cached verification result for (repository, digest, key), or null when never checked.
    signatureCheck: (repository: string, digest: string, fingerprint: string): boolean | null => {
      const r = s.checkGet.get(repository, digest, fingerprint);
      return r ? r.verified === 1 : null;
    },
    saveSignatureCheck: (repository: string, digest: string, fingerprint: string, verified: boolean): void => {
      s.checkPut.run(repository, digest, fingerprint, verified ? 1 : 0, now());
    },

    admission: (repository: string, digest: string): Admission | null => {
      const r = s.admGet.get(repository, digest);
      return r ? admission(r) : null;
    },
    admissions: (): Admission[] => s.admAll.all().map(admission),
    // recordAdmission notes how (repository, digest) is admitted: new, the same as recorded, or changed (a pin
    // removed and the request then approved, say), in which case the record now says the new way and holds no
    // signature until one says it too: the one before says the old way, and must not be served as if it were current.
    recordAdmission: (a: { repository: string; digest: string; how: string; approvedBy: string | null; publisherKey: string | null }): 'new' | 'same' | 'changed' => {
      if (s.admInsert.run(a.repository, a.digest, a.how, a.approvedBy, a.publisherKey, now()).changes > 0) return 'new';
      const row = s.admGet.get(a.repository, a.digest);
      if (row && row.how === a.how && row.approved_by === a.approvedBy && row.publisher_key === a.publisherKey) return 'same';
      s.admUpdate.run(a.how, a.approvedBy, a.publisherKey, a.repository, a.digest);
      return 'changed';
    },
    recordSignature: (repository: string, digest: string, signatureDigest: string, keyId: string): void => {
      s.admSigned.run(signatureDigest, now(), keyId, repository, digest);
    },
    forgetAdmission: (repository: string, digest: string): void => {
      s.admDelete.run(repository, digest);
    },

    revocation: (repository: string, digest: string): Revocation | null => {
      const r = s.revGet.get(repository, digest);
      return r ? { repository: r.repository, digest: r.digest, reason: r.reason, revokedBy: r.revoked_by, revokedAt: r.revoked_at } : null;
    },
    revoke: (repository: string, digest: string, reason: string, by: string | null): void => {
      s.revInsert.run(repository, digest, reason, by, now());
    },

    // recordDrift notes that an upstream tag moved away from its pin; returns true when the move is new.
    recordDrift: (repository: string, tag: string, pinned: string, upstream: string): boolean => {
      const before = s.driftGet.get(repository, tag);
      const t = now();
      s.driftPut.run(repository, tag, pinned, upstream, t, t);
      return !before || before.upstream_digest !== upstream || before.pinned_digest !== pinned;
    },
    clearDrift: (repository: string, tag: string): void => {
      s.driftClear.run(repository, tag);
    },
    drift: (): Drift[] =>
      s.driftAll.all().map((r) => ({ repository: r.repository, tag: r.tag, pinnedDigest: r.pinned_digest, upstreamDigest: r.upstream_digest, firstSeen: r.first_seen, lastSeen: r.last_seen })),
  };
}

// PolicyStore is the live policy's operations.
export type PolicyStore = ReturnType<typeof createPolicyStore>;
