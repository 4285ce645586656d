// MIGRATIONS are the numbered, append-only schema steps; PRAGMA user_version records how many have run.
export const MIGRATIONS: readonly string[] = [
  // 1: the content model, policy, certificates and the audit chain.
  `
  CREATE TABLE manifests (
    digest      TEXT PRIMARY KEY,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    bytes       BLOB NOT NULL,
    created_at  TEXT NOT NULL
  ) STRICT;

  CREATE TABLE repo_manifests (
    repository    TEXT NOT NULL,
    digest        TEXT NOT NULL REFERENCES manifests(digest),
    subject       TEXT,
    artifact_type TEXT,
    own           INTEGER NOT NULL DEFAULT 0,
    seen_at       TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
  ) STRICT;
  CREATE INDEX repo_manifests_subject ON repo_manifests(repository, subject) WHERE subject IS NOT NULL;

  CREATE TABLE manifest_refs (
    digest      TEXT NOT NULL REFERENCES manifests(digest),
    child       TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    media_type  TEXT,
    size        INTEGER,
    PRIMARY KEY (digest, child)
  ) STRICT;
  CREATE INDEX manifest_refs_child ON manifest_refs(child);

  CREATE TABLE local_blobs (
    digest      TEXT PRIMARY KEY,
    media_type  TEXT NOT NULL,
    bytes       BLOB NOT NULL
  ) STRICT;

  CREATE TABLE tags (
    repository  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    resolved_at TEXT NOT NULL,
    PRIMARY KEY (repository, tag)
  ) STRICT;

  CREATE TABLE pins (
    id          INTEGER PRIMARY KEY,
    repository  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    tag         TEXT,
    note        TEXT,
    source      TEXT NOT NULL CHECK (source IN ('config', 'api', 'approval')),
    created_by  TEXT,
    created_at  TEXT NOT NULL
  ) STRICT;
  CREATE UNIQUE INDEX pins_unique ON pins(repository, digest, coalesce(tag, ''));
  CREATE UNIQUE INDEX pins_tag ON pins(repository, tag) WHERE tag IS NOT NULL;

  CREATE TABLE requests (
    id           INTEGER PRIMARY KEY,
    repository   TEXT NOT NULL,
    digest       TEXT NOT NULL,
    tag          TEXT,
    requested_by TEXT,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    count        INTEGER NOT NULL DEFAULT 1,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    decided_by   TEXT,
    decided_at   TEXT,
    note         TEXT,
    UNIQUE (repository, digest)
  ) STRICT;

  CREATE TABLE publishers (
    name         TEXT PRIMARY KEY,
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    repositories TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('config', 'api')),
    created_by   TEXT,
    created_at   TEXT NOT NULL
  ) STRICT;

  CREATE TABLE signature_checks (
    repository   TEXT NOT NULL,
    digest       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    verified     INTEGER NOT NULL,
    checked_at   TEXT NOT NULL,
    PRIMARY KEY (repository, digest, fingerprint)
  ) STRICT;

  CREATE TABLE admissions (
    repository    TEXT NOT NULL,
    digest        TEXT NOT NULL,
    how           TEXT NOT NULL,
    approved_by   TEXT,
    publisher_key TEXT,
    admitted_at   TEXT NOT NULL,
    signature     TEXT,
    signed_at     TEXT,
    signing_key   TEXT,
    PRIMARY KEY (repository, digest)
  ) STRICT;

  CREATE TABLE revocations (
    repository  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_by  TEXT,
    revoked_at  TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
  ) STRICT;

  CREATE TABLE drift (
    repository      TEXT NOT NULL,
    tag             TEXT NOT NULL,
    pinned_digest   TEXT NOT NULL,
    upstream_digest TEXT NOT NULL,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    PRIMARY KEY (repository, tag)
  ) STRICT;

  CREATE TABLE certs (
    serial        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    not_after     TEXT NOT NULL,
    issued_at     TEXT NOT NULL,
    issued_by     TEXT,
    revoked_at    TEXT,
    revoke_reason TEXT
  ) STRICT;

  CREATE TABLE audit (
    seq          INTEGER PRIMARY KEY,
    time         TEXT NOT NULL,
    actor        TEXT,
    actor_serial TEXT,
    role         TEXT,
    ip           TEXT,
    action       TEXT NOT NULL,
    repository   TEXT,
    reference    TEXT,
    digest       TEXT,
    decision     TEXT,
    reason       TEXT,
    status       INTEGER,
    bytes        INTEGER,
    prev         TEXT NOT NULL,
    hash         TEXT NOT NULL
  ) STRICT;
  CREATE INDEX audit_time ON audit(time);

  CREATE TABLE checkpoints (
    seq         INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    created_at  TEXT NOT NULL
  ) STRICT;
  `,
  // 2: admin actions taken outside the server (airlock cert issue and revoke) wait here until the server, the one
  // writer of the chain, appends them to it.
  `
  CREATE TABLE audit_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: the server drains past the last id it chained
    fields      TEXT NOT NULL,
    created_at  TEXT NOT NULL
  ) STRICT;
  `,
  // 3: the approval requests are listed newest activity first, a page at a time: a pull certificate can add a row per
  // refused digest, and the list must not cost a scan and sort of every row.
  `
  CREATE INDEX requests_seen ON requests(last_seen, id);
  CREATE INDEX requests_status_seen ON requests(status, last_seen, id);
  `,
  // 4: rows earlier builds left that today's rules never make. A manifest fetched through one repository was held by
  // any other that asked for its digest, so a pull client could make a repository hold a manifest its upstream never
  // had, to be approved and signed there: each repository's rows that nothing vouches for go, and such a manifest is
  // asked of the repository's own upstream when next wanted. A pin or an admission vouches for a manifest, and so for
  // the indexes of that repository that list it (an index a publisher signed is recorded only through the platform
  // manifests it admits). A request whose pin was deleted is open again, as deleting a pin does now. Drift of a tag no
  // pin freezes to that digest any more is gone.
  `
  WITH RECURSIVE vouched(repository, digest) AS (
    SELECT repository, digest FROM admissions
    UNION SELECT repository, digest FROM pins
    UNION SELECT v.repository, r.digest FROM vouched v JOIN manifest_refs r ON r.child = v.digest AND r.kind = 'manifest'
  )
  DELETE FROM repo_manifests WHERE own = 0
    AND NOT EXISTS (SELECT 1 FROM vouched v WHERE v.repository = repo_manifests.repository AND v.digest = repo_manifests.digest);
  UPDATE requests SET status = 'pending', decided_by = NULL, decided_at = NULL
    WHERE status = 'approved' AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.repository = requests.repository AND p.digest = requests.digest);
  DELETE FROM drift
    WHERE NOT EXISTS (SELECT 1 FROM pins p WHERE p.repository = drift.repository AND p.tag = drift.tag AND p.digest = drift.pinned_digest);
  `,
];
