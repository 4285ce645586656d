// Publishers (SPEC §6): trusted signers' public keys and the repository globs they vouch for.
import type { FastifyInstance } from 'fastify';
import type { Publisher } from '../../storage/policy.js';
import { ApiError } from '../errors.js';
import { publisherKeys } from '../policy/publishers.js';
import type { Services } from '../services.js';
import { actorOf } from './common.js';
import { errors, GLOB, list, obj, publisher, PUBLISHER_NAME } from './schemas.js';

const TAGS = ['publishers'];
const KEY_LIMIT = 64 * 1024;

interface PublisherBody {
  name: string;
  publicKey: string;
  repositories: string[];
}

// publisherView is a publisher as the API shows it, its fingerprints as a list.
function publisherView(p: Publisher) {
  return { ...p, fingerprints: p.fingerprint.split(',').filter((f) => f !== '') };
}

// publisherRoutes registers /publishers.
export async function publisherRoutes(app: FastifyInstance, s: Services): Promise<void> {
  app.get(
    '/publishers',
    {
      config: { role: 'audit' },
      schema: { summary: 'List publishers', tags: TAGS, response: { 200: list('publishers', publisher), ...errors } },
    },
    async () => ({ publishers: s.policyStore.publishers().map(publisherView) }),
  );

  app.post<{ Body: PublisherBody }>(
    '/publishers',
    {
      config: { role: 'admin', action: 'admin.publisher.add' },
      schema: {
        summary: 'Add a publisher',
        description:
          'Trusts a cosign public key (PEM, one or more PUBLIC KEY blocks) for the repositories matching the globs. A key that does not parse answers 422; an existing name answers 409. ' +
          'Only the usable PUBLIC KEY blocks are kept, written out again (anything else in the text, comments or a private key pasted by mistake, is dropped).',
        tags: TAGS,
        body: obj({
          name: PUBLISHER_NAME,
          publicKey: { type: 'string', minLength: 1, maxLength: KEY_LIMIT, description: 'PEM public key(s)' },
          repositories: { type: 'array', minItems: 1, maxItems: 256, items: GLOB },
        }),
        response: { 201: publisher, ...errors },
      },
    },
    async (req, reply) => {
      const { name, publicKey, repositories } = req.body;
      Object.assign(req.airlock, { reference: name, reason: repositories.join(' ') });
      if (s.policyStore.publisher(name)) throw new ApiError('CONFLICT', `publisher ${name} already exists; delete it first to replace its key`);
      let keys: { publicKey: string; fingerprint: string };
      try {
        keys = publisherKeys(publicKey);
      } catch (err) {
        throw new ApiError('UNPROCESSABLE', (err as Error).message);
      }
      s.policyStore.addPublisher({ name, ...keys, repositories: [...new Set(repositories)], source: 'api', createdBy: actorOf(req) });
      s.policy.changed();
      const added = s.policyStore.publisher(name);
      if (!added) throw new ApiError('INTERNAL', `publisher ${name} was not stored`);
      return reply.code(201).send(publisherView(added));
    },
  );

  app.delete<{ Params: { name: string } }>(
    '/publishers/:name',
    {
      config: { role: 'admin', action: 'admin.publisher.delete' },
      schema: {
        summary: 'Delete a publisher',
        description: 'Publishers from the configuration file cannot be deleted here (they come back at the next start): 409.',
        tags: TAGS,
        params: obj({ name: PUBLISHER_NAME }),
        response: { 204: { type: 'null', description: 'deleted' }, ...errors },
      },
    },
    async (req, reply) => {
      const p = s.policyStore.publisher(req.params.name);
      req.airlock.reference = req.params.name;
      if (!p) throw new ApiError('NOT_FOUND', `no publisher ${req.params.name}`);
      if (p.source === 'config') throw new ApiError('CONFLICT', `publisher ${p.name} comes from the configuration file; remove it there (it would be restored at the next start)`);
      s.policyStore.deletePublisher(p.name);
      s.policy.changed();
      return reply.code(204).send();
    },
  );
}
