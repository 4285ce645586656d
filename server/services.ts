// Services are what the HTTP layer is handed: storage, the mirror, policy, signing, audit and metrics, built by runtime.ts.
import type {} from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AuditStore } from '../storage/audit.js';
import type { BlobStore } from '../storage/blobs.js';
import type { CertStore } from '../storage/certs.js';
import type { ContentStore } from '../storage/content.js';
import type { Db } from '../storage/db.js';
import type { PolicyStore } from '../storage/policy.js';
import type { AuditLog } from './audit/log.js';
import type { Config } from './config.js';
import type { Metrics } from './metrics.js';
import type { Mirror } from './mirror/mirror.js';
import type { Upstream } from './mirror/upstream.js';
import type { Identity } from './pki/identity.js';
import type { Policy } from './policy/policy.js';
import type { Signer } from './signing/signer.js';
import type { CertAuthority } from './pki/authority.js';

// Services is the running airlock's parts.
export interface Services {
  config: Config;
  logger: Logger;
  db: Db;
  content: ContentStore;
  policyStore: PolicyStore;
  certs: CertStore;
  auditStore: AuditStore;
  blobs: BlobStore;
  upstreams: ReadonlyMap<string, Upstream>;
  mirror: Mirror;
  policy: Policy;
  signer: Signer;
  audit: AuditLog;
  metrics: Metrics;
  authority: CertAuthority;
  revoked: RevokedSerials;
  startedAt: Date;
  // serverNames are the names and addresses the server certificate holds (clients.ts serverNames), read at start.
  serverNames: readonly string[];
  // driftCheckMs is how often at most a pinned tag's upstream is asked whether it moved.
  driftCheckMs: number;
  // answerRemembered answers a request for a remembered manifest straight from Node's request event, and tells
  // whether it did; registry/routes.ts sets it.
  answerRemembered: (req: IncomingMessage, res: ServerResponse) => boolean;
  // closing is set when the server starts to stop: requests still arriving are refused with 503 (and recorded).
  closing: boolean;
}

// RevokedSerials is the in-memory set of revoked client certificate serials, refreshed from the database.
export interface RevokedSerials {
  has(serial: string): boolean;
  refresh(): void;
}

// RequestContext is what a request learned, for its log line and audit event.
export interface RequestContext {
  identity: Identity | null;
  action: string | null;
  repository: string | null;
  reference: string | null;
  digest: string | null;
  decision: 'allow' | 'deny' | null;
  reason: string | null;
  source: string | null;
  bytes: number | null;
  routeLabel: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    airlock: RequestContext;
  }
}
