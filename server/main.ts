#!/usr/bin/env node
// main is the airlock command line: the only place that reads argv and the environment and exits the process.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { createAuditStore } from '../storage/audit.js';
import { createCertStore } from '../storage/certs.js';
import { openDatabase } from '../storage/db.js';
import { formatVerifyResult, verifyAuditFile } from './audit/verify.js';
import { clientFiles, clientWarnings, listenWarnings, mirrorAddress } from './clients.js';
import { type Config, listenAddress, loadConfigFile } from './config.js';
import { UserError, whyUnreadable } from './errors.js';
import { defaultHosts, initDataDir } from './init.js';
import { CertAuthority } from './pki/authority.js';
import { checkBundleFolder, clientTrust, isRole, normalizeSerial, writeClientBundle } from './pki/ca.js';
import { startAirlock } from './runtime.js';
import { parsePublicKey, writeSigningKey } from './signing/key.js';
import { signCommand } from './signing/sign-command.js';

const USAGE = `usage:
  airlock init [--dir DIR] [--host NAME]... [--force] [--listen HOST:PORT]
  airlock serve [--config FILE]
  airlock cert issue --config FILE --name NAME --role pull|audit|admin [--days N] [--out DIR]
  airlock cert revoke --config FILE --serial HEX [--reason TEXT]
  airlock key generate --out PREFIX
  airlock sign --key PREFIX.key [--ca FILE] [--cert-dir DIR] REGISTRY/REPO@DIGEST
  airlock audit verify FILE [--key PUB]`;

const env = process.env;

// A reader of stdout gone away (airlock help | true, serve | grep -m1 listening, a log shipper that died) loses what
// is written, as the log loses its lines (logging.ts): the write's EPIPE would otherwise end airlock with a stack
// trace, a server without its final checkpoint.
process.stdout.on('error', () => {});

function args<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, positionals = 0) {
  try {
    const r = parseArgs({ args: argv, options, strict: true as const, allowPositionals: true as const });
    if (r.positionals.length > positionals) throw new UserError(`unexpected argument "${r.positionals[positionals]}"`);
    // An empty value (--config "$UNSET") would count as none: serve would initialise ./airlock-data, init --dir and
    // cert issue --out would write into the working directory.
    for (const [name, value] of Object.entries(r.values)) {
      if (value === '' || (Array.isArray(value) && value.includes(''))) throw new UserError(`--${name} needs a value, not an empty one`);
    }
    return r;
  } catch (err) {
    if (err instanceof UserError) throw err;
    const unknown = /^Unknown option '([^']*)'/.exec((err as Error).message);
    if (unknown) throw new UserError(`unknown option ${unknown[1]}; run "airlock help" for the usage`);
    // parseArgs takes a value that starts with "-" (--days -3, --dir --force) for a forgotten one, and says so over three lines.
    const noValue = /^Option '(-[^' ]+)(?: <value>)?' argument (missing|is ambiguous)/.exec((err as Error).message);
    if (noValue) throw new UserError(`${noValue[1]} needs a value${noValue[2] === 'missing' ? '' : `; to give one that starts with "-", write ${noValue[1]}=VALUE`}`);
    throw new UserError((err as Error).message.split('\n')[0]);
  }
}

// subcommand says what is wrong with the word after cmd: missing, or not one of cmd's.
function subcommand(cmd: string, sub: string | undefined): string {
  return sub === undefined ? `"${cmd}" needs a command after it` : `unknown command "${cmd} ${sub}"`;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function required(v: unknown, flag: string): string {
  const s = str(v);
  if (!s) throw new UserError(`${flag} is required`);
  return s;
}

// publicKeyFile is the mirror key's .pub beside its .key; a key named otherwise has none that airlock knows of (its own
// path would name the private key).
function publicKeyFile(config: Config): string | null {
  return config.signing.key.endsWith('.key') ? config.signing.key.replace(/\.key$/, '.pub') : null;
}

// loadConfig reads the configuration for serving, or (serving false) for a command that only needs the data directory.
function loadConfig(file: string, serving = true): Config {
  return loadConfigFile(file, env, { requireSecrets: serving, checkServerDates: serving });
}

// findConfig applies SPEC §1: --config, $AIRLOCK_CONFIG, ./airlock.yaml, ./airlock-data/airlock.yaml.
function findConfig(flag: string | undefined): string | null {
  if (flag) return flag;
  if (env.AIRLOCK_CONFIG) return env.AIRLOCK_CONFIG;
  for (const f of ['airlock.yaml', path.join('airlock-data', 'airlock.yaml')]) if (fs.existsSync(f)) return f;
  return null;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = args(argv, { config: { type: 'string' } });
  // The stop signals have their handlers from the first moment, and one that comes while airlock starts is acted on
  // once it has started. As a container's PID 1, Node ignores SIGTERM until a handler is installed: docker stop during
  // the start waited out its whole grace period. The handlers are never swapped: a signal that arrived while a handler
  // was being replaced would be dropped.
  let early: string | null = null;
  let onStop: ((signal: string) => void) | null = null;
  const signalled = (signal: string): void => {
    if (onStop === null) early ??= signal;
    else onStop(signal);
  };
  process.on('SIGINT', signalled);
  process.on('SIGTERM', signalled);
  let file = findConfig(str(values.config));
  if (file === null) {
    let r;
    try {
      r = initDataDir({ dir: 'airlock-data', hosts: defaultHosts(), force: false, keyPassword: env.AIRLOCK_KEY_PASSWORD ?? '', p12Password: env.AIRLOCK_P12_PASSWORD ?? '' });
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      // A data directory that cannot be made at all (a file in the way, a folder it may not write) is said as it is.
      if (!/ exists; refusing to overwrite /.test(err.message)) throw new UserError(`no configuration found, and ./airlock-data cannot be initialised: ${err.message}`);
      // init's advice (--force) is not serve's to take: say what serve found, and the commands that settle it.
      throw new UserError(
        `${err.message.replace(/ \(use --force[^)]*\)$/, '')}: airlock-data holds part of a data directory but no airlock.yaml; start over with airlock init --dir airlock-data --force, or name a configuration with serve --config`,
      );
    }
    console.log(`no configuration found: initialised ${r.dir} (CA, server certificate for ${r.hosts.join(', ')}, admin bundle, mirror key)`);
    file = r.config;
  }
  const config = loadConfig(file);
  const airlock = await startAirlock(config);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      // A second signal: no more waiting for slow clients and downloads. The audit log and the database still close.
      airlock.services.logger.warn({ signal }, 'stopping now: cutting open connections and downloads');
      airlock.hurry();
      return;
    }
    stopping = true;
    airlock.services.logger.info({ signal }, 'stopping: finishing downloads in flight');
    airlock.close().then(
      () => process.exit(0),
      (err: Error) => {
        console.error(`airlock: error while stopping: ${err.message}`);
        process.exit(1);
      },
    );
  };
  onStop = stop;
  if (early !== null) stop(early);
  // A closed terminal must not kill the server without its final checkpoint; there is nothing to reload.
  process.on('SIGHUP', () => airlock.services.logger.warn('SIGHUP ignored: airlock reads its configuration at start; restart it to apply changes'));
  const address = mirrorAddress(config, { host: config.listen.host, port: airlock.port }, airlock.services.serverNames);
  // The commands below reach airlock by a name its certificate holds; where it listens can be a wildcard or another one.
  const base = `https://${address}`;
  const admin = path.join(config.dataDir, 'pki', 'clients', 'admin');
  const pub = publicKeyFile(config);
  // containerd's snippet is for the first upstream; a configuration may name none yet (only cached content is served).
  const c = clientFiles('containerd', config, address)[0];
  const containerd = c
    ? [`containerd: ${c.path}:`, ...c.content.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => `  ${l}`)]
    : [`containerd: no upstream is configured; add one under upstreams in ${path.resolve(file)}`];
  // The start-up log lines wait a few milliseconds to be written together; they go out first, so stdout reads in order.
  await new Promise<void>((resolve) => airlock.services.logger.flush(() => resolve()));
  console.log(
    [
      `airlock listening on ${airlock.url} (mutual TLS; config ${path.resolve(file)})`,
      ...listenWarnings(config, { host: config.listen.host, port: airlock.port }, airlock.services.serverNames).map((w) => `  warning: ${w}`),
      // A data directory of its own beside TLS files kept elsewhere has no bundle from init: the way to one is said.
      fs.existsSync(path.join(admin, 'client.cert'))
        ? `admin client bundle: ${admin}/{ca.crt,client.cert,client.key,client.p12}`
        : `admin client bundle: none at ${admin}; issue one with airlock cert issue --config ${path.resolve(file)} --name admin --role admin --out ${admin}`,
      pub === null ? `mirror public key:   GET ${base}/api/v1/signing-key` : `mirror public key:   ${pub} (also GET ${base}/api/v1/signing-key)`,
      `console:             ${base}/ui/ (import client.p12 into the browser)`,
      '',
      `Docker: /etc/docker/daemon.json {"registry-mirrors": ["https://${address}"]}, and copy the bundle to /etc/docker/certs.d/${address}/{ca.crt,client.cert,client.key}`,
      ...clientWarnings('docker', address).map((w) => `  warning: ${w}`),
      ...containerd,
      config.upstreams.length === 0
        ? `podman/skopeo: no upstream is configured; add one under upstreams in ${path.resolve(file)}`
        : `podman/skopeo: /etc/containers/registries.conf.d/airlock.conf, a [[registry]] per upstream, like prefix="${config.upstreams[0].name}" location="${address}/${config.upstreams[0].name}" (all of them: GET ${base}/api/v1/client-config?kind=podman); certs in /etc/containers/certs.d/${address}/`,
      `quick check: curl --cacert ${admin}/ca.crt --cert ${admin}/client.cert --key ${admin}/client.key ${base}/v2/`,
    ].join('\n'),
  );
}

function init(argv: string[]): void {
  const { values } = args(argv, { dir: { type: 'string' }, host: { type: 'string', multiple: true }, force: { type: 'boolean' }, listen: { type: 'string' } });
  const hosts = (values.host as string[] | undefined) ?? [];
  const listen = str(values.listen);
  // Refused here as serve would refuse it in the configuration written.
  const problem = listen === undefined ? null : listenAddress(listen).problem;
  if (problem !== null) throw new UserError(`--listen ${listen}: ${problem}`);
  const r = initDataDir({ dir: str(values.dir) ?? 'airlock-data', hosts, force: values.force === true, keyPassword: env.AIRLOCK_KEY_PASSWORD ?? '', p12Password: env.AIRLOCK_P12_PASSWORD ?? '', listen });
  console.log(`initialised ${r.dir}\n  config: ${r.config}${r.configKept ? ' (there already: kept as it was)' : ''}\n  server certificate for: ${r.hosts.join(', ')}\n  admin bundle: ${r.adminBundle}\nrun: airlock serve --config ${r.config}`);
}

// localActor names who ran a command in audit events: there is no client certificate, so it is the local user.
function localActor(): string {
  try {
    return `local:${os.userInfo().username}`;
  } catch {
    return `local:uid ${process.getuid?.() ?? 'unknown'}`;
  }
}

function cert(argv: string[]): void {
  const [sub, ...rest] = argv;
  if (sub === 'issue') {
    const { values } = args(rest, { config: { type: 'string' }, name: { type: 'string' }, role: { type: 'string' }, days: { type: 'string' }, out: { type: 'string' } });
    const config = loadConfig(required(values.config, '--config'), false);
    const name = required(values.name, '--name');
    const role = required(values.role, '--role');
    if (!isRole(role)) throw new UserError(`--role must be pull, audit or admin, not "${role}"`);
    const daysText = str(values.days) ?? '365';
    // Only the form is checked here; the range is issuing's one check, which names it ("from 1 to 3650").
    if (!/^[0-9]+$/.test(daysText)) throw new UserError('--days must be a whole number of days');
    const caKey = path.join(config.dataDir, 'pki', 'ca.key');
    if (!fs.existsSync(caKey)) throw new UserError(`the CA key ${caKey} is not on this machine; issue certificates where the CA key lives`);
    const out = str(values.out) ?? path.join(config.dataDir, 'pki', 'clients', name);
    // Another bundle there (init's admin bundle, say) would be replaced, and with it the only copy of its private key.
    if (fs.existsSync(path.join(out, 'client.key'))) throw new UserError(`${path.resolve(out)} already holds a client bundle; choose another --out or --name, or remove it first`);
    try {
      checkBundleFolder(out);
    } catch (err) {
      throw new UserError(`cannot write the bundle: ${(err as Error).message}`);
    }
    const db = openDatabase(config.dataDir);
    try {
      const clientCa = config.tls.clientCa.map((f) => fs.readFileSync(f, 'utf8'));
      // The bundle's ca.crt holds every CA of tls.clientCa, so that it reaches the server across a CA renewal.
      const trust = clientTrust(clientCa, fs.readFileSync(config.tls.cert, 'utf8'));
      const authority = new CertAuthority({ certPem: clientCa[0], keyPem: fs.readFileSync(caKey, 'utf8') }, createCertStore(db), trust);
      let issued;
      try {
        issued = authority.issue(name, role, Number(daysText), 'airlock cert issue');
      } catch (err) {
        throw new UserError((err as Error).message);
      }
      // The server chains these events (SPEC §7: every admin action is one) within a second, or at its next start.
      const audit = createAuditStore(db);
      audit.queue({ action: 'admin.cert.issue', actor: localActor(), reference: issued.serial, decision: 'allow', reason: `${name} (${role}) for ${daysText} days, with airlock cert issue` });
      try {
        writeClientBundle(out, issued, issued.caPem, env.AIRLOCK_P12_PASSWORD ?? '');
      } catch (err) {
        // The certificate is on record but its key is lost: revoke it rather than leave a live certificate nobody holds.
        const why = 'airlock cert issue could not write its bundle';
        authority.revoke(issued.serial, why);
        audit.queue({ action: 'admin.cert.revoke', actor: localActor(), reference: issued.serial, decision: 'allow', reason: why });
        throw new UserError(`cannot write the bundle into ${path.resolve(out)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); certificate ${issued.serial} was revoked`);
      }
      console.log(issued.serial);
      console.error(`issued ${role} certificate for ${name} (expires ${issued.notAfter}) into ${path.resolve(out)}/{ca.crt,client.cert,client.key,client.p12}`);
    } finally {
      db.close();
    }
    return;
  }
  if (sub === 'revoke') {
    const { values } = args(rest, { config: { type: 'string' }, serial: { type: 'string' }, reason: { type: 'string' } });
    const config = loadConfig(required(values.config, '--config'), false);
    const serial = required(values.serial, '--serial');
    const db = openDatabase(config.dataDir);
    try {
      const authority = new CertAuthority({ certPem: '', keyPem: '' }, createCertStore(db));
      const reason = str(values.reason) ?? 'revoked with airlock cert revoke';
      let r;
      try {
        r = authority.revoke(serial, reason);
      } catch (err) {
        throw new UserError(`--serial: ${(err as Error).message}`);
      }
      const canonical = normalizeSerial(serial);
      if (r === 'revoked') createAuditStore(db).queue({ action: 'admin.cert.revoke', actor: localActor(), reference: canonical, decision: 'allow', reason });
      console.log(r === 'revoked' ? `revoked ${canonical}; a running server refuses it within one second` : `${canonical} was already revoked`);
    } finally {
      db.close();
    }
    return;
  }
  throw new UserError(`${subcommand('cert', sub)}; use cert issue or cert revoke`);
}

function key(argv: string[]): void {
  const [sub, ...rest] = argv;
  if (sub !== 'generate') throw new UserError(`${subcommand('key', sub)}; use key generate --out PREFIX`);
  const { values } = args(rest, { out: { type: 'string' } });
  const prefix = required(values.out, '--out');
  if (prefix.endsWith('/') || (fs.existsSync(prefix) && fs.statSync(prefix).isDirectory())) {
    throw new UserError(`--out ${prefix} is a folder; give a file prefix, like ${path.join(prefix, 'acme')} for acme.key and acme.pub`);
  }
  try {
    const r = writeSigningKey(prefix, env.AIRLOCK_KEY_PASSWORD ?? '');
    const how = env.AIRLOCK_KEY_PASSWORD === undefined ? 'with an empty password: $AIRLOCK_KEY_PASSWORD is not set' : 'encrypted with $AIRLOCK_KEY_PASSWORD';
    console.log(`wrote ${r.keyPath} (${how}) and ${r.pubPath}`);
  } catch (err) {
    throw new UserError((err as Error).message);
  }
}

async function sign(argv: string[]): Promise<void> {
  const { values, positionals } = args(argv, { key: { type: 'string' }, ca: { type: 'string' }, 'cert-dir': { type: 'string' } }, 1);
  const reference = positionals[0];
  if (!reference) throw new UserError('name the image to sign: REGISTRY/REPO@sha256:<hex>');
  const r = await signCommand({
    keyPath: required(values.key, '--key'),
    password: env.AIRLOCK_KEY_PASSWORD ?? '',
    reference,
    caPath: str(values.ca),
    certDir: str(values['cert-dir']),
  });
  if (r.added) console.log(`signed ${reference}: pushed ${r.signatureTag} (${r.signatureDigest})`);
  else console.log(`signed ${reference} already: ${r.signatureTag} (${r.signatureDigest}) holds this key's signature; nothing pushed`);
}

async function audit(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'verify') throw new UserError(`${subcommand('audit', sub)}; use audit verify FILE [--key PUB]`);
  const { values, positionals } = args(rest, { key: { type: 'string' } }, 1);
  const file = positionals[0];
  if (!file) throw new UserError('name the exported audit file: airlock audit verify FILE [--key PUB]');
  let keyFile = str(values.key);
  if (!keyFile) {
    const cfg = findConfig(undefined);
    if (!cfg) throw new UserError('--key is required when no local configuration names the mirror key');
    const config = loadConfig(cfg, false);
    keyFile = publicKeyFile(config) ?? undefined;
    if (!keyFile) throw new UserError(`--key is required: the mirror key ${config.signing.key} is not named *.key, so its .pub is not known`);
  }
  let pub;
  try {
    pub = parsePublicKey(fs.readFileSync(keyFile, 'utf8'));
  } catch (err) {
    throw new UserError(`--key ${keyFile}: ${whyUnreadable(err)}`);
  }
  let result;
  try {
    result = await verifyAuditFile(file, pub);
  } catch (err) {
    throw new UserError(`cannot read ${file}: ${whyUnreadable(err)}`);
  }
  const line = formatVerifyResult(result);
  if (result.ok) {
    console.log(line);
    return 0;
  }
  console.error(line);
  return 1;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  // `airlock cert --help`, `airlock serve -h`: the usage of that command; `airlock cert issue -h`, of that subcommand.
  const all = USAGE.split('\n').filter((l) => l.startsWith(`  airlock ${cmd} `));
  const sub = all.filter((l) => rest[0] !== undefined && l.startsWith(`  airlock ${cmd} ${rest[0]} `));
  const lines = sub.length > 0 ? sub : all;
  if (lines.length > 0 && rest.some((a) => a === '--help' || a === '-h')) {
    console.log(`usage:\n${lines.join('\n')}`);
    return 0;
  }
  switch (cmd) {
    case 'init':
      init(rest);
      return 0;
    case 'serve':
      await serve(rest);
      return -1;
    case 'cert':
      cert(rest);
      return 0;
    case 'key':
      key(rest);
      return 0;
    case 'sign':
      await sign(rest);
      return 0;
    case 'audit':
      return audit(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UserError(`unknown command "${cmd}"; run "airlock help" for the usage`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: Error) => {
    const sys = err as NodeJS.ErrnoException;
    if (err instanceof UserError) console.error(`airlock: ${err.message}`);
    // A file or socket this machine refused (ENOTDIR, EACCES, ENOSPC, ...) is no bug of airlock's: no stack trace.
    else if (typeof sys.code === 'string' && typeof sys.syscall === 'string') console.error(`airlock: ${err.message}`);
    else console.error(`airlock: unexpected error: ${err.stack ?? err.message}`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  },
);
