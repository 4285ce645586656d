// A real airlock for tests: a fresh data directory (CA, server certificate, mirror key, SQLite), a YAML config,
// the real mutual-TLS listener on 127.0.0.1 port 0, and client bundles per role.
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import YAML from 'yaml';
import { type Config, loadConfigFile } from '../../server/config.js';
import { initDataDir } from '../../server/init.js';
import { type Role, writeClientBundle } from '../../server/pki/ca.js';
import { REDACT } from '../../server/logging.js';
import { type Airlock, startAirlock } from '../../server/runtime.js';
import { type HttpResult, type RegistryEndpoint, registryRequest, type RequestOptions } from './registry.js';

// TEST_KEY_PASSWORD encrypts the test mirror key, so the password path is exercised.
export const TEST_KEY_PASSWORD = 'test-key-password';

// TestUpstream is an upstream entry for the test config.
export interface TestUpstream {
  name: string;
  url: string;
  ca?: string;
  insecure?: boolean;
  usernameEnv?: string;
  passwordEnv?: string;
  connectTimeoutMs?: number;
  readTimeoutMs?: number;
}

// TestAirlockOptions shape the config.
export interface TestAirlockOptions {
  dir: string;
  upstreams?: TestUpstream[];
  defaultUpstream?: string;
  pins?: string[];
  publishers?: { name: string; key: string; repositories: string[] }[];
  cacheMaxBytes?: string | number;
  listen?: string;
  env?: Record<string, string>;
  driftCheckMs?: number;
  maxAuditQueue?: number;
  expiryCheckMs?: number;
}

// Bundle is a client certificate in the certs.d layout, with an endpoint for registryRequest.
export interface Bundle {
  dir: string;
  serial: string;
  name: string;
  role: Role;
  endpoint: RegistryEndpoint;
}

// TestAirlock is a running airlock with helpers.
export interface TestAirlock {
  airlock: Airlock;
  url: string;
  host: string;
  dir: string;
  configPath: string;
  config: Config;
  caPath: string;
  logPath: string;
  bundle(role: Role, name?: string): Bundle;
  request(role: Role, pathname: string, opts?: RequestOptions): Promise<HttpResult>;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

// startTestAirlock writes a data directory and config under opts.dir and starts airlock on it.
export async function startTestAirlock(opts: TestAirlockOptions): Promise<TestAirlock> {
  const dir = path.resolve(opts.dir);
  if (!fs.existsSync(path.join(dir, 'pki', 'ca.crt'))) {
    initDataDir({ dir, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: TEST_KEY_PASSWORD, p12Password: '' });
  }
  const doc: Record<string, unknown> = {
    listen: opts.listen ?? '127.0.0.1:0',
    dataDir: '.',
    tls: { cert: 'pki/server.crt', key: 'pki/server.key', clientCa: 'pki/ca.crt' },
    signing: { key: 'keys/mirror.key', passwordEnv: 'AIRLOCK_TEST_KEY_PASSWORD' },
    upstreams: opts.upstreams ?? [],
    policy: { pins: opts.pins ?? [], publishers: opts.publishers ?? [] },
    cache: { maxBytes: opts.cacheMaxBytes ?? '10GiB' },
    log: { level: 'info' },
  };
  if (opts.defaultUpstream) doc.defaultUpstream = opts.defaultUpstream;
  const configPath = path.join(dir, 'airlock.yaml');
  fs.writeFileSync(configPath, YAML.stringify(doc));
  const env = { AIRLOCK_TEST_KEY_PASSWORD: TEST_KEY_PASSWORD, ...opts.env };
  const config = loadConfigFile(configPath, env);
  const logPath = path.join(dir, 'airlock.log');
  const caPath = path.join(dir, 'pki', 'ca.crt');
  const bundles = new Map<string, Bundle>();

  const start = async (): Promise<Airlock> => {
    const logger = pino({ level: 'info', redact: { paths: REDACT, censor: '[redacted]' } }, pino.destination({ dest: logPath, sync: true, append: true }));
    return startAirlock(config, { logger, driftCheckMs: opts.driftCheckMs, maxAuditQueue: opts.maxAuditQueue, expiryCheckMs: opts.expiryCheckMs });
  };
  let airlock = await start();
  const t: TestAirlock = {
    airlock,
    url: airlock.url,
    host: `127.0.0.1:${airlock.port}`,
    dir,
    configPath,
    config,
    caPath,
    logPath,
    bundle(role: Role, name = `test-${role}`): Bundle {
      const existing = bundles.get(name);
      if (existing) return existing;
      const issued = t.airlock.services.authority.issue(name, role, 30, 'test');
      const bdir = path.join(dir, 'test-clients', name);
      writeClientBundle(bdir, issued, issued.caPem, '');
      const b: Bundle = {
        dir: bdir,
        serial: issued.serial,
        name,
        role,
        endpoint: { url: t.url, caPath, clientCertPath: path.join(bdir, 'client.cert'), clientKeyPath: path.join(bdir, 'client.key') },
      };
      bundles.set(name, b);
      return b;
    },
    request(role: Role, pathname: string, ropts: RequestOptions = {}): Promise<HttpResult> {
      return registryRequest(t.bundle(role).endpoint, pathname, { answerChallenge: false, ...ropts });
    },
    async stop() {
      await t.airlock.close();
    },
    async restart() {
      await t.airlock.close();
      const port = t.airlock.port;
      const again = YAML.parse(fs.readFileSync(configPath, 'utf8')) as Record<string, unknown>;
      again.listen = `127.0.0.1:${port}`;
      fs.writeFileSync(configPath, YAML.stringify(again));
      const cfg = loadConfigFile(configPath, env);
      const logger = pino({ level: 'info' }, pino.destination({ dest: logPath, sync: true, append: true }));
      airlock = await startAirlock(cfg, { logger, driftCheckMs: opts.driftCheckMs, maxAuditQueue: opts.maxAuditQueue, expiryCheckMs: opts.expiryCheckMs });
      t.airlock = airlock;
    },
  };
  return t;
}
