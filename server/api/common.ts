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
  const configured = `configured: ${names.join(', ') || 'none'}`;
  // A Docker short name (library/alpine, bitnami/redis) starts with a path component, not a host: taken as written it
  // would name an image nobody pulls, and a revocation of it would stop nothing. A host without a dot counts when it
  // is configured, or was (policy still names repositories of it).
  if (!names.includes(upstream) && !/[.:]/.test(upstream) && upstream !== 'localhost' && !s.policyStore.hostSeen(upstream)) {
    throw invalidField('body', field, `"${upstream}" is not a registry host: give the canonical name, the upstream first, like docker.io/${truncate(value, 64)} (${configured})`);
  }
  if (requireUpstream && !names.includes(upstream)) {
    throw invalidField('body', field, `"${upstream}" is not a configured upstream (${configured})`);
  }
  return repository;
}

interface ObjectSchema {
  properties?: Record<string, unknown>;
  required?: string[];
  additionalProperties?: boolean;
}

// checkKnownFields is a preValidation hook: Fastify's validator strips unknown properties silently (removeAdditional),
// so a body or query string schema with additionalProperties: false is enforced here, naming the unknown property (a
// misspelt ?sinse= would otherwise export everything); an absent body counts as {} when the schema requires nothing.
export async function checkKnownFields(req: FastifyRequest): Promise<void> {
  const query = req.routeOptions.schema?.querystring as ObjectSchema | undefined;
  if (query?.additionalProperties === false) refuseUnknown('querystring', query, req.query);
  const schema = req.routeOptions.schema?.body as ObjectSchema | undefined;
  if (!schema || schema.additionalProperties !== false) return;
  if (req.body === undefined || req.body === null) {
    if ((schema.required ?? []).length === 0) req.body = {};
    return;
  }
  refuseUnknown('body', schema, req.body);
  wellFormed(req.body);
}

// checkPathIntegers is a preValidation hook: an integer in the path (a pin's or a request's id) must be written as one,
// in decimal digits. Fastify's validator converts path text with Number(), which reads 0x1, 1e0, 1.0 and 01 as 1, so
// DELETE /api/v1/pins/0x1 deleted pin 1, and 20 digits named a pin 1e20 that cannot exist.
export async function checkPathIntegers(req: FastifyRequest): Promise<void> {
  const schema = req.routeOptions.schema?.params as { properties?: Record<string, { type?: unknown }> } | undefined;
  const params = req.params as Record<string, string>;
  for (const [key, property] of Object.entries(schema?.properties ?? {})) {
    const value = params[key];
    if (property.type !== 'integer' || typeof value !== 'string') continue;
    if (!/^(0|[1-9][0-9]*)$/.test(value) || !Number.isSafeInteger(Number(value))) {
      throw invalidField('params', `/${key}`, 'must be a whole number written in decimal digits, like 12');
    }
  }
}

// wellFormed replaces lone surrogates in a body's strings (and arrays of strings) with U+FFFD, as the audit event's
// fields are: SQLite would store them otherwise, and what the API keeps and returns would differ from what was audited.
function wellFormed(body: unknown): void {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
  const fields = body as Record<string, unknown>;
  for (const [key, value] of Object.entries(fields)) {
    if (typeof value === 'string') fields[key] = value.toWellFormed();
    else if (Array.isArray(value)) fields[key] = value.map((v: unknown) => (typeof v === 'string' ? v.toWellFormed() : v));
  }
}

function refuseUnknown(context: 'body' | 'querystring', schema: ObjectSchema, value: unknown): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return;
  const known = Object.keys(schema.properties ?? {});
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const what = context === 'body' ? 'property' : 'query parameter';
      throw invalidField(context, `/${truncate(key, 64)}`, `is not a known ${what} (known: ${known.join(', ')})`);
    }
  }
}
