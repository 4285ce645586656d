// The admin API under /api/v1 (SPEC §6) and /metrics (SPEC §8), with roles, JSON schemas on every route and the OpenAPI
// document generated from them.
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifySchema } from 'fastify';
import { type ClientKind, clientFiles, clientWarnings, DEFAULT_CERT_DIR, mirrorAddress } from '../clients.js';
import type { Services } from '../services.js';
import { certRoutes } from './certs.js';
import { checkKnownFields, checkPathIntegers, invalidField } from './common.js';
import { imageRoutes } from './images.js';
import { pinRoutes } from './pins.js';
import { publisherRoutes } from './publishers.js';
import { requestRoutes } from './requests.js';
import { requireRole } from './roles.js';
import { clientConfig, errors } from './schemas.js';

// API_PREFIX is where the admin API lives.
export const API_PREFIX = '/api/v1';

const EPOCH = '1970-01-01T00:00:00.000Z';
const FAR_FUTURE = '9999-12-31T23:59:59.999Z';

// API_HEADERS go on every answer of the admin API and /metrics (set by the app's onRequest hook, so refusals and 404s
// carry them too): private to the caller's role, never a page, kept by no cache.
export const API_HEADERS: Readonly<Record<string, string>> = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };

// OPTIONAL_BODY marks an operation whose body may be left out, between the swagger transforms below.
const OPTIONAL_BODY = 'x-airlock-optional-body';

// apiRoutes registers the admin API, /metrics and the OpenAPI document on an encapsulated scope of the app.
export async function apiRoutes(app: FastifyInstance, s: Services): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'airlock',
        version: packageVersion(),
        description:
          'Admin API of airlock, a private signed container-registry mirror. Every call authenticates with a client certificate (mutual TLS); ' +
          'its role (pull, audit or admin) is named by x-airlock-role on each operation. Errors are {"error":{"code","message"}}.',
      },
      tags: [
        { name: 'requests', description: 'approval requests created by refused pulls' },
        { name: 'pins', description: 'digests and tags admitted by name' },
        { name: 'publishers', description: 'trusted signers whose signatures admit images' },
        { name: 'images', description: 'admitted images, revocation and tag drift' },
        { name: 'certs', description: 'client certificates' },
        { name: 'clients', description: 'what clients need: the mirror key and configuration snippets' },
        { name: 'audit', description: 'the audit log export' },
        { name: 'operations', description: 'metrics and this document' },
      ],
    },
    transform: ({ schema, url, route }) => {
      const role = route.config?.role ?? 'admin';
      const documented: FastifySchema & Record<string, unknown> = { ...schema, 'x-airlock-role': role };
      // A body whose schema requires nothing may be left out (checkKnownFields takes it as {}): say so in the document.
      const body = schema?.body as { required?: string[] } | undefined;
      if (body !== undefined && (body.required ?? []).length === 0) documented[OPTIONAL_BODY] = true;
      return { schema: documented, url };
    },
    // @fastify/swagger marks every body required; the marker above turns that off where the body may be left out.
    transformObject: (doc) => {
      const spec = 'openapiObject' in doc ? doc.openapiObject : doc.swaggerObject;
      for (const path of Object.values((spec.paths ?? {}) as Record<string, Record<string, Record<string, unknown>>>)) {
        for (const op of Object.values(path)) {
          if (op[OPTIONAL_BODY] !== true) continue;
          delete op[OPTIONAL_BODY];
          if (op.requestBody && typeof op.requestBody === 'object') (op.requestBody as { required: boolean }).required = false;
        }
      }
      return spec;
    },
  });

  app.addHook('onRequest', requireRole);
  app.addHook('preValidation', checkKnownFields);
  app.addHook('preValidation', checkPathIntegers);

  // An empty body that says it is JSON (a DELETE from a script that always sends the header) is no body, as it is
  // without the header; anything else goes to Fastify's own JSON parser, with its prototype-poisoning checks. That
  // parser calls a body it refuses for a __proto__ key "not valid JSON"; one that is valid JSON is told why instead.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') return done(null, undefined);
    json(req, body as string, (err, value) => {
      if (err !== null && isJson(body as string)) done(invalidField('body', '/', 'holds a __proto__ or constructor.prototype key, which airlock refuses'));
      else done(err, value);
    });
  });

  app.get(
    '/metrics',
    {
      config: { role: 'audit' },
      schema: {
        summary: 'Prometheus metrics',
        tags: ['operations'],
        response: { 200: { description: 'Prometheus text exposition', content: { 'text/plain': { schema: { type: 'string' } } } }, ...errors },
      },
    },
    async (_req, reply) => {
      // Read at each scrape, so that a renewed or revoked admin certificate shows at once, whichever process issued it.
      const adminEnd = s.certs.lastAdminEnd();
      if (adminEnd === null) s.metrics.certificateExpiry.remove({ cert: 'admin' });
      else s.metrics.certificateExpiry.set({ cert: 'admin' }, Date.parse(adminEnd) / 1000);
      const body = await s.metrics.registry.metrics();
      return reply.header('cache-control', 'no-store').type(s.metrics.registry.contentType).send(body);
    },
  );

  await app.register(
    async (api) => {
      await requestRoutes(api, s);
      await pinRoutes(api, s);
      await publisherRoutes(api, s);
      await imageRoutes(api, s);
      await certRoutes(api, s);
      await clientRoutes(api, s);
      await auditRoutes(api, s);
      api.get(
        '/openapi.json',
        { config: { role: 'audit' }, schema: { summary: 'This OpenAPI document', tags: ['operations'] } },
        async () => api.swagger(),
      );
    },
    { prefix: API_PREFIX },
  );
}

// clientRoutes registers what pull clients may read: the mirror's public key and client configuration snippets.
async function clientRoutes(app: FastifyInstance, s: Services): Promise<void> {
  app.get(
    '/signing-key',
    {
      config: { role: 'pull' },
      schema: {
        summary: "The mirror's public signing key",
        description: 'PEM public key that verifies every signature airlock serves (cosign verify --key). Its fingerprint is in x-airlock-key-id.',
        tags: ['clients'],
        response: { 200: { description: 'PEM public key', content: { 'application/x-pem-file': { schema: { type: 'string' } } } }, ...errors },
      },
    },
    async (_req, reply) => reply.type('application/x-pem-file').header('x-airlock-key-id', s.signer.keyId).send(s.signer.publicPem),
  );

  app.get<{ Querystring: { kind: ClientKind; certDir: string } }>(
    '/client-config',
    {
      config: { role: 'pull' },
      schema: {
        summary: 'Client configuration snippets',
        description:
          'The files a Docker, containerd or podman machine needs to pull through this mirror only. Certificate paths inside them name the ' +
          'client bundle (ca.crt, client.cert, client.key) in certDir, the absolute folder where the operator puts it on the client (default /etc/airlock).',
        tags: ['clients'],
        querystring: {
          type: 'object',
          properties: {
            kind: { type: 'string', enum: ['docker', 'containerd', 'podman'], default: 'docker' },
            certDir: {
              type: 'string',
              pattern: '^/[A-Za-z0-9._/-]+$',
              maxLength: 200,
              default: DEFAULT_CERT_DIR,
              description: 'absolute folder of the client bundle on the client machine, as the returned files should name it',
            },
          },
          additionalProperties: false,
        },
        response: { 200: clientConfig, ...errors },
      },
    },
    async (req) => {
      const listening = app.server.address() as AddressInfo | null;
      const address = mirrorAddress(s.config, { host: s.config.listen.host, port: listening?.port ?? s.config.listen.port }, s.serverNames);
      const kind = req.query.kind;
      return { kind, address, files: clientFiles(kind, s.config, address, req.query.certDir), warnings: clientWarnings(kind, address) };
    },
  );
}

// auditRoutes registers the audit export.
async function auditRoutes(app: FastifyInstance, s: Services): Promise<void> {
  app.get<{ Querystring: { since?: string; until?: string; format: 'jsonl' | 'csv' } }>(
    '/audit',
    {
      config: { role: 'audit', action: 'admin.audit.export' },
      schema: {
        summary: 'Export the audit log',
        description:
          'Events with since <= time < until (RFC 3339; default: everything). JSONL ends with a checkpoint signed by the mirror key over its last event, ' +
          'so the export verifies on its own (airlock audit verify); CSV has the same columns.',
        tags: ['audit'],
        querystring: {
          type: 'object',
          properties: {
            since: { type: 'string', format: 'date-time' },
            until: { type: 'string', format: 'date-time' },
            format: { type: 'string', enum: ['jsonl', 'csv'], default: 'jsonl' },
          },
          additionalProperties: false,
        },
        response: {
          200: {
            description: 'the export',
            content: { 'application/x-ndjson': { schema: { type: 'string' } }, 'text/csv': { schema: { type: 'string' } } },
          },
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const since = req.query.since ? isoTime(req.query.since, 'since') : EPOCH;
      const until = req.query.until ? isoTime(req.query.until, 'until') : FAR_FUTURE;
      if (until < since) throw invalidField('querystring', '/until', 'must not be earlier than since');
      const format = req.query.format;
      req.airlock.reason = `${format} ${since} .. ${until}`;
      // The export reads the log a page at a time as the client consumes it, so memory stays flat however long it is.
      return reply
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
        .header('content-disposition', `attachment; filename="airlock-audit.${format}"`)
        .header('cache-control', 'no-store')
        .send(Readable.from(s.audit.export(since, until, format)));
    },
  );
}

// packageVersion reads airlock's version from the package.json above this file (in a checkout and in dist/ alike).
function packageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'airlock' && typeof pkg.version === 'string') return pkg.version;
    }
    dir = path.dirname(dir);
  }
  return '0.0.0';
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

// isoTime normalises an RFC 3339 time for comparison with stored event times; a leap second (:60), which JavaScript
// dates cannot hold, counts as the first instant of the next minute. Event times have milliseconds, so a time between
// two milliseconds counts as the later one: an event at 10:00:00.000 is before until=10:00:00.0005, and not after
// since=10:00:00.0005. A time past the year 9999 (9999-12-31T23:59:60Z, or an offset into the year 10000) counts as
// FAR_FUTURE: its ISO string (+010000-…) would sort before every stored time, a since exporting everything.
function isoTime(value: string, field: string): string {
  const leap = /^(.*T\d{2}:\d{2}):60(\.\d+)?(.*)$/i.exec(value);
  const d = leap ? new Date(new Date(`${leap[1]}:59${leap[3]}`).getTime() + 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) throw invalidField('querystring', `/${field}`, 'must be an RFC 3339 date-time');
  const beyondMs = /[1-9]/.test(/T[0-9:]+\.([0-9]+)/i.exec(value)?.[1]?.slice(3) ?? '');
  return new Date(Math.min(d.getTime() + (beyondMs ? 1 : 0), Date.parse(FAR_FUTURE))).toISOString();
}
