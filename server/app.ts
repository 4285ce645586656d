// The airlock app as a Fastify plugin tree: identity from the client certificate, one log line and one audit event
// per request, the OCI error body for /v2/, and the admin API's JSON errors.
import { AjvCompiler } from '@fastify/ajv-compiler';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { apiRoutes } from './api/routes.js';
import { consoleRoutes } from './console.js';
import { ApiError, apiCodeFor, databaseUnavailable, RegistryError } from './errors.js';
import { whyRefused } from './pki/identity.js';
import { crossSite, freshContext, identityOf, type Recorder, refusedAsAdmin, routeLabel } from './record.js';
import { registryRoutes } from './registry/routes.js';
import { REGISTRY_HEADERS } from './registry/send.js';
import { API_HEADERS } from './api/routes.js';
import type { RequestContext, Services } from './services.js';
import type { TLSSocket } from 'node:tls';

// CONTENT_HEADERS describe the content a route was about to send; an error answer drops them (a 503 must not go out
// cacheable for a year under the blob's ETag).
const CONTENT_HEADERS = ['etag', 'docker-content-digest', 'cache-control', 'accept-ranges', 'content-range', 'content-disposition'];

// Fastify's validator coerces values to the schema's types (Ajv's coerceTypes: 'array'), which a query string or a
// path parameter, always text, needs; a JSON body has types of its own, and one of the wrong type (a number for a
// name, ["admin"] for a role) is refused as SPEC §6 says, not converted.
const compilers = AjvCompiler();
const coercing = compilers({}, { customOptions: {} });
const exact = compilers({}, { customOptions: { coerceTypes: false } });
const validatorCompiler = (route: Parameters<typeof exact>[0]): ReturnType<typeof exact> => (route.httpPart === 'body' ? exact : coercing)(route);

// buildApp registers everything on a Fastify instance made by runtime.ts.
export async function buildApp(app: FastifyInstance, s: Services, record: Recorder, extra: (app: FastifyInstance) => Promise<void> = async () => {}): Promise<void> {
  app.decorateRequest('airlock', null as unknown as RequestContext);
  app.setValidatorCompiler(validatorCompiler);

  // The hook takes a callback rather than returning a promise: it runs on every request, and a promise per request is
  // measurable at the request rates a mirror sees.
  app.addHook('onRequest', (req, reply, done) => {
    const identity = identityOf(req.raw.socket as TLSSocket);
    req.airlock = freshContext(identity, routeLabel(req.url));
    // Every response closes, finished or cut off by the client (a download stopped half way, which never reaches
    // Fastify's onResponse), so this is where each request is counted, audited and logged.
    reply.raw.once('close', () => record(req.airlock, req.method, req.url, req.ip, reply.statusCode, !reply.raw.writableFinished, reply.elapsedTime));
    const refused = identity && whyRefused(identity, s.revoked);
    if (identity && refused) {
      // A certificate revoked (or expired) while its connection stayed open: the connection ends, and the request is
      // logged and counted as cut off, its audit event the tls.refused one.
      Object.assign(req.airlock, { action: 'tls.refused', decision: 'deny', reason: `certificate ${refused}` });
      s.metrics.tlsRefused.inc({ reason: refused });
      req.raw.socket.destroy();
      return;
    }
    // Fastify matches a path percent-decoded (/%762/… reaches the registry's /v2/* route, /%61pi/… the API's), while
    // the checks below read it as sent: a pull by another site's page through /%762/ was not refused as cross-site, nor
    // while the audit log cannot be written. A path whose fixed part, up to the route's first parameter, is escaped
    // reaches no route.
    const fixed = req.routeOptions.url?.replace(/[:*].*$/, '');
    if (fixed !== undefined && !req.url.startsWith(fixed)) {
      return done(new ApiError('NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0].slice(0, 200)}: write its fixed part ${fixed} unescaped`));
    }
    const registry = req.url.startsWith('/v2');
    if (registry) reply.headers(REGISTRY_HEADERS);
    else if (req.url.startsWith('/api/') || req.url.startsWith('/metrics')) reply.headers(API_HEADERS);
    if (s.closing) {
      const why = 'airlock is shutting down; try again';
      reply.header('connection', 'close');
      if (registry) return done(new RegistryError('UNAVAILABLE', why));
      // A change refused this way is audited; a read is logged.
      if (req.method !== 'GET' && req.method !== 'HEAD') refusedAsAdmin(req.airlock, req.method, req.url, 'shutting down');
      return done(new ApiError('UNAVAILABLE', why));
    }
    if (s.audit.full && (registry || (req.method !== 'GET' && req.method !== 'HEAD'))) {
      // Nothing is served or changed that the audit log could not record (SPEC §7); reads of the API and the console go on.
      const why = 'the audit log cannot be written (its database refuses writes); airlock refuses requests until it can';
      return done(registry ? new RegistryError('UNAVAILABLE', why) : new ApiError('UNAVAILABLE', why));
    }
    if (registry) {
      const foreign = crossSite(req.headers);
      if (foreign !== null) {
        req.airlock.reason = `cross-site request: ${foreign}`;
        return done(new RegistryError('DENIED', `cross-site request: ${foreign}; the registry answers container clients, not the pages of other sites`));
      }
    }
    if (!identity || identity.role === null) {
      const err = 'the client certificate names no airlock role (pull, audit or admin)';
      if (registry) return done(new RegistryError('DENIED', err));
      // The console answers a certificate without a role with its refusal page, and audits it (console.ts).
      if (identity && (req.method === 'GET' || req.method === 'HEAD') && (req.url === '/ui' || req.url.startsWith('/ui/') || req.url.startsWith('/ui?'))) return done();
      if (!req.url.startsWith('/healthz')) {
        // Refused like a role that is too weak, and audited as such (the /v2 refusal is audited as a registry request).
        refusedAsAdmin(req.airlock, req.method, req.url, 'the certificate names no role');
        return done(new ApiError('FORBIDDEN', err));
      }
    }
    done();
  });

  app.setErrorHandler((thrown: FastifyError | RegistryError | ApiError, req: FastifyRequest, reply: FastifyReply) => {
    const isRegistry = req.url.startsWith('/v2');
    if (isRegistry) for (const name of CONTENT_HEADERS) reply.removeHeader(name);
    let err = thrown;
    // A database that refuses a statement for now (a lock held elsewhere, a full disk) is answered as unavailable.
    const unavailable = databaseUnavailable(thrown);
    if (unavailable !== null) {
      s.logger.warn({ err: thrown.message }, `request refused: ${unavailable}`);
      if (req.airlock) req.airlock.reason ??= 'database unavailable';
      err = isRegistry ? new RegistryError('UNAVAILABLE', `${unavailable}; try again`) : new ApiError('UNAVAILABLE', `${unavailable}; try again`);
    }
    if (err instanceof RegistryError) {
      if (req.airlock && !req.airlock.reason) req.airlock.reason = err.code.toLowerCase();
      if (req.airlock && err.code === 'DENIED' && !req.airlock.decision) req.airlock.decision = 'deny';
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      return reply.code(err.status).header('content-type', 'application/json').send(err.body());
    }
    if (err instanceof ApiError) {
      return reply.code(err.status).send({ error: { code: err.code, message: err.message } });
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      const first = fe.validation[0];
      const missing = first?.params && 'missingProperty' in first.params ? `/${String(first.params.missingProperty)}` : '';
      const field = first ? `${first.instancePath}${missing}` || '/' : '';
      const message = `invalid ${fe.validationContext ?? 'request'}: ${field} ${first?.message ?? fe.message}`.trim();
      if (isRegistry) return reply.code(400).send(new RegistryError('NAME_INVALID', message).body());
      return reply.code(400).send({ error: { code: 'BAD_REQUEST', message, field } });
    }
    const status = typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500 ? fe.statusCode : 500;
    if (status === 500) s.logger.error({ err: { message: fe.message, stack: fe.stack } }, 'unhandled error');
    const message = status === 500 ? 'internal error; see the server log' : fe.message;
    if (isRegistry) {
      const code = status === 500 ? 'UNKNOWN' : status === 413 ? 'SIZE_INVALID' : 'UNSUPPORTED';
      return reply.code(status).header('content-type', 'application/json').send({ errors: [{ code, message, detail: null }] });
    }
    return reply.code(status).send({ error: { code: apiCodeFor(status), message } });
  });

  app.setNotFoundHandler((req, reply) => {
    if (req.url.startsWith('/v2')) {
      return reply.code(404).header('content-type', 'application/json').send(new RegistryError('NAME_UNKNOWN', 'no such endpoint').body());
    }
    return reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0].slice(0, 200)}` } });
  });

  app.get('/healthz', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    if (s.audit.full) {
      // A load balancer sends pulls elsewhere while this server refuses them.
      return reply.code(503).send({ status: 'unavailable', reason: 'the audit log cannot be written', startedAt: s.startedAt.toISOString() });
    }
    return { status: 'ok', startedAt: s.startedAt.toISOString() };
  });

  await app.register(async (scope) => registryRoutes(scope, s, record));
  await app.register(async (scope) => apiRoutes(scope, s));
  await app.register(async (scope) => consoleRoutes(scope, s));
  await extra(app);
}
