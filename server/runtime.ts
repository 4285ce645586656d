// startAirlock assembles a running airlock from a validated configuration: storage, upstreams, policy, signing,
// audit, metrics and the one mutual-TLS HTTPS listener. main.ts and the tests both start airlock through it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { METHODS, type ServerResponse, STATUS_CODES } from 'node:http';
import nodeHttps from 'node:https';
import path from 'node:path';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import type { Logger } from 'pino';
import { createAuditStore, startAuditWriter } from '../storage/audit.js';
import { BlobStore } from '../storage/blobs.js';
import { type CertStore, createCertStore } from '../storage/certs.js';
import { createContentStore } from '../storage/content.js';
import { DB_FILE, dataVersion, openDatabase } from '../storage/db.js';
import { type DataDirLock, lockDataDir } from '../storage/lock.js';
import { createPolicyStore } from '../storage/policy.js';
import { API_HEADERS } from './api/routes.js';
import { buildApp } from './app.js';
import { serverNames } from './clients.js';
import { createRecorder, freshContext, identityOf, type Recorder, routeLabel } from './record.js';
import { AuditLog, MAX_QUEUED } from './audit/log.js';
import type { Config } from './config.js';
import { apiCodeFor, RegistryError, UserError } from './errors.js';
import { createMetrics, type Metrics } from './metrics.js';
import { Mirror } from './mirror/mirror.js';
import { Upstream } from './mirror/upstream.js';
import { CertAuthority } from './pki/authority.js';
import { clientTrust, pemCertificates } from './pki/ca.js';
import { identityFromPeer, whyRefused } from './pki/identity.js';
import { createLogger } from './logging.js';
import { Policy } from './policy/policy.js';
import { UpstreamSignatureVerifier } from './policy/publishers.js';
import { seedPolicy } from './policy/seed.js';
import type { RevokedSerials, Services } from './services.js';
import { loadSigningKey } from './signing/key.js';
import { Signer } from './signing/signer.js';
import { REGISTRY_HEADERS } from './registry/send.js';

const REVOCATION_POLL_MS = 250;

// MAX_PIPELINED bounds the requests one connection may have under way at once (see serverFactory below).
const MAX_PIPELINED = 8;

// Airlock is a running server.
export interface Airlock {
  services: Services;
  app: FastifyInstance;
  url: string;
  port: number;
  close(): Promise<void>;
  // hurry makes a close under way stop waiting: open connections and downloads are cut, the audit log still closes.
  hurry(): void;
}

// REQUEST_BUSY_MS is how long the request thread's statements wait for another connection's write lock.
const REQUEST_BUSY_MS = 250;

// StartOptions let tests and main.ts choose the logger and extra routes.
export interface StartOptions {
  logger?: Logger;
  extraRoutes?: (app: FastifyInstance, s: Services) => Promise<void>;
  driftCheckMs?: number;
  // maxAuditQueue bounds the audit events waiting for the database (MAX_QUEUED unless a test sets a small one).
  maxAuditQueue?: number;
  // expiryCheckMs is how often certificate expiry is checked again after start (a day unless a test sets it).
  expiryCheckMs?: number;
}

// startAirlock opens everything and listens; close() stops cleanly.
export async function startAirlock(config: Config, opts: StartOptions = {}): Promise<Airlock> {
  // A second airlock started on an address in use would fail only at listen, after it had removed the downloads under
  // way in the data directory and applied its own policy seeds: the address is tried before anything is touched, and
  // so is the data directory's lock (another server on the same directory but another address).
  await probeListen(config);
  const lock = lockDataDir(config.dataDir);
  try {
    return await start(config, opts, lock);
  } catch (err) {
    lock.release();
    throw err;
  }
}

async function start(config: Config, opts: StartOptions, lock: DataDirLock): Promise<Airlock> {
  const logger = opts.logger ?? createLogger(config.log.level);
  // The keys are read before the database is opened, and so migrated: a start that fails on a wrong password must leave
  // the database as the build before it can still open it.
  let signingKey;
  try {
    signingKey = loadSigningKey(fs.readFileSync(config.signing.key, 'utf8'), config.signing.password);
    // Signatures and audit checkpoints are ECDSA P-256 (SPEC §5, §7): another key would fail at the first checkpoint.
    if (signingKey.asymmetricKeyType !== 'ec' || signingKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new Error(`the mirror key must be ECDSA P-256, not ${signingKey.asymmetricKeyType}${signingKey.asymmetricKeyDetails?.namedCurve ? ` ${signingKey.asymmetricKeyDetails.namedCurve}` : ''}`);
    }
  } catch (err) {
    const wrongPassword = (err as Error).message.startsWith('cannot decrypt');
    throw new UserError(`signing key ${config.signing.key}: ${(err as Error).message}${wrongPassword ? ` (the password is read from ${config.signing.passwordFrom})` : ''}`);
  }
  // The TLS files are read once: the listener, the bundles issued and the expiry checks all use these.
  const serverCert = fs.readFileSync(config.tls.cert);
  const clientCaPems = config.tls.clientCa.map((file) => ({ file, pem: fs.readFileSync(file, 'utf8') }));
  const ca = loadCa(config, clientCaPems[0].pem);

  const db = openDatabase(config.dataDir);
  const content = createContentStore(db);
  const policyStore = createPolicyStore(db);
  const certs = createCertStore(db);
  const auditStore = createAuditStore(db);
  const metrics = createMetrics();

  const blobs = new BlobStore(config.dataDir, config.cache.maxBytes);
  const removed = blobs.init();
  if (removed > 0) logger.warn({ removed }, 'removed unfinished blob downloads left by an earlier stop');
  blobs.onEvict = (digest, size) => logger.info({ digest, size }, 'evicted blob from the cache');
  const authority = new CertAuthority(ca, certs, clientTrust(clientCaPems.map((c) => c.pem), serverCert.toString('utf8')));

  const signer = new Signer(content, policyStore, signingKey);
  // Audit rows are written by a thread of their own; the request thread leaves WAL checkpoints (an fsync each) to it.
  const auditWriter = startAuditWriter(path.join(config.dataDir, DB_FILE));
  db.pragma('wal_autocheckpoint = 0');
  const maxAuditQueue = opts.maxAuditQueue ?? MAX_QUEUED;
  const audit = new AuditLog(auditStore, signingKey, signer.keyId, (events) => auditWriter.write(events), maxAuditQueue);
  const integrity = audit.open();
  if (integrity.problem) {
    logger.error({ problem: integrity.problem }, 'audit log integrity check failed');
    audit.append({ action: 'audit.integrity', decision: 'deny', reason: integrity.problem });
  }
  audit.onAppend = (e) => metrics.auditEvents.inc(e.action);
  audit.onFlush = (_n, ms) => metrics.auditAppendSeconds.observe(ms / 1000);
  audit.onError = (err, queued) => logger.error({ err: err.message, queued }, 'cannot write audit events; they stay queued and are retried');
  audit.onOverflow = (full, unrecorded) => {
    if (full) logger.error({ queued: maxAuditQueue }, 'audit queue full: refusing requests with 503 until the audit database takes writes again');
    else logger.warn({ unrecorded }, 'audit queue has room again: serving requests; an audit.overflow event counts the events not recorded');
  };
  audit.chainQueued();

  const upstreams = new Map<string, Upstream>();
  for (const u of config.upstreams) {
    upstreams.set(
      u.name,
      new Upstream(u, {
        exchange: (name, ms, outcome) => {
          metrics.upstreamSeconds.observe({ upstream: name }, ms / 1000);
          if (outcome !== 'ok') metrics.upstreamErrors.inc({ upstream: name, kind: outcome });
        },
        breaker: (name, state) => {
          metrics.breakerOpen.set({ upstream: name }, state === 'open' ? 1 : 0);
          logger.warn({ upstream: name, state }, 'upstream circuit breaker changed state');
          audit.append({ action: 'upstream.breaker', repository: null, reference: name, decision: null, reason: state });
        },
      }),
    );
    metrics.breakerOpen.set({ upstream: u.name }, 0);
  }

  const mirror = new Mirror(content, blobs, upstreams, {
    fault: (e) => {
      logger.warn({ upstream: e.upstream, repo: e.repository, digest: e.digest, fault: e.kind, detail: e.message }, 'upstream fault: nothing was cached');
      metrics.upstreamErrors.inc({ upstream: e.upstream, kind: e.kind });
      audit.append({ action: 'upstream.fault', repository: e.repository, digest: e.digest, reference: e.upstream, decision: 'deny', reason: e.kind });
    },
    cached: (e) => {
      const u = blobs.usage();
      metrics.cacheBytes.set(u.bytes);
      metrics.cacheBlobs.set(u.blobs);
      logger.debug({ upstream: e.upstream, repo: e.repository, digest: e.digest, bytes: e.bytes }, 'blob cached');
    },
  });

  const policy = new Policy(policyStore, content, {
    admitted: (route, digest, decision) => {
      const sig = signer.sign(route.repository, digest, decision);
      audit.append({ action: 'image.admitted', repository: route.repository, digest, decision: 'allow', reason: decision.reason, actor: decision.approvedBy });
      logger.info({ repo: route.repository, digest, decision: 'allow', reason: decision.reason, signature: sig }, 'image admitted and signed');
    },
  });

  policy.publisherVerifier = new UpstreamSignatureVerifier(upstreams, policyStore, logger);
  policy.manifestLoader = (route, digest) =>
    mirror.manifest(route, digest).catch((err: Error) => {
      logger.warn({ repo: route.repository, digest, err: err.message }, 'a pinned manifest could not be fetched to learn what it lists; asked again in a minute at the earliest');
      throw err;
    });

  const seeded = seedPolicy(config, policyStore);
  if (seeded.changes.length > 0) logger.info({ changes: seeded.changes.length }, 'applied policy seeds from the configuration');
  for (const c of seeded.changes) audit.append({ ...c, actor: 'config', decision: 'allow', reason: 'policy seed from the configuration' });
  for (const p of seeded.problems) logger.warn({ problem: p }, 'policy seed not applied');
  // Pins made through the API or by approvals outlive a renamed or removed upstream; they admit nothing until it is back.
  const orphaned = new Map<string, number>();
  for (const p of policyStore.pins()) {
    const upstream = p.repository.slice(0, p.repository.indexOf('/'));
    if (!config.upstreams.some((u) => u.name === upstream)) orphaned.set(upstream, (orphaned.get(upstream) ?? 0) + 1);
  }
  for (const [upstream, pins] of orphaned) {
    logger.warn({ upstream, pins }, 'pins name an upstream that is not configured: they admit nothing until it is (renamed? configure the old name again, or pin the images anew)');
  }

  const revoked = watchRevocations(db, certs, () => audit.chainQueued());
  const u0 = blobs.usage();
  metrics.cacheBytes.set(u0.bytes);
  metrics.cacheBlobs.set(u0.blobs);

  // At start and once a day after: a server that runs for months warns of its certificates ending, as a restart would.
  const checkExpiry = (): void => {
    reportExpiry(config, serverCert, clientCaPems, logger, metrics);
    reportClientExpiry(certs, logger);
  };
  checkExpiry();
  const expiryCheck = setInterval(checkExpiry, opts.expiryCheckMs ?? DAY_MS);
  expiryCheck.unref();
  const services: Services = {
    config, logger, db, content, policyStore, certs, auditStore, blobs, upstreams, mirror, policy, signer, audit, metrics, authority, revoked, startedAt: new Date(),
    serverNames: serverNames(serverCert),
    driftCheckMs: opts.driftCheckMs ?? 60000,
    answerRemembered: () => false,
    closing: false,
  };

  // The one recorder of responses: Fastify's, remembered answers and requests Fastify refuses before routing.
  const record = createRecorder(services);

  const https = {
    key: fs.readFileSync(config.tls.key),
    cert: serverCert,
    ca: clientCaPems.map((c) => c.pem),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2' as const,
    handshakeTimeout: 10000,
    // Node checks headersTimeout and requestTimeout on this interval (30 s by default), so slow-loris clients go sooner.
    connectionsCheckingInterval: 1000,
  };
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    // Requests log through the one logger (their lines carry the identity and route): a child logger per request
    // would be built and thrown away thousands of times a second.
    childLoggerFactory: (logger) => logger,
    // The server is made here rather than by Fastify so that a request for a remembered manifest is answered before
    // Fastify sees it (registry/remembered.ts); everything else goes to Fastify's handler. Fastify still gets the TLS
    // options, from which it knows its addresses are https:// (the listen log line, listeningOrigin).
    https,
    serverFactory: (handler) => {
      const inFlight = new WeakMap<object, number>();
      const queued = new WeakMap<object, Set<ServerResponse>>();
      const closeQueued = (socket: Socket): Set<ServerResponse> => {
        const responses = new Set<ServerResponse>();
        queued.set(socket, responses);
        socket.once('close', () => {
          for (const r of responses) {
            // One that got its turn is closed by Node.
            if (r.socket !== null || r.writableFinished) continue;
            r.destroy();
            r.emit('close');
          }
        });
        return responses;
      };
      const server = nodeHttps.createServer(https, (req, res) => {
        // HTTP/1.1 pipelining: Node parses a burst of requests on one connection at once and runs them all, each holding
        // its blob's file and buffers until the client reads (1,000 pipelined GETs held 1,000 files and 440 MiB). No
        // registry client pipelines; one that sends more than MAX_PIPELINED at once loses the connection.
        const socket = req.socket;
        const n = (inFlight.get(socket) ?? 0) + 1;
        if (n > MAX_PIPELINED) {
          if (!socket.destroyed) logger.warn({ ip: socket.remoteAddress }, `a client sent more than ${MAX_PIPELINED} requests at once on one connection; closed`);
          // This request and those after it in the same read are recorded here, as cut off; those under way are
          // recorded when their responses close.
          const c = freshContext(identityOf(socket as TLSSocket), routeLabel(req.url ?? ''));
          c.decision = 'deny';
          c.reason = `more than ${MAX_PIPELINED} requests at once on one connection`;
          record(c, req.method ?? '', req.url ?? '', remoteAddress(socket as TLSSocket), 0, true, 0);
          socket.destroy();
          return;
        }
        inFlight.set(socket, n);
        res.once('close', () => inFlight.set(socket, (inFlight.get(socket) ?? 1) - 1));
        if (res.socket === null) {
          // A response queued behind another on its connection gets no close event from Node when the connection ends
          // before its turn (Node drops the queue); closeQueued closes it then, so that its request is recorded as cut
          // off.
          const waiting = queued.get(socket) ?? closeQueued(socket);
          waiting.add(res);
          res.once('close', () => waiting.delete(res));
        }
        if (!services.answerRemembered(req, res)) handler(req, res);
      });
      // A connection with no traffic either way for two minutes (a client that never sends or never reads) is closed.
      server.setTimeout(120000);
      server.keepAliveTimeout = 65000;
      server.requestTimeout = 30000;
      server.headersTimeout = 15000;
      return server;
    },
    exposeHeadRoutes: false,
    routerOptions: { maxParamLength: 2048 },
    bodyLimit: 1 << 20,
    // Fastify's own 503 while closing would skip the hooks that record every request: the app refuses them instead.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // Fastify types this option as a generic function that no concrete handler satisfies.
    frameworkErrors: ((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => frameworkError(err, req, reply, record)) as never,
    // Node's server calls this inside its parser: a throw would end the process.
    clientErrorHandler: (err: Error, socket: Socket) => {
      try {
        clientError(err, socket, record);
      } catch (e) {
        logger.error({ err: (e as Error).message }, 'cannot answer a request the HTTP parser refused; closed its connection');
        socket.destroy();
      }
    },
  }) as unknown as FastifyInstance;
  const connections = watchTls(app, services);

  await buildApp(app, services, record, async (a) => {
    if (opts.extraRoutes) await opts.extraRoutes(a, services);
  });
  let closed = false;
  let hurry = (): void => {};
  const hurried = new Promise<void>((resolve) => (hurry = resolve));
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    // From now on every request goes to Fastify, and the app answers it 503 (app.ts), recorded like any other.
    services.answerRemembered = () => false;
    services.closing = true;
    revoked.stop();
    clearInterval(expiryCheck);
    // Fastify's close waits for every response under way, a slow client's long download too, unless hurried.
    const appClosed = app.close();
    // Fastify closes the connections idle now. One whose response ends later would stay open for its keep-alive
    // timeout (65 s) and hold the close that long, past a service manager's stop timeout.
    const idle = setInterval(() => app.server.closeIdleConnections(), 100);
    try {
      await Promise.race([appClosed, hurried]);
      app.server.closeAllConnections();
      await appClosed;
    } finally {
      clearInterval(idle);
    }
    // The server says it closed before its sockets have; a response cut off is recorded when its socket closes.
    await drained(connections, 5000);
    await withDeadline(Promise.race([mirror.inflight.settle(), hurried]), 30000);
    // A download still running (an upstream that sends a byte now and then, never idle long enough for its read
    // timeout) is cut off now; it ends as a fault, audited before the log closes.
    for (const u of upstreams.values()) await u.close();
    await withDeadline(mirror.inflight.settle(), 5000);
    const unstored = await audit.close();
    if (unstored.lost > 0) {
      logger.error(
        { lost: unstored.lost, seq: `${unstored.first}-${unstored.last}` },
        'audit events not written before the stop (the database refused them): they are lost; the next start chains on from the last event stored',
      );
    }
    await auditWriter.close();
    db.close();
    lock.release();
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
  };
  // Once serving, the request thread waits for a write lock without running anything else: past this, a write another
  // process holds the lock against (a backup, a sqlite3 shell) fails with 503 rather than stopping every request for
  // seconds. The audit writer's own batches hold it for a few milliseconds. The start-up above waited as the CLI does.
  db.pragma(`busy_timeout = ${REQUEST_BUSY_MS}`);
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (err) {
    await close();
    throw listenError(config, err as NodeJS.ErrnoException);
  }
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  logger.info({ listen: `${host}:${address.port}` }, 'airlock is listening');

  return { services, app, url: `https://${host}:${address.port}`, port: address.port, close, hurry: () => hurry() };
}

// EXPIRY_WARNING_DAYS is how long before a certificate ends airlock warns of it: time to renew it before clients fail.
const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 24 * 60 * 60 * 1000;

// reportExpiry sets airlock_certificate_expiry_seconds for the server certificate and for the tls.clientCa certificate
// that ends first, and warns of each that ends within EXPIRY_WARNING_DAYS (config.ts refuses a server certificate that
// has ended already at start). The certificates are those read at start, which the server uses until it restarts.
function reportExpiry(config: Config, serverCert: Buffer, clientCaPems: { file: string; pem: string }[], logger: Logger, metrics: Metrics): void {
  const server = new crypto.X509Certificate(serverCert);
  const cas = clientCaPems.flatMap(({ file, pem }) => pemCertificates(pem).map((one) => ({ file, cert: new crypto.X509Certificate(one) })));
  const end = (c: crypto.X509Certificate): number => new Date(c.validTo).getTime();
  metrics.certificateExpiry.set({ cert: 'server' }, end(server) / 1000);
  if (cas.length > 0) metrics.certificateExpiry.set({ cert: 'ca' }, Math.min(...cas.map((c) => end(c.cert))) / 1000);
  const now = Date.now();
  const soon = (c: crypto.X509Certificate): boolean => end(c) - now < EXPIRY_WARNING_DAYS * DAY_MS;
  const when = (c: crypto.X509Certificate): string => whenItEnds(end(c), now);
  if (soon(server)) {
    logger.warn({ cert: 'server', file: config.tls.cert, notAfter: new Date(end(server)).toISOString() }, `the server certificate (tls.cert) ${when(server)}; every client fails TLS from then on: renew it (docs/operator-guide.md, "Rotate the server certificate")`);
  }
  for (const { file, cert } of cas.filter((c) => soon(c.cert))) {
    logger.warn({ cert: 'ca', file, subject: cert.subject.replace(/\n/g, ', '), notAfter: new Date(end(cert)).toISOString() }, `a CA certificate of tls.clientCa ${when(cert)}; client certificates it issued fail from then on: renew the CA (docs/operator-guide.md, "The CA")`);
  }
}

// MAX_NAMED_CLIENTS bounds the client certificates warned of one by one in a check; the rest are counted in one line.
const MAX_NAMED_CLIENTS = 10;

// reportClientExpiry warns of each recorded client certificate, not revoked, that ends within EXPIRY_WARNING_DAYS: the
// first MAX_NAMED_CLIENTS to end by name, then how many more.
function reportClientExpiry(certs: CertStore, logger: Logger): void {
  const now = Date.now();
  const ending = certs
    .list()
    .map((c) => ({ c, end: Date.parse(c.notAfter) }))
    .filter(({ c, end }) => c.revokedAt === null && end > now && end - now < EXPIRY_WARNING_DAYS * DAY_MS)
    .sort((a, b) => a.end - b.end);
  for (const { c, end } of ending.slice(0, MAX_NAMED_CLIENTS)) {
    logger.warn(
      { cert: 'client', serial: c.serial, name: c.name, role: c.role, notAfter: c.notAfter },
      `the ${c.role} certificate ${JSON.stringify(c.name)} (serial ${c.serial}) ${whenItEnds(end, now)}; its client is refused from then on: issue a new one (airlock cert issue, or POST /api/v1/certs)`,
    );
  }
  if (ending.length > MAX_NAMED_CLIENTS) {
    logger.warn({ cert: 'client', more: ending.length - MAX_NAMED_CLIENTS }, `and ${ending.length - MAX_NAMED_CLIENTS} more client certificates expire within ${EXPIRY_WARNING_DAYS} days (GET /api/v1/certs lists them)`);
  }
}

// whenItEnds says when a certificate that ends at end (ms) ends, seen at now: expired on …, or expires on … (in N days).
function whenItEnds(end: number, now: number): string {
  const on = new Date(end).toISOString();
  if (end <= now) return `expired on ${on}`;
  const days = Math.floor((end - now) / DAY_MS);
  return `expires on ${on} (in ${days} day${days === 1 ? '' : 's'})`;
}

// loadCa pairs the issuing CA's certificate (the first of tls.clientCa) with its key, empty when the key is kept elsewhere.
function loadCa(config: Config, certPem: string): { certPem: string; keyPem: string } {
  const dir = path.join(config.dataDir, 'pki');
  const keyFile = path.join(dir, 'ca.key');
  const keyPem = fs.existsSync(keyFile) ? fs.readFileSync(keyFile, 'utf8') : '';
  return { certPem, keyPem };
}

// watchRevocations keeps the revoked serials in memory and reloads them within REVOCATION_POLL_MS of any commit,
// including one made by `airlock cert revoke` in another process; onCommit runs then too.
function watchRevocations(db: Services['db'], certs: Services['certs'], onCommit: () => void): RevokedSerials & { stop(): void } {
  let serials = certs.revokedSerials();
  let version = dataVersion(db);
  const timer = setInterval(() => {
    const v = dataVersion(db);
    if (v !== version) {
      version = v;
      serials = certs.revokedSerials();
      onCommit();
    }
  }, REVOCATION_POLL_MS);
  timer.unref();
  return {
    has: (serial) => serials.has(serial),
    refresh: () => {
      serials = certs.revokedSerials();
    },
    stop: () => clearInterval(timer),
  };
}

// watchTls audits refused handshakes and closes connections whose certificate was revoked; it returns the open
// connections.
function watchTls(app: FastifyInstance, s: Services): Set<TLSSocket> {
  const open = new Set<TLSSocket>();
  app.server.on('connection', (raw: Socket) => {
    if (raw.remoteAddress) peerAddresses.set(raw, raw.remoteAddress);
  });
  app.server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    const reason: unknown = socket.authorizationError;
    const why = typeof reason === 'string' ? reason : err.code ?? 'handshake failed';
    s.metrics.tlsRefused.inc({ reason: why });
    s.audit.append({ action: 'tls.refused', ip: remoteAddress(socket), decision: 'deny', reason: why });
  });
  app.server.on('secureConnection', (socket: TLSSocket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    const id = identityOf(socket) ?? identityFromPeer(socket.getPeerCertificate());
    // A resumed session skips the certificate checks of a full handshake: revocation and expiry are checked here.
    const refused = id && whyRefused(id, s.revoked);
    if (id && refused) {
      s.metrics.tlsRefused.inc({ reason: refused });
      s.audit.append({ action: 'tls.refused', actor: id.cn, actorSerial: id.serial, role: id.role, ip: socket.remoteAddress ?? null, decision: 'deny', reason: `certificate ${refused}` });
      socket.destroy();
    }
  });
  return open;
}

// frameworkError answers requests Fastify refuses before routing (a malformed percent-escape) with airlock's error
// bodies; they skip the app's hooks, so they are recorded (counted, audited, logged) here.
function frameworkError(err: FastifyError, req: FastifyRequest, reply: FastifyReply, record: Recorder): void {
  const message = `malformed request URL: ${err.message.slice(0, 200)}`;
  const c = freshContext(identityOf(req.raw.socket as TLSSocket), routeLabel(req.url));
  c.decision = 'deny';
  c.reason = 'malformed request URL';
  reply.raw.once('close', () => record(c, req.method, req.url, req.ip, reply.statusCode, !reply.raw.writableFinished, reply.elapsedTime));
  if (req.url.startsWith('/v2')) {
    void reply.code(400).header('content-type', 'application/json').headers(REGISTRY_HEADERS).send(new RegistryError('NAME_INVALID', message).body());
  } else {
    void reply.code(400).send({ error: { code: 'BAD_REQUEST', message } });
  }
}

// ParseError is what Node's HTTP server reports of a connection's error: for a request its parser refused, the code
// (HPE_*, or ERR_HTTP_REQUEST_TIMEOUT), llhttp's reason, and the bytes it was parsing with how far it got in them.
type ParseError = Error & { code?: unknown; reason?: unknown; rawPacket?: unknown; bytesParsed?: unknown };

// HttpSocket is a connection as Node's HTTP server keeps it: the response being sent on it, and its parser's request.
type HttpSocket = Socket & { _httpMessage?: ServerResponse | null; parser?: { incoming?: { complete: boolean } | null } | null };

// REQUEST_LINE is the start of a request line: a method (methods are upper case) and a path. A header line never
// matches (its name ends in a colon).
const REQUEST_LINE = /^([A-Z][A-Z0-9_-]{0,19}) (\/[^ \r\n]*)/;

// refusing holds the connections whose refused request is being answered: their parser, in error from then on,
// reports every later read too.
const refusing = new WeakSet<object>();

// clientError answers a request Node's HTTP parser refused after the TLS handshake (headers over 16 KiB, a control
// character in a header, a byte it does not take in the path, an unknown method, a garbled request line, headers too
// slow) with airlock's error body and `connection: close`. Fastify never sees such a request, so it is recorded
// (counted, audited under /v2, logged) here; its method and path are read from its request line when the bytes at hand
// hold it, and a method Node does not know (or none read) is named `_OTHER`, so that neither the metrics nor the audit
// actions grow with what clients send.
function clientError(err: ParseError, socket: HttpSocket, record: Recorder): void {
  if (socket.destroyed || socket.writableEnded || refusing.has(socket)) return;
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : typeof err.code === 'string' && err.code.startsWith('HPE_') ? 400 : 0;
  // A socket error (a reset, a TLS alert) is no request. An error in the body of a request Fastify already has (a bad
  // chunk, a body too slow) ends that request, which is recorded as cut off when its response closes.
  const incoming = socket.parser?.incoming;
  if (status === 0 || (incoming && !incoming.complete)) {
    socket.destroy();
    return;
  }
  refusing.add(socket);
  const started = performance.now();
  const ip = socket.remoteAddress ?? null;
  const line = requestLine(err);
  const method = line && METHODS.includes(line.method) ? line.method : '_OTHER';
  const url = line?.path ?? '';
  const why = typeof err.reason === 'string' ? err.reason.slice(0, 100) : String(err.code);
  const message = status === 431 ? 'request headers too large' : status === 408 ? 'request not received in time' : `malformed request: ${why}`;
  const c = freshContext(identityOf(socket as TLSSocket), routeLabel(url));
  c.decision = 'deny';
  c.reason = message;
  const registry = url.startsWith('/v2');
  const body = JSON.stringify(registry ? new RegistryError(err.code === 'HPE_INVALID_URL' ? 'NAME_INVALID' : 'UNSUPPORTED', message).body() : { error: { code: apiCodeFor(status), message } });
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n`;
  for (const [name, value] of Object.entries(registry ? REGISTRY_HEADERS : API_HEADERS)) head += `${name}: ${value}\r\n`;
  const answer = (): void => {
    if (socket.destroyed || socket.writableEnded) {
      record(c, method, url, ip, status, true, performance.now() - started);
      return;
    }
    socket.once('close', () => record(c, method, url, ip, status, !socket.writableFinished, performance.now() - started));
    socket.write(`${head}\r\n${body}`);
    socket.destroySoon();
  };
  // Requests pipelined before this one are answered first: an answer sent now would be read as theirs.
  const inTurn = (): void => {
    const res = socket._httpMessage;
    if (res && !socket.destroyed) res.once('close', inTurn);
    else answer();
  };
  inTurn();
}

// requestLine reads the method and path of a request the parser refused from the bytes it was parsing, and nothing
// past its request line: from the start of those bytes, or after the end of the last request head in them before the
// error (pipelining). When the request line came in an earlier read (always, for headers over 16 KiB: a TLS record
// holds at most 16 KiB), those bytes start inside the headers: null.
function requestLine(err: ParseError): { method: string; path: string } | null {
  const raw = err.rawPacket;
  if (!Buffer.isBuffer(raw)) return null;
  const at = typeof err.bytesParsed === 'number' ? Math.min(err.bytesParsed, raw.length) : raw.length;
  const end = at >= 4 ? raw.lastIndexOf('\r\n\r\n', at - 4) : -1;
  const from = end < 0 ? 0 : end + 4;
  // A little more than the 300 characters a log line keeps, so that it can mark a longer path as cut.
  const m = REQUEST_LINE.exec(raw.toString('latin1', from, Math.min(raw.length, from + 400)));
  if (!m) return null;
  // A refused header, or a first line the parser got past, follows a whole request line, version and all; without one
  // these bytes began inside a header (a value cut by the end of a TLS record), not at a request.
  const eol = raw.indexOf('\n', from);
  const whole = eol > from && / HTTP\/\d\.\d\r?$/.test(raw.toString('latin1', Math.max(from, eol - 10), eol));
  if (!whole && ((eol >= 0 && eol < at) || err.code === 'HPE_INVALID_HEADER_TOKEN')) return null;
  return { method: m[1], path: m[2] };
}

// peerAddresses remembers each TCP connection's peer address: after a failed verification the socket is already
// closed and no longer reports it.
const peerAddresses = new WeakMap<object, string>();

function remoteAddress(socket: TLSSocket): string | null {
  const parent = (socket as TLSSocket & { _parent?: object })._parent;
  return socket.remoteAddress ?? (parent ? peerAddresses.get(parent) : undefined) ?? null;
}

// probeListen binds the listen address for a moment, so that an address in use is refused before start-up changes
// anything; port 0 (any free port) needs no probe.
async function probeListen(config: Config): Promise<void> {
  if (config.listen.port === 0) return;
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (err: NodeJS.ErrnoException) => reject(listenError(config, err)));
    probe.listen({ host: config.listen.host, port: config.listen.port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

// listenError words a failure to listen on the configured address, with an IPv6 host in brackets as it is written.
function listenError(config: Config, e: NodeJS.ErrnoException): UserError {
  const { host, port } = config.listen;
  let why = e.message;
  if (e.code === 'EADDRINUSE') why = 'the address is already in use';
  else if (e.code === 'EADDRNOTAVAIL') why = 'no interface of this machine has that address';
  else if (e.code === 'EACCES') why = `permission denied (EACCES)${port < 1024 ? ': a port below 1024 needs root or the CAP_NET_BIND_SERVICE capability' : ''}`;
  // A link-local IPv6 address without its interface, say: Node's message would repeat the address.
  else if (e.code === 'EINVAL') why = 'not an address this machine can listen on (EINVAL)';
  return new UserError(`listen ${host.includes(':') ? `[${host}]` : host}:${port}: ${why}`);
}

// drained resolves once the set is empty, or after ms.
async function drained(set: Set<unknown>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (set.size > 0 && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 5));
}

async function withDeadline(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
