// Small helpers the admin API routes share: who is calling, the route of a canonical name, and 400s that name a field.
import type { FastifyRequest } from 'fastify';
import type { Route } from '../registry/names.js';
import type { Services } from '../services.js';
import { canonicalRepository, truncate } from '../registry/names.js';

// actorOf is the calling client certificate's CN.
export function actorOf(req: FastifyRequest): string | null {
  return req.airlock.identity?.cn ?? null;
}

// routeOf is the route of a canonical repository name UPSTREAM/PATH, as policy and signing take it.
export function routeOf(repository: string): Route {
  const slash = repository.indexOf('/');
  return { upstream: repository.slice(0, slash), path: repository.slice(slash + 1), repository };
}

// invalidField is a 400 shaped like a schema failure, so the app's error handler names the field as it does for those.
export function invalidField(context: 'body' | 'querystring' | 'params', field: string, message: string): Error {
  return Object.assign(new Error(`${field} ${message}`), {
    statusCode: 400,
    validationContext: context,
    validation: [{ keyword: 'airlock', instancePath: field, schemaPath: '#', params: {}, message }],
  });
}

// canonicalOf folds a repository from a request body into its canonical name, or throws a 400 naming the field.
export function canonicalOf(s: Services, value: string, field: string, requireUpstream: boolean): string {
  let repository: string;
  try {
    repository = canonicalRepository(value);
  } catch (err) {
    throw invalidField('body', field, (err as Error).message);
  }
  const upstream = repository.slice(0, repository.indexOf('/'));
  const names = s.config.upstreams.map((u) => u.name);
  if (requireUpstream && !names.includes(upstream)) {
    throw invalidField('body', field, `"${upstream}" is not a configured upstream (configured: ${names.join(', ') || 'none'})`);
  }
  return repository;
}

interface BodySchema {
  properties?: Record<string, unknown>;
  required?: string[];
  additionalProperties?: boolean;
}

// checkBodyFields is a preValidation hook: Fastify's validator strips unknown properties silently (removeAdditional),
// so a body schema with additionalProperties: false is enforced here, naming the unknown property; an absent body
// counts as {} when the schema requires nothing.
export async function checkBodyFields(req: FastifyRequest): Promise<void> {
  const schema = req.routeOptions.schema?.body as BodySchema | undefined;
  if (!schema || schema.additionalProperties !== false) return;
  if (req.body === undefined || req.body === null) {
    if ((schema.required ?? []).length === 0) req.body = {};
    return;
  }
  if (typeof req.body !== 'object' || Array.isArray(req.body)) return;
  const known = Object.keys(schema.properties ?? {});
  for (const key of Object.keys(req.body)) {
    if (!known.includes(key)) {
      throw invalidField('body', `/${truncate(key, 64)}`, `is not a known property (known: ${known.join(', ')})`);
    }
  }
}
