// Images (SPEC §6): the admitted digests with their signatures and cache use, revocation, and tag drift.
import type { FastifyInstance } from 'fastify';
import type { Admission } from '../../storage/policy.js';
import { ApiError } from '../errors.js';
import type { Services } from '../services.js';
import { actorOf, canonicalOf, routeOf } from './common.js';
import { DIGEST, drift, errors, image, list, NOTE, obj, REPOSITORY, revocation } from './schemas.js';

const TAGS = ['images'];
// An image index nests manifests at most this deep in practice; deeper references are not followed.
const MAX_DEPTH = 4;

// ImageTree is every manifest an image consists of (itself and, for an index, its children) and every blob they reference.
interface ImageTree {
  manifests: Set<string>;
  blobs: Map<string, number | null>;
}

// imageTree walks an image's references in the content store.
function imageTree(s: Services, digest: string): ImageTree {
  const tree: ImageTree = { manifests: new Set([digest]), blobs: new Map() };
  let level = [digest];
  for (let depth = 0; depth < MAX_DEPTH && level.length > 0; depth++) {
    const next: string[] = [];
    for (const d of level) {
      for (const ref of s.content.refs(d)) {
        if (ref.kind === 'blob') tree.blobs.set(ref.child, ref.size);
        else if (!tree.manifests.has(ref.child)) {
          tree.manifests.add(ref.child);
          next.push(ref.child);
        }
      }
    }
    level = next;
  }
  return tree;
}

// imageRoutes registers /images, /images/revoke and /drift.
export async function imageRoutes(app: FastifyInstance, s: Services): Promise<void> {
  // stillAdmitted keeps the admission records policy admits today: a deleted pin, a denial or a revoked parent index
  // leave a record behind, which is not an admitted image any more. When policy cannot tell, the record is kept.
  const stillAdmitted = async (admissions: Admission[]): Promise<Admission[]> => {
    const verdicts = await Promise.all(admissions.map((a) => s.policy.evaluate(routeOf(a.repository), a.digest).then((d) => d.admitted, () => true)));
    return admissions.filter((_, i) => verdicts[i]);
  };

  app.get(
    '/images',
    {
      config: { role: 'audit' },
      schema: {
        summary: 'List admitted images',
        description: 'Every digest policy admits today that was pulled (or approved) at least once, newest first; revoked images are not listed.',
        tags: TAGS,
        response: { 200: list('images', image), ...errors },
      },
    },
    async () => {
      const admitted = await stillAdmitted(s.policyStore.admissions());
      const tagPins = s.policyStore.pins().filter((p) => p.tag !== null);
      const images = admitted.map((a) => {
        const ofRepo = tagPins.filter((p) => p.repository === a.repository);
        const pinned = ofRepo.filter((p) => p.digest === a.digest).map((p) => p.tag as string);
        const pinnedElsewhere = new Set(ofRepo.filter((p) => p.digest !== a.digest).map((p) => p.tag as string));
        const seen = s.content.tagsFor(a.repository, a.digest).filter((t) => !pinnedElsewhere.has(t));
        const tags = [...new Set([...seen, ...pinned])].sort();
        const tree = imageTree(s, a.digest);
        let cachedBytes = 0;
        // Checked on disk: a figure an operator relies on before an upstream outage must not count a file removed by hand.
        for (const d of tree.blobs.keys()) cachedBytes += s.blobs.present(d) ?? 0;
        return {
          repository: a.repository,
          digest: a.digest,
          tags,
          admission: a.how,
          approvedBy: a.approvedBy,
          publisherKey: a.publisherKey,
          admittedAt: a.admittedAt,
          signature: a.signature,
          signedAt: a.signedAt,
          signingKey: a.signingKey,
          sizeBytes: s.content.imageBytes(a.digest),
          cachedBytes,
          revoked: false,
        };
      });
      const usage = s.blobs.usage();
      s.metrics.cacheBytes.set(usage.bytes);
      s.metrics.cacheBlobs.set(usage.blobs);
      return { images };
    },
  );

  app.post<{ Body: { repository: string; digest: string; reason: string } }>(
    '/images/revoke',
    {
      config: { role: 'admin', action: 'admin.revoke' },
      schema: {
        summary: 'Revoke an image',
        description:
          'Stops serving (repository, digest) whatever else admits it, drops its signature, and deletes the cached blobs no other admitted image references. ' +
          'A digest never pulled may be revoked ahead of time. Revoking it again answers 409. The repository is the canonical name, its upstream first ' +
          '(docker.io/library/alpine, not library/alpine, which answers 400); an upstream no longer configured is allowed.',
        tags: TAGS,
        body: obj({ repository: REPOSITORY, digest: DIGEST, reason: NOTE }),
        response: { 200: revocation, ...errors },
      },
    },
    async (req) => {
      const repository = canonicalOf(s, req.body.repository, '/repository', false);
      const { digest, reason } = req.body;
      Object.assign(req.airlock, { repository, digest, reason });
      const earlier = s.policyStore.revocation(repository, digest);
      if (earlier) throw new ApiError('CONFLICT', `${repository}@${digest} was already revoked at ${earlier.revokedAt} (${earlier.reason})`);
      s.policyStore.atomically(() => {
        s.policyStore.revoke(repository, digest, reason, actorOf(req));
        s.policyStore.forgetAdmission(repository, digest);
      });
      s.policy.changed();
      const removed = await removeUnreferencedBlobs(digest);
      const rev = s.policyStore.revocation(repository, digest);
      if (!rev) throw new ApiError('INTERNAL', `the revocation of ${repository}@${digest} was not stored`);
      return { ...rev, removedBlobs: removed.blobs, removedBytes: removed.bytes };
    },
  );

  app.post(
    '/images/resign',
    {
      config: { role: 'admin', action: 'admin.resign' },
      schema: {
        summary: 'Re-sign every admitted image with the current mirror key',
        description:
          'After a key rotation, existing signatures stay valid until re-signed; this replaces every admitted image\'s signature with one made by the key airlock runs with now. ' +
          'Images policy no longer admits are skipped.',
        tags: TAGS,
        response: { 200: obj({ resigned: { type: 'integer' }, skipped: { type: 'integer' }, keyId: { type: 'string' } }), ...errors },
      },
    },
    async () => {
      let resigned = 0;
      let skipped = 0;
      for (const a of s.policyStore.admissions()) {
        const decision = await s.policy.evaluate(routeOf(a.repository), a.digest);
        if (!decision.admitted) {
          skipped++;
          continue;
        }
        // Signed as admitted now, which may differ from the way recorded (a pin deleted since): the record follows.
        s.policyStore.recordAdmission({ repository: a.repository, digest: a.digest, how: decision.reason, approvedBy: decision.approvedBy, publisherKey: decision.publisherKey });
        s.signer.sign(a.repository, a.digest, decision);
        resigned++;
      }
      return { resigned, skipped, keyId: s.signer.keyId };
    },
  );

  // removeUnreferencedBlobs deletes the revoked image's cached blobs that no image policy still admits references.
  const removeUnreferencedBlobs = async (digest: string): Promise<{ blobs: number; bytes: number }> => {
    const candidates = imageTree(s, digest).blobs;
    if (candidates.size === 0) return { blobs: 0, bytes: 0 };
    const overlapping = s.policyStore.admissions().filter((a) => [...imageTree(s, a.digest).blobs.keys()].some((b) => candidates.has(b)));
    for (const a of await stillAdmitted(overlapping)) {
      for (const b of imageTree(s, a.digest).blobs.keys()) candidates.delete(b);
    }
    let blobs = 0;
    let bytes = 0;
    for (const b of candidates.keys()) {
      const size = s.blobs.size(b);
      if (size === null) {
        // Still downloading: it would land in the cache after the revocation; it is removed when the download ends.
        void s.mirror.inflight.ended(b)?.then(() => s.blobs.remove(b));
        continue;
      }
      await s.blobs.remove(b);
      blobs++;
      bytes += size;
    }
    const usage = s.blobs.usage();
    s.metrics.cacheBytes.set(usage.bytes);
    s.metrics.cacheBlobs.set(usage.blobs);
    if (blobs > 0) s.logger.info({ digest, blobs, bytes }, 'removed cached blobs of a revoked image');
    return { blobs, bytes };
  };

  app.get(
    '/drift',
    {
      config: { role: 'audit' },
      schema: {
        summary: 'List drifted tag pins',
        description: 'Pinned tags whose upstream now points elsewhere; the pin keeps being served.',
        tags: TAGS,
        response: { 200: list('drift', drift), ...errors },
      },
    },
    async () => ({ drift: s.policyStore.drift() }),
  );
}
