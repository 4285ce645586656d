// Roles of the admin API (SPEC §6): each route names the least role it needs in its config, one onRequest hook enforces
// it, and a refusal is audited as admin.refused.
import type { FastifyRequest } from 'fastify';
import { ApiError } from '../errors.js';
import type { Role } from '../pki/ca.js';
import { crossSite, refusedAsAdmin } from '../record.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    // role is the least role a route needs; a route that names none needs admin.
    role?: Role;
    // action is the audit action of a change; the app's onResponse hook writes its one event.
    action?: string;
  }
}

const RANK: Record<Role, number> = { pull: 0, audit: 1, admin: 2 };

// allows tells whether a caller holding role have may use a route that needs role need.
export function allows(have: Role | null, need: Role): boolean {
  return have !== null && RANK[have] >= RANK[need];
}

// requireRole is the API scope's onRequest hook: it refuses a caller whose role is too weak, or a request from another
// site's page (403, audited), and names the audit action of a change before validation, so that refused and malformed
// changes are audited too.
export async function requireRole(req: FastifyRequest): Promise<void> {
  const config = req.routeOptions.config;
  const need = config.role ?? 'admin';
  const have = req.airlock.identity?.role ?? null;
  const route = `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`;
  const refuse = (reason: string, message: string): ApiError => {
    refusedAsAdmin(req.airlock, req.method, req.url, reason, route);
    return new ApiError('FORBIDDEN', message);
  };
  const foreign = crossSite(req.headers);
  if (foreign !== null) throw refuse(`cross-site request: ${foreign}`, `${route} refused: ${foreign}; the API answers only its own console and clients that are not browsers`);
  if (!allows(have, need)) throw refuse(`needs role ${need}, certificate has ${have ?? 'none'}`, `${route} needs the ${need} role; this client certificate has the ${have ?? 'no'} role`);
  if (config.action) req.airlock.action = config.action;
}
