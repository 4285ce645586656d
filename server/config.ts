// The configuration: one YAML schema, validated completely at start-up, every bad field reported by path, then frozen.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { UserError, whyUnreadable } from './errors.js';
import { publisherFingerprints } from './policy/publishers.js';
import { canonicalRepository, normalizeHost, parseCanonicalReference } from './registry/names.js';

// UpstreamConfig is one registry airlock pulls from.
export interface UpstreamConfig {
  name: string;
  url: string;
  username: string | null;
  password: string | null;
  ca: string | null;
  insecure: boolean;
  connectTimeoutMs: number;
  readTimeoutMs: number;
}

// PinSeed is a pin from the configuration: a digest pin, or a tag pin when tag is set.
export interface PinSeed {
  repository: string;
  tag: string | null;
  digest: string;
}

// PublisherSeed is a publisher from the configuration, with its key read from disk.
export interface PublisherSeed {
  name: string;
  publicKey: string;
  repositories: string[];
}

// Config is the validated, resolved and frozen configuration.
export interface Config {
  file: string | null;
  listen: { host: string; port: number };
  dataDir: string;
  publicUrl: string | null;
  tls: { cert: string; key: string; clientCa: string[] };
  // passwordFrom says where the signing key's password came from, for an error that cannot decrypt the key.
  signing: { key: string; password: string; passwordFrom: string };
  upstreams: UpstreamConfig[];
  defaultUpstream: string | null;
  policy: { pins: PinSeed[]; publishers: PublisherSeed[] };
  cache: { maxBytes: number };
  log: { level: string };
}

const TOP_KEYS = ['listen', 'dataDir', 'publicUrl', 'tls', 'signing', 'upstreams', 'defaultUpstream', 'policy', 'cache', 'log'];
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
// HOST_NAME is a DNS name: dot-separated labels of letters, digits and inner hyphens.
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const UNITS: Record<string, number> = { '': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40 };

type Env = Record<string, string | undefined>;

// parseSize reads a byte count such as 50GiB, 512MB or 1048576.
export function parseSize(value: unknown): number | null {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) return value;
  if (typeof value !== 'string') return null;
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  if (!m) return null;
  const unit = UNITS[m[2].toUpperCase()];
  if (unit === undefined) return null;
  const n = Math.floor(Number(m[1]) * unit);
  return n > 0 && Number.isSafeInteger(n) ? n : null;
}

// Validator collects every problem of a configuration, each named by its path.
class Validator {
  readonly problems: string[] = [];
  readonly requireSecrets: boolean;

  constructor(requireSecrets: boolean) {
    this.requireSecrets = requireSecrets;
  }

  add(where: string, problem: string): void {
    this.problems.push(`${where}: ${problem}`);
  }

  object(where: string, value: unknown, keys: string[]): Record<string, unknown> | null {
    if (value === undefined || value === null) return null;
    if (typeof value !== 'object' || Array.isArray(value)) {
      this.add(where || 'the document', 'must be a mapping');
      return null;
    }
    const obj = value as Record<string, unknown>;
    for (const k of Object.keys(obj)) if (!keys.includes(k)) this.add(where ? `${where}.${k}` : k, `unknown key (allowed: ${keys.join(', ')})`);
    return obj;
  }

  string(where: string, value: unknown, required: boolean): string | null {
    if (value === undefined || value === null) {
      if (required) this.add(where, 'is required');
      return null;
    }
    if (typeof value !== 'string' || value.length === 0) {
      this.add(where, 'must be a non-empty string');
      return null;
    }
    return value;
  }

  secret(where: string, value: unknown, env: Env): string | null {
    const name = this.string(where, value, false);
    if (name === null) return null;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      this.add(where, 'must name an environment variable');
      return null;
    }
    const secret = env[name];
    if (secret === undefined) {
      // The name is not repeated: a token pasted where its variable's name belongs (some are capitals and digits, like a
      // variable's name) would land in the log. The path names the field, and the file holds the name.
      if (this.requireSecrets) this.add(where, 'the environment variable it names is not set');
      return null;
    }
    return secret;
  }

  file(where: string, value: unknown, base: string, required: boolean, mustExist: boolean): string | null {
    const p = this.string(where, value, required);
    if (p === null) return null;
    const abs = path.resolve(base, p);
    if (mustExist) {
      // statSync, not existsSync: a file in a folder this user may not enter (a root-owned pki/ of mode 0700) exists,
      // and is reported as what it is.
      try {
        fs.statSync(abs);
      } catch (err) {
        this.add(where, (err as NodeJS.ErrnoException).code === 'ENOENT' ? `file ${abs} does not exist` : `cannot read ${abs}: ${whyUnreadable(err)}`);
      }
    }
    return abs;
  }

  // pem parses a file that exists with read, noting a problem when it cannot be read or parsed; a file whose stat
  // failed is left out here, as file() reported it already.
  pem<T>(where: string, file: string | null, what: string, read: (text: string) => T): T | null {
    if (!file || !fs.existsSync(file)) return null;
    try {
      return read(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      this.add(where, code?.startsWith('E') && !code.startsWith('ERR_') ? `cannot read ${file}: ${whyUnreadable(err)}` : `${file} is not ${what}`);
      return null;
    }
  }
}

// LoadOptions: commands that never serve (cert issue/revoke, audit verify) need not have the secrets set, and work with
// a server certificate out of its dates: revoking a stolen certificate must not wait for a renewal.
export interface LoadOptions {
  requireSecrets?: boolean;
  checkServerDates?: boolean;
}

// loadConfigFile reads and validates a YAML configuration file.
export function loadConfigFile(file: string, env: Env, opts: LoadOptions = {}): Config {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    // A container's first start, before its data directory was made, ends here: the way on is init.
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    const made = path.basename(file) === 'airlock.yaml' ? 'makes it' : 'makes a data directory with an airlock.yaml';
    throw new UserError(`cannot read config ${file}: ${whyUnreadable(err)}${missing ? `; airlock init --dir ${path.dirname(file)} ${made}` : ''}`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text, { uniqueKeys: true });
  } catch (err) {
    // The parser's first line ends in ":" before an excerpt of the file on the lines after it, which are left out.
    throw new UserError(`config ${file} is not valid YAML: ${(err as Error).message.split('\n')[0].replace(/:$/, '')}`);
  }
  return validateConfig(doc ?? {}, path.dirname(path.resolve(file)), env, path.resolve(file), opts);
}

// validateConfig checks a parsed document completely and resolves it against base; throws UserError listing every problem.
export function validateConfig(doc: unknown, base: string, env: Env, file: string | null = null, opts: LoadOptions = {}): Config {
  const v = new Validator(opts.requireSecrets ?? true);
  const top = v.object('', doc, TOP_KEYS) ?? {};

  const listen = parseListen(v, top.listen ?? '127.0.0.1:5443');
  const dataDir = path.resolve(base, v.string('dataDir', top.dataDir ?? '.', true) ?? '.');
  if (fs.existsSync(dataDir) && !fs.statSync(dataDir).isDirectory()) v.add('dataDir', `${dataDir} is not a directory`);

  let publicUrl: string | null = null;
  const pu = v.string('publicUrl', top.publicUrl, false);
  if (pu !== null) {
    try {
      const u = new URL(pu);
      if (u.protocol !== 'https:') v.add('publicUrl', 'must be an https:// URL');
      else publicUrl = pu.replace(/\/+$/, '');
    } catch {
      v.add('publicUrl', 'must be a URL');
    }
  }

  // Paths written in the file resolve against its folder; the defaults live under dataDir.
  const tlsObj = v.object('tls', top.tls ?? {}, ['cert', 'key', 'clientCa']) ?? {};
  const tls = {
    cert: v.file('tls.cert', tlsObj.cert ?? 'pki/server.crt', tlsObj.cert === undefined ? dataDir : base, true, true) ?? '',
    key: v.file('tls.key', tlsObj.key ?? 'pki/server.key', tlsObj.key === undefined ? dataDir : base, true, true) ?? '',
    clientCa: parseClientCa(v, tlsObj.clientCa ?? 'pki/ca.crt', tlsObj.clientCa === undefined ? dataDir : base),
  };

  checkTls(v, tls, opts.checkServerDates ?? true);

  const signingObj = v.object('signing', top.signing ?? {}, ['key', 'passwordEnv']) ?? {};
  const signing = {
    key: v.file('signing.key', signingObj.key ?? 'keys/mirror.key', signingObj.key === undefined ? dataDir : base, true, true) ?? '',
    password: signingObj.passwordEnv === undefined ? env.AIRLOCK_KEY_PASSWORD ?? '' : v.secret('signing.passwordEnv', signingObj.passwordEnv, env) ?? '',
    passwordFrom:
      signingObj.passwordEnv !== undefined
        ? `$${String(signingObj.passwordEnv)} (signing.passwordEnv)`
        : env.AIRLOCK_KEY_PASSWORD === undefined
          ? '$AIRLOCK_KEY_PASSWORD, which is not set: an empty password'
          : '$AIRLOCK_KEY_PASSWORD',
  };

  const upstreams = parseUpstreams(v, top.upstreams, base, env);
  const names = upstreams.map((u) => u.name);

  let defaultUpstream: string | null = null;
  if (top.defaultUpstream !== undefined) {
    defaultUpstream = v.string('defaultUpstream', top.defaultUpstream, false);
    if (defaultUpstream !== null && !names.includes(defaultUpstream)) v.add('defaultUpstream', `"${defaultUpstream}" is not the name of a configured upstream (${names.join(', ') || 'none configured'})`);
  } else if (names.includes('docker.io')) {
    defaultUpstream = 'docker.io';
  } else if (names.length === 1) {
    defaultUpstream = names[0];
  }

  const policy = parsePolicy(v, top.policy, base, names);

  const cacheObj = v.object('cache', top.cache ?? {}, ['maxBytes']) ?? {};
  let maxBytes = 50 * 2 ** 30;
  if (cacheObj.maxBytes !== undefined) {
    const n = parseSize(cacheObj.maxBytes);
    if (n === null) v.add('cache.maxBytes', 'must be a size such as 50GiB, 500MB or a positive number of bytes');
    else maxBytes = n;
  }

  const logObj = v.object('log', top.log ?? {}, ['level']) ?? {};
  const level = v.string('log.level', logObj.level ?? 'info', true) ?? 'info';
  if (!LOG_LEVELS.includes(level)) v.add('log.level', `must be one of ${LOG_LEVELS.join(', ')}`);

  if (v.problems.length > 0) {
    const where = file ? `config ${file}` : 'config';
    throw new UserError(`${where} has ${v.problems.length} problem${v.problems.length > 1 ? 's' : ''}: ${v.problems.join('; ')}`);
  }
  return deepFreeze({ file, listen, dataDir, publicUrl, tls, signing, upstreams, defaultUpstream, policy, cache: { maxBytes }, log: { level } });
}

function parseListen(v: Validator, value: unknown): { host: string; port: number } {
  // listen: 5443 reads as a port to a person and as a number to YAML.
  if (typeof value === 'number') {
    v.add('listen', `must be host:port, not a port alone: like 127.0.0.1:${value} or [::]:${value}`);
    return { host: '127.0.0.1', port: 5443 };
  }
  const s = v.string('listen', value, true);
  if (s === null) return { host: '127.0.0.1', port: 5443 };
  const { host, port, problem } = listenAddress(s);
  if (problem !== null) v.add('listen', problem);
  return { host, port };
}

// listenAddress parses a listen address, host:port; problem says what is wrong with it, or is null.
export function listenAddress(s: string): { host: string; port: number; problem: string | null } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(s);
  if (!m) return { host: '127.0.0.1', port: 5443, problem: 'must be host:port, like 127.0.0.1:5443 or [::]:5443' };
  const port = Number(m[2]);
  const host = m[1].replace(/^\[|\]$/g, '');
  if (port > 65535) return { host, port, problem: 'port must be 0..65535' };
  const bracketed = m[1].startsWith('[');
  if (bracketed ? net.isIPv6(host) === false : !(net.isIPv4(host) || (!/^[0-9.]+$/.test(host) && HOST_NAME.test(host)))) {
    return { host, port, problem: `"${host}" is not ${bracketed ? 'an IPv6 address' : 'an IPv4 address or a host name'}` };
  }
  return { host, port, problem: null };
}

// checkTls reads the TLS files that exist: a PEM private key and the PEM certificate it belongs to, and PEM CA
// certificates. A bad one would otherwise stop the server with an OpenSSL message, or let it start refusing everyone.
function checkTls(v: Validator, t: { cert: string; key: string; clientCa: string[] }, checkDates: boolean): void {
  const key = v.pem('tls.key', t.key, 'a PEM private key without a passphrase', (text) => crypto.createPrivateKey(text));
  const cert = v.pem('tls.cert', t.cert, 'a PEM certificate', (text) => new crypto.X509Certificate(text));
  if (key && cert && !cert.checkPrivateKey(key)) v.add('tls.key', `${t.key} is not the key of the certificate in ${t.cert}`);
  // A server certificate out of its dates fails every client's handshake: better a refusal that says so than a server
  // nobody can reach.
  if (cert && checkDates) {
    const now = Date.now();
    const notBefore = new Date(cert.validFrom);
    const notAfter = new Date(cert.validTo);
    if (notAfter.getTime() <= now) v.add('tls.cert', `${t.cert} expired on ${notAfter.toISOString()}; clients refuse it: renew it (docs/operator-guide.md, "Rotate the server certificate")`);
    else if (notBefore.getTime() > now) v.add('tls.cert', `${t.cert} is not valid until ${notBefore.toISOString()}; clients refuse it until then: check this machine's clock`);
  }
  t.clientCa.forEach((file, i) => v.pem(t.clientCa.length > 1 ? `tls.clientCa[${i}]` : 'tls.clientCa', file, 'a PEM CA certificate', (text) => new crypto.X509Certificate(text)));
}

function parseClientCa(v: Validator, value: unknown, base: string): string[] {
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) v.add('tls.clientCa', 'must name at least one CA file');
  return list.map((item, i) => v.file(Array.isArray(value) ? `tls.clientCa[${i}]` : 'tls.clientCa', item, base, true, true) ?? '');
}

function parseUpstreams(v: Validator, value: unknown, base: string, env: Env): UpstreamConfig[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) {
    v.add('upstreams', 'must be a list');
    return [];
  }
  const out: UpstreamConfig[] = [];
  value.forEach((item, i) => {
    const where = `upstreams[${i}]`;
    const o = v.object(where, item, ['name', 'url', 'usernameEnv', 'passwordEnv', 'ca', 'insecure', 'connectTimeoutMs', 'readTimeoutMs']);
    if (!o) {
      if (item === null || item === undefined) v.add(where, 'must be a mapping');
      return;
    }
    const name = v.string(`${where}.name`, o.name, true);
    const port = name === null ? null : /:([0-9]+)$/.exec(name)?.[1];
    if (name !== null && (!/^[a-z0-9.-]+(?::[0-9]+)?$/.test(name) || !HOST_NAME.test(name.replace(/:[0-9]+$/, '')) || (port !== undefined && Number(port) > 65535))) {
      v.add(`${where}.name`, 'must be a registry host name, like docker.io or ghcr.io');
    } else if (name !== null && normalizeHost(name) !== name) {
      // Image names fold these into docker.io, so an upstream of that name could never be routed to.
      v.add(`${where}.name`, `"${name}" is Docker Hub; name it docker.io`);
    }
    if (name !== null && out.some((u) => u.name === name)) v.add(`${where}.name`, `duplicate upstream "${name}"`);
    const url = v.string(`${where}.url`, o.url, true);
    let insecure = false;
    if (o.insecure !== undefined) {
      if (typeof o.insecure !== 'boolean') v.add(`${where}.insecure`, 'must be true or false');
      else insecure = o.insecure;
    }
    if (url !== null) {
      try {
        const u = new URL(url);
        if (u.protocol === 'http:' && !insecure) v.add(`${where}.url`, 'http:// is refused unless insecure: true');
        else if (u.protocol !== 'http:' && u.protocol !== 'https:') v.add(`${where}.url`, 'must be an https:// URL');
        if (u.username || u.password) v.add(`${where}.url`, 'must not carry credentials; use usernameEnv and passwordEnv');
        else if (u.search || u.hash) v.add(`${where}.url`, 'must not carry a query or fragment');
        else if (/\/v2\/*$/.test(u.pathname)) v.add(`${where}.url`, 'must not end in /v2: give the registry\'s root, airlock adds /v2/');
      } catch {
        v.add(`${where}.url`, 'must be a URL');
      }
    }
    const username = v.secret(`${where}.usernameEnv`, o.usernameEnv, env);
    const password = v.secret(`${where}.passwordEnv`, o.passwordEnv, env);
    if ((o.usernameEnv === undefined) !== (o.passwordEnv === undefined)) v.add(where, 'usernameEnv and passwordEnv go together');
    const timeout = (key: 'connectTimeoutMs' | 'readTimeoutMs', dflt: number): number => {
      const t = o[key];
      if (t === undefined) return dflt;
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 100 || t > 600000) {
        v.add(`${where}.${key}`, 'must be a whole number of milliseconds from 100 to 600000');
        return dflt;
      }
      return t;
    };
    const ca = v.file(`${where}.ca`, o.ca, base, false, true);
    v.pem(`${where}.ca`, ca, 'a PEM CA certificate', (text) => new crypto.X509Certificate(text));
    out.push({
      name: name ?? '',
      url: (url ?? '').replace(/\/+$/, ''),
      username,
      password,
      ca,
      insecure,
      connectTimeoutMs: timeout('connectTimeoutMs', 5000),
      readTimeoutMs: timeout('readTimeoutMs', 30000),
    });
  });
  return out;
}

function parsePolicy(v: Validator, value: unknown, base: string, upstreams: string[]): Config['policy'] {
  const o = v.object('policy', value ?? {}, ['pins', 'publishers']) ?? {};
  const pins: PinSeed[] = [];
  if (o.pins !== undefined) {
    if (!Array.isArray(o.pins)) v.add('policy.pins', 'must be a list');
    else
      o.pins.forEach((p, i) => {
        const where = `policy.pins[${i}]`;
        const s = v.string(where, p, true);
        if (s === null) return;
        try {
          const ref = parseCanonicalReference(s);
          if (ref.digest === null) throw new Error('a pin needs a digest: REPOSITORY[:TAG]@sha256:<hex>');
          checkUpstream(ref.repository, upstreams);
          const other = ref.tag === null ? undefined : pins.find((x) => x.repository === ref.repository && x.tag === ref.tag && x.digest !== ref.digest);
          if (other) throw new Error(`${ref.repository}:${ref.tag} is pinned to ${other.digest} by an earlier pin; a tag is pinned to one digest`);
          pins.push({ repository: ref.repository, tag: ref.tag, digest: ref.digest });
        } catch (err) {
          v.add(where, (err as Error).message);
        }
      });
  }
  const publishers: PublisherSeed[] = [];
  if (o.publishers !== undefined) {
    if (!Array.isArray(o.publishers)) v.add('policy.publishers', 'must be a list');
    else
      o.publishers.forEach((p, i) => {
        const where = `policy.publishers[${i}]`;
        const po = v.object(where, p, ['name', 'key', 'repositories']);
        if (!po) {
          if (p === null || p === undefined) v.add(where, 'must be a mapping');
          return;
        }
        const name = v.string(`${where}.name`, po.name, true);
        if (name !== null && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) v.add(`${where}.name`, 'must be 1-64 letters, digits, dots, dashes or underscores');
        if (name !== null && publishers.some((x) => x.name === name)) v.add(`${where}.name`, `duplicate publisher "${name}"`);
        const keyFile = v.file(`${where}.key`, po.key, base, true, true);
        let publicKey = '';
        v.pem(`${where}.key`, keyFile, 'a file of PEM public keys', (text) => {
          publicKey = text;
          try {
            publisherFingerprints(text);
          } catch (err) {
            v.add(`${where}.key`, `${keyFile}: ${(err as Error).message}`);
          }
        });
        const repositories: string[] = [];
        if (!Array.isArray(po.repositories) || po.repositories.length === 0) v.add(`${where}.repositories`, 'must be a non-empty list of repository globs');
        else
          po.repositories.forEach((g, j) => {
            const gs = v.string(`${where}.repositories[${j}]`, g, true);
            if (gs === null) return;
            if (!/^[a-z0-9.:*_/-]+$/.test(gs) || !gs.includes('/')) v.add(`${where}.repositories[${j}]`, 'must be a glob on canonical names, like ghcr.io/acme/*');
            else repositories.push(gs);
          });
        if (name !== null) publishers.push({ name, publicKey, repositories });
      });
  }
  return { pins, publishers };
}

function checkUpstream(repository: string, upstreams: string[]): void {
  const host = canonicalRepository(repository).split('/')[0];
  if (!upstreams.includes(host)) throw new Error(`"${host}" is not a configured upstream (${upstreams.join(', ') || 'none configured'})`);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
