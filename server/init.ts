// initDataDir creates a data directory: CA, server certificate, admin client bundle, mirror key, database and airlock.yaml.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { createCertStore } from '../storage/certs.js';
import { openDatabase } from '../storage/db.js';
import { lockDataDir } from '../storage/lock.js';
import { UserError } from './errors.js';
import { CertAuthority } from './pki/authority.js';
import { createCa, issueServerCert, writeClientBundle, writeWithMode } from './pki/ca.js';
import { writeSigningKey } from './signing/key.js';

// InitOptions say where and for which host names.
export interface InitOptions {
  dir: string;
  hosts: string[];
  force: boolean;
  keyPassword: string;
  p12Password: string;
  listen?: string;
}

// InitResult names what was written.
export interface InitResult {
  dir: string;
  config: string;
  // configKept is true when an airlock.yaml was there already and is left as it was.
  configKept: boolean;
  adminBundle: string;
  hosts: string[];
}

// defaultHosts are the server certificate's names when --host is not given.
export function defaultHosts(): string[] {
  const hosts = ['localhost', '127.0.0.1'];
  const h = os.hostname();
  if (h && !hosts.includes(h) && /^[A-Za-z0-9.-]+$/.test(h)) hosts.push(h);
  return hosts;
}

// initDataDir writes a fresh data directory; it refuses to overwrite an existing CA unless force.
export function initDataDir(o: InitOptions): InitResult {
  const dir = path.resolve(o.dir);
  const pki = path.join(dir, 'pki');
  const caCert = path.join(pki, 'ca.crt');
  if (fs.existsSync(caCert) && !o.force) throw new UserError(`${caCert} exists; refusing to overwrite the CA (use --force to replace everything)`);
  const keyPrefix = path.join(dir, 'keys', 'mirror');
  for (const f of [`${keyPrefix}.key`, `${keyPrefix}.pub`]) {
    if (fs.existsSync(f) && !o.force) throw new UserError(`${f} exists; refusing to overwrite the mirror signing key (use --force to replace everything)`);
  }
  const config = path.join(dir, 'airlock.yaml');
  // An airlock.yaml already there is kept (unless force): a --listen would be left out of it without a word.
  const keepConfig = fs.existsSync(config) && !o.force;
  if (keepConfig && o.listen !== undefined) throw new UserError(`--listen: ${config} exists and init keeps it; set listen in it, or leave out --listen`);
  const hosts = o.hosts.length > 0 ? o.hosts : defaultHosts();
  // Everything that can be refused is made before anything is written: a bad --host leaves no half-made directory.
  const ca = createCa('airlock CA');
  let server;
  try {
    server = issueServerCert(ca, hosts);
  } catch (err) {
    throw new UserError(`--host: ${(err as Error).message}`);
  }
  // A server running on this directory would go on with the old CA and key in memory: init waits for it to stop.
  const lock = lockDataDir(dir);
  try {
    // Modes are set, not only asked for at creation: --force writes over files and folders that may have others.
    for (const d of [pki, path.join(dir, 'keys')]) {
      fs.mkdirSync(d, { recursive: true, mode: 0o700 });
      fs.chmodSync(d, 0o700);
    }
    fs.writeFileSync(caCert, ca.certPem);
    writeWithMode(path.join(pki, 'ca.key'), ca.keyPem, 0o600);
    fs.writeFileSync(path.join(pki, 'server.crt'), server.certPem);
    writeWithMode(path.join(pki, 'server.key'), server.keyPem, 0o600);

    if (o.force) {
      fs.rmSync(`${keyPrefix}.key`, { force: true });
      fs.rmSync(`${keyPrefix}.pub`, { force: true });
    }
    writeSigningKey(keyPrefix, o.keyPassword);

    const db = openDatabase(dir);
    try {
      const authority = new CertAuthority(ca, createCertStore(db));
      const admin = authority.issue('admin', 'admin', 365, 'airlock init');
      const adminBundle = path.join(pki, 'clients', 'admin');
      // The old admin bundle is of the CA being replaced: its folder is made anew, this user's.
      if (o.force) fs.rmSync(adminBundle, { recursive: true, force: true });
      writeClientBundle(adminBundle, admin, ca.certPem, o.p12Password);

      if (!keepConfig) {
        const doc = {
          listen: o.listen ?? '127.0.0.1:5443',
          dataDir: '.',
          tls: { cert: 'pki/server.crt', key: 'pki/server.key', clientCa: 'pki/ca.crt' },
          signing: { key: 'keys/mirror.key' },
          upstreams: [
            { name: 'docker.io', url: 'https://registry-1.docker.io' },
            { name: 'ghcr.io', url: 'https://ghcr.io' },
            { name: 'quay.io', url: 'https://quay.io' },
            { name: 'registry.k8s.io', url: 'https://registry.k8s.io' },
          ],
          defaultUpstream: 'docker.io',
          policy: { pins: [], publishers: [] },
          cache: { maxBytes: '50GiB' },
        };
        fs.writeFileSync(config, `# airlock configuration (SPEC §2). Secrets go in environment variables named by *Env fields.\n${YAML.stringify(doc)}`);
      }
      return { dir, config, configKept: keepConfig, adminBundle, hosts };
    } finally {
      db.close();
    }
  } finally {
    lock.release();
  }
}
