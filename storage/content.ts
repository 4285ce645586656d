// The content model in SQLite: manifests (exact bytes), which repository holds them, what they reference, tags.
import type { Db } from './db.js';
import { now } from './db.js';

// StoredManifest is a manifest's exact bytes with its media type.
export interface StoredManifest {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
}

// ManifestRef is one descriptor a manifest points at: a blob (config, layer) or a child manifest (index entry).
export interface ManifestRef {
  child: string;
  kind: 'blob' | 'manifest';
  mediaType: string | null;
  size: number | null;
}

// ReferrerRow describes a manifest whose subject is another manifest.
export interface ReferrerRow {
  digest: string;
  mediaType: string;
  size: number;
  artifactType: string | null;
  bytes: Buffer;
}

// createContentStore prepares the content statements once and returns them as named operations.
export function createContentStore(db: Db) {
  const getManifest = db.prepare<[string], { digest: string; media_type: string; size: number; bytes: Buffer }>(
    'SELECT digest, media_type, size, bytes FROM manifests WHERE digest = ?',
  );
  const insertManifest = db.prepare('INSERT OR IGNORE INTO manifests (digest, media_type, size, bytes, created_at) VALUES (?, ?, ?, ?, ?)');
  const insertRepoManifest = db.prepare(
    `INSERT INTO repo_manifests (repository, digest, subject, artifact_type, own, seen_at) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (repository, digest) DO UPDATE SET own = max(own, excluded.own)`,
  );
  const inRepo = db.prepare<[string, string], { own: number; subject: string | null }>('SELECT own, subject FROM repo_manifests WHERE repository = ? AND digest = ?');
  const insertRef = db.prepare('INSERT OR IGNORE INTO manifest_refs (digest, child, kind, media_type, size) VALUES (?, ?, ?, ?, ?)');
  const refsOf = db.prepare<[string], { child: string; kind: 'blob' | 'manifest'; media_type: string | null; size: number | null }>(
    'SELECT child, kind, media_type, size FROM manifest_refs WHERE digest = ?',
  );
  const parentsIn = db.prepare<[string, string, string], { digest: string; own: number }>(
    `SELECT r.digest, m.own FROM manifest_refs r JOIN repo_manifests m ON m.digest = r.digest AND m.repository = ?
     WHERE r.child = ? AND r.kind = ?`,
  );
  const referrers = db.prepare<[string, string], { digest: string; media_type: string; size: number; artifact_type: string | null; bytes: Buffer }>(
    `SELECT m.digest, m.media_type, m.size, r.artifact_type, m.bytes FROM repo_manifests r JOIN manifests m ON m.digest = r.digest
     WHERE r.repository = ? AND r.subject = ? ORDER BY m.digest`,
  );
  const setTag = db.prepare(
    `INSERT INTO tags (repository, tag, digest, resolved_at) VALUES (?, ?, ?, ?)
     ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, resolved_at = excluded.resolved_at`,
  );
  const getTag = db.prepare<[string, string], { digest: string }>('SELECT digest FROM tags WHERE repository = ? AND tag = ?');
  const tagsOf = db.prepare<[string], { tag: string; digest: string }>('SELECT tag, digest FROM tags WHERE repository = ? ORDER BY tag');
  const tagsFor = db.prepare<[string, string], { tag: string }>('SELECT tag FROM tags WHERE repository = ? AND digest = ? ORDER BY tag');
  const refOf = db.prepare<[string, string], { media_type: string | null; size: number | null }>('SELECT media_type, size FROM manifest_refs WHERE digest = ? AND child = ?');
  const getLocalBlob = db.prepare<[string], { media_type: string; bytes: Buffer }>('SELECT media_type, bytes FROM local_blobs WHERE digest = ?');
  const putLocalBlob = db.prepare('INSERT OR IGNORE INTO local_blobs (digest, media_type, bytes) VALUES (?, ?, ?)');
  const blobSizes = db.prepare<[string], { total: number | null }>(
    `WITH RECURSIVE tree(d) AS (SELECT ? UNION SELECT r.child FROM manifest_refs r JOIN tree ON r.digest = tree.d WHERE r.kind = 'manifest')
     SELECT sum(size) AS total FROM (SELECT DISTINCT r.child, r.size FROM manifest_refs r JOIN tree ON r.digest = tree.d WHERE r.kind = 'blob')`,
  );

  const saveManifest = db.transaction((repository: string, m: StoredManifest, refs: ManifestRef[], subject: string | null, artifactType: string | null, own: boolean) => {
    insertManifest.run(m.digest, m.mediaType, m.size, m.bytes, now());
    for (const r of refs) insertRef.run(m.digest, r.child, r.kind, r.mediaType, r.size);
    insertRepoManifest.run(repository, m.digest, subject, artifactType, own ? 1 : 0, now());
  });

  return {
    // manifest returns a stored manifest by digest, whatever repository it came through.
    manifest(digest: string): StoredManifest | null {
      const row = getManifest.get(digest);
      return row ? { digest: row.digest, mediaType: row.media_type, size: row.size, bytes: row.bytes } : null;
    },
    // saveManifest records a verified manifest, what it references, and that repository holds it.
    saveManifest(repository: string, m: StoredManifest, refs: ManifestRef[], subject: string | null, artifactType: string | null, own = false): void {
      saveManifest(repository, m, refs, subject, artifactType, own);
    },
    // holds tells whether repository holds the manifest (own: airlock made it, like a signature; subject: the manifest
    // it refers to, if any).
    holds(repository: string, digest: string): { own: boolean; subject: string | null } | null {
      const row = inRepo.get(repository, digest);
      return row ? { own: row.own === 1, subject: row.subject } : null;
    },
    // refs lists what a manifest references.
    refs(digest: string): ManifestRef[] {
      return refsOf.all(digest).map((r) => ({ child: r.child, kind: r.kind, mediaType: r.media_type, size: r.size }));
    },
    // parents lists the manifests of repository that reference child as kind: a blob (config, layer) of an image
    // manifest, or a child manifest of an index.
    parents(repository: string, child: string, kind: 'blob' | 'manifest'): { digest: string; own: boolean }[] {
      return parentsIn.all(repository, child, kind).map((r) => ({ digest: r.digest, own: r.own === 1 }));
    },
    // referrers lists the manifests of repository whose subject is digest.
    referrers(repository: string, digest: string): ReferrerRow[] {
      return referrers.all(repository, digest).map((r) => ({ digest: r.digest, mediaType: r.media_type, size: r.size, artifactType: r.artifact_type, bytes: r.bytes }));
    },
    // setTag records what a tag resolved to, for serving while the upstream is unreachable.
    setTag(repository: string, tag: string, digest: string): void {
      setTag.run(repository, tag, digest, now());
    },
    // tag returns the last digest a tag resolved to.
    tag(repository: string, tag: string): string | null {
      return getTag.get(repository, tag)?.digest ?? null;
    },
    // tags lists a repository's known tags with their last digests.
    tags(repository: string): { tag: string; digest: string }[] {
      return tagsOf.all(repository);
    },
    // tagsFor lists the tags of repository last seen on digest.
    tagsFor(repository: string, digest: string): string[] {
      return tagsFor.all(repository, digest).map((r) => r.tag);
    },
    // ref is the descriptor manifest parent holds for child: the media type and size it declares.
    ref(parent: string, child: string): { mediaType: string | null; size: number | null } | null {
      const row = refOf.get(parent, child);
      return row ? { mediaType: row.media_type, size: row.size } : null;
    },
    // localBlob returns a blob airlock made itself (signature payloads and configs), which no upstream has.
    localBlob(digest: string): { mediaType: string; bytes: Buffer } | null {
      const row = getLocalBlob.get(digest);
      return row ? { mediaType: row.media_type, bytes: row.bytes } : null;
    },
    // putLocalBlob stores a blob airlock made itself.
    putLocalBlob(digest: string, mediaType: string, bytes: Buffer): void {
      putLocalBlob.run(digest, mediaType, bytes);
    },
    // imageBytes sums the blob sizes an image (and its children) reference.
    imageBytes(digest: string): number {
      return blobSizes.get(digest)?.total ?? 0;
    },
  };
}

// ContentStore is the content model's operations.
export type ContentStore = ReturnType<typeof createContentStore>;
