// Approval requests (SPEC §6): list them; approve one (pins the digest and signs it at once) or deny it.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ApprovalRequest } from '../../storage/policy.js';
import { ApiError } from '../errors.js';
import type { Services } from '../services.js';
import { actorOf, routeOf } from './common.js';
import { approvalRequest, errors, idParam, list, NOTE, obj } from './schemas.js';

const TAGS = ['requests'];
// A list answers at most REQUESTS_MAX requests, REQUESTS_DEFAULT unless asked: a pull certificate can create one per
// refused digest, and the console asks again every few seconds.
const REQUESTS_DEFAULT = 500;
const REQUESTS_MAX = 5000;

// requestRoutes registers /requests.
export async function requestRoutes(app: FastifyInstance, s: Services): Promise<void> {
  const find = (req: FastifyRequest, id: number): ApprovalRequest => {
    const r = s.policyStore.request(id);
    if (!r) throw new ApiError('NOT_FOUND', `no approval request ${id}`);
    req.airlock.repository = r.repository;
    req.airlock.digest = r.digest;
    req.airlock.reference = r.tag;
    return r;
  };

  app.get<{ Querystring: { status?: ApprovalRequest['status']; limit?: number } }>(
    '/requests',
    {
      config: { role: 'audit' },
      schema: {
        summary: 'List approval requests',
        description:
          `Refused pulls create or bump one request per (repository, digest); newest activity first, at most \`limit\` of them ` +
          `(default ${REQUESTS_DEFAULT}). The \`X-Total-Count\` header says how many match in all.`,
        tags: TAGS,
        querystring: {
          type: 'object',
          properties: {
            status: { type: 'string', enum: ['pending', 'approved', 'denied'] },
            limit: { type: 'integer', minimum: 1, maximum: REQUESTS_MAX, default: REQUESTS_DEFAULT },
          },
          additionalProperties: false,
        },
        response: { 200: list('requests', approvalRequest), ...errors },
      },
    },
    async (req, reply) => {
      const { requests, total } = s.policyStore.requests(req.query.status ?? null, req.query.limit ?? REQUESTS_DEFAULT);
      reply.header('x-total-count', total);
      return { requests };
    },
  );

  app.post<{ Params: { id: number }; Body: { note?: string } }>(
    '/requests/:id/approve',
    {
      config: { role: 'admin', action: 'admin.approve' },
      schema: {
        summary: 'Approve a request',
        description: 'Pins the digest (source approval, by the caller), admits it and signs it with the mirror key. A denied request may be approved later; an approved one answers 409.',
        tags: TAGS,
        params: idParam,
        body: obj({ note: NOTE }, ['note']),
        response: { 200: approvalRequest, ...errors },
      },
    },
    async (req) => {
      const r = find(req, req.params.id);
      const note = req.body.note ?? null;
      req.airlock.reason = note;
      if (r.status === 'approved') throw new ApiError('CONFLICT', `request ${r.id} was already approved by ${r.decidedBy ?? 'an unknown admin'} at ${r.decidedAt ?? 'an unknown time'}`);
      const revoked = s.policyStore.revocation(r.repository, r.digest);
      if (revoked) throw new ApiError('CONFLICT', `${r.repository}@${r.digest} was revoked at ${revoked.revokedAt} (${revoked.reason}); a revoked image cannot be approved`);
      const by = actorOf(req);
      const decided = s.policyStore.atomically(() => {
        s.policyStore.addPin({ repository: r.repository, digest: r.digest, tag: null, note: note ?? `approval request ${r.id}`, source: 'approval', createdBy: by });
        return s.policyStore.decideRequest(r.id, 'approved', by, note) ?? r;
      });
      s.policy.changed();
      const verdict = await s.policy.admit(routeOf(r.repository), r.digest, { tag: r.tag, actor: by });
      if (!verdict.admitted) s.logger.warn({ repo: r.repository, digest: r.digest, reason: verdict.reason }, 'approved image is still not admitted');
      return decided;
    },
  );

  app.post<{ Params: { id: number }; Body: { reason: string } }>(
    '/requests/:id/deny',
    {
      config: { role: 'admin', action: 'admin.deny' },
      schema: {
        summary: 'Deny a request',
        description: 'Refuses the digest from now on (later pulls keep being refused). Denying an approved request removes its approval pin; other pins still admit it.',
        tags: TAGS,
        params: idParam,
        body: obj({ reason: NOTE }),
        response: { 200: approvalRequest, ...errors },
      },
    },
    async (req) => {
      const r = find(req, req.params.id);
      req.airlock.reason = req.body.reason;
      if (r.status === 'denied') throw new ApiError('CONFLICT', `request ${r.id} was already denied by ${r.decidedBy ?? 'an unknown admin'} at ${r.decidedAt ?? 'an unknown time'}`);
      const decided = s.policyStore.atomically(() => {
        for (const p of s.policyStore.pins()) {
          if (p.repository === r.repository && p.digest === r.digest && p.source === 'approval') s.policyStore.deletePin(p.id);
        }
        return s.policyStore.decideRequest(r.id, 'denied', actorOf(req), req.body.reason) ?? r;
      });
      s.policy.changed();
      return decided;
    },
  );
}
