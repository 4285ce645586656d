// Pins (SPEC §6): list, add (a digest pin, or a tag pin when tag is set), delete.
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import type { Services } from '../services.js';
import { actorOf, canonicalOf } from './common.js';
import { DIGEST, errors, idParam, list, NOTE, obj, pin, REPOSITORY, TAG } from './schemas.js';

const TAGS = ['pins'];

interface PinBody {
  repository: string;
  digest: string;
  tag?: string;
  note?: string;
}

// pinRoutes registers /pins.
export async function pinRoutes(app: FastifyInstance, s: Services): Promise<void> {
  app.get(
    '/pins',
    {
      config: { role: 'audit' },
      schema: { summary: 'List pins', description: 'Pins from the configuration, the API and approvals, oldest first.', tags: TAGS, response: { 200: list('pins', pin), ...errors } },
    },
    async () => ({ pins: s.policyStore.pins() }),
  );

  app.post<{ Body: PinBody }>(
    '/pins',
    {
      config: { role: 'admin', action: 'admin.pin.add' },
      schema: {
        summary: 'Add a pin',
        description:
          'Admits (repository, digest); with tag, the tag is served from this digest without asking the upstream. The repository is canonicalised and its upstream must be configured. ' +
          'An identical pin answers 200 with it; an identical pin an approval made becomes an API pin (201), which a later deny of the request leaves in place. ' +
          'A tag already pinned to another digest, or a revoked digest, answers 409.',
        tags: TAGS,
        body: obj({ repository: REPOSITORY, digest: DIGEST, tag: TAG, note: NOTE }, ['tag', 'note']),
        response: { 200: pin, 201: pin, ...errors },
      },
    },
    async (req, reply) => {
      const repository = canonicalOf(s, req.body.repository, '/repository', true);
      const tag = req.body.tag ?? null;
      Object.assign(req.airlock, { repository, digest: req.body.digest, reference: tag, reason: req.body.note ?? null });
      const revoked = s.policyStore.revocation(repository, req.body.digest);
      if (revoked) throw new ApiError('CONFLICT', `${repository}@${req.body.digest} was revoked at ${revoked.revokedAt} (${revoked.reason}); a revoked image cannot be pinned`);
      const added = s.policyStore.addPin({ repository, digest: req.body.digest, tag, note: req.body.note ?? null, source: 'api', createdBy: actorOf(req) });
      if (!added) {
        const other = tag === null ? null : s.policyStore.pinForTag(repository, tag);
        throw new ApiError('CONFLICT', `${repository}:${tag ?? ''} is already pinned to ${other?.digest ?? 'another digest'}${other ? ` (pin ${other.id})` : ''}; delete that pin first`);
      }
      if (added.created) s.policy.changed();
      return reply.code(added.created ? 201 : 200).send(added.pin);
    },
  );

  app.delete<{ Params: { id: number } }>(
    '/pins/:id',
    {
      config: { role: 'admin', action: 'admin.pin.delete' },
      schema: {
        summary: 'Delete a pin',
        description:
          'Pins from the configuration file cannot be deleted here (they come back at the next start): 409. Deleting the pin an approval made puts its request back to pending.',
        tags: TAGS,
        params: idParam,
        response: { 204: { type: 'null', description: 'deleted' }, ...errors },
      },
    },
    async (req, reply) => {
      const p = s.policyStore.pin(req.params.id);
      if (!p) throw new ApiError('NOT_FOUND', `no pin ${req.params.id}`);
      Object.assign(req.airlock, { repository: p.repository, digest: p.digest, reference: p.tag });
      if (p.source === 'config') throw new ApiError('CONFLICT', `pin ${p.id} comes from the configuration file; remove it there (it would be restored at the next start)`);
      s.policyStore.atomically(() => {
        s.policyStore.deletePin(p.id);
        if (p.tag !== null) s.policyStore.clearDrift(p.repository, p.tag);
      });
      s.policy.changed();
      return reply.code(204).send();
    },
  );
}
