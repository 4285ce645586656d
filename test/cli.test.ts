// The command line (SPEC §1) as real processes: init, key generate (checked with real cosign), cert issue and
// revoke, serve with and without a configuration, and one-line errors without stack traces for user mistakes.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { loadConfigFile } from '../server/config.js';
import { createAuditStore } from '../storage/audit.js';
import { createCertStore } from '../storage/certs.js';
import { openDatabase } from '../storage/db.js';
import { MIGRATIONS } from '../storage/migrations.js';
import { issueServerCertWithValidity, normalizeSerial } from '../server/pki/ca.js';
import { loadSigningKey } from '../server/signing/key.js';
import { freePort, type Proc, run, type RunResult, runOk, startProcess, stopAll, StopWaiting, waitFor } from './harness/proc.js';
import { cosignBinary } from './harness/cosign.js';
import { registryRequest } from './harness/registry.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MAIN = path.join(REPO, 'server', 'main.ts');
// TSX is tsx's loader by absolute URL, so the CLI also starts from a working directory outside the repository.
const TSX = import.meta.resolve('tsx');
// cosign is found (or fetched) by the tests that run it, so that a failed fetch fails them, not the whole file.
let cosignPath = '';
const cosign = (): string => (cosignPath ||= cosignBinary());
const KEY_PASSWORD = 'cli-test-key-password';
const P12_PASSWORD = 'cli-test-p12';

// BASE_ENV is the test's environment without any AIRLOCK_ variable, so only what a test sets reaches the CLI.
const BASE_ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AIRLOCK_')));
const ENV: NodeJS.ProcessEnv = { ...BASE_ENV, AIRLOCK_KEY_PASSWORD: KEY_PASSWORD, AIRLOCK_P12_PASSWORD: P12_PASSWORD };

let tmp: string;
let data: string;
let configPath: string;

function airlock(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  return run(process.execPath, ['--import', TSX, MAIN, ...args], { cwd: opts.cwd ?? REPO, env: opts.env ?? ENV, timeoutMs: 60_000 });
}

function startAirlockProcess(name: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Proc {
  return startProcess(process.execPath, ['--import', TSX, MAIN, ...args], { name, cwd: opts.cwd ?? REPO, env: opts.env ?? ENV, logDir: tmp });
}

// assertUserError checks the SPEC §1 promise: a non-zero exit, one line on stderr, no stack trace.
function assertUserError(r: RunResult, pattern: RegExp): void {
  assert.notEqual(r.code, 0, `exit code for: ${r.stderr}`);
  assert.equal(r.timedOut, false);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /^airlock: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at |unexpected error/);
}

function x509(file: string): crypto.X509Certificate {
  return new crypto.X509Certificate(fs.readFileSync(file));
}

function mode(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

function spkiDer(pem: string): Buffer {
  return crypto.createPublicKey(pem).export({ type: 'spki', format: 'der' });
}

async function exitWithin(proc: Proc, ms: number): Promise<number | null | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  const r = await Promise.race([proc.exited, deadline]);
  clearTimeout(timer);
  return r;
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

// listenOn is the test configuration's text listening on address; it fails rather than leave the default 5443 in
// place should init write the line differently.
function listenOn(address: string): string {
  const text = fs.readFileSync(configPath, 'utf8');
  assert.ok(text.includes('listen: 127.0.0.1:5443'), `the test configuration listens on 127.0.0.1:5443:\n${text}`);
  return text.replace('listen: 127.0.0.1:5443', `listen: ${address}`);
}

// serveOn starts airlock serve on a copy of the test configuration that listens on a free port (edit changes the
// copy further) and waits until it says where it listens.
async function serveOn(name: string, edit: (text: string) => string = (text) => text): Promise<{ proc: Proc; url: string; file: string }> {
  const file = path.join(data, `${name}.yaml`);
  fs.writeFileSync(file, edit(listenOn('127.0.0.1:0')));
  const proc = startAirlockProcess(name, ['serve', '--config', file]);
  let url = '';
  await waitFor(
    () => {
      if (!proc.running()) throw new StopWaiting(`serve exited:\n${proc.output()}`);
      url = /airlock listening on (https:\/\/127\.0\.0\.1:[0-9]+) /.exec(proc.output())?.[1] ?? '';
      return url !== '';
    },
    { timeoutMs: 30_000, what: `airlock serve (${name}) to say where it listens` },
  );
  return { proc, url, file };
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-cli-'));
  data = path.join(tmp, 'data');
  const r = await airlock(['init', '--dir', data, '--host', 'a.example', '--host', '127.0.0.1']);
  assert.equal(r.code, 0, r.stderr);
  configPath = path.join(data, 'airlock.yaml');
});

after(async () => {
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('airlock init', () => {
  test('writes the CA, a server certificate for every --host, the admin bundle, the mirror key, the database and airlock.yaml', async () => {
    for (const f of [
      'pki/ca.crt',
      'pki/ca.key',
      'pki/server.crt',
      'pki/server.key',
      'pki/clients/admin/ca.crt',
      'pki/clients/admin/client.cert',
      'pki/clients/admin/client.key',
      'pki/clients/admin/client.p12',
      'keys/mirror.key',
      'keys/mirror.pub',
      'airlock.db',
      'airlock.yaml',
    ]) {
      assert.ok(fs.statSync(path.join(data, f)).size > 0, `${f} exists and is not empty`);
    }
    for (const f of ['pki/ca.key', 'pki/server.key', 'pki/clients/admin/client.key', 'pki/clients/admin/client.p12', 'keys/mirror.key']) {
      assert.equal(mode(path.join(data, f)), 0o600, `${f} is private`);
    }

    const ca = x509(path.join(data, 'pki', 'ca.crt'));
    assert.ok(ca.ca);
    assert.ok(ca.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(path.join(data, 'pki', 'ca.key')))));
    const server = x509(path.join(data, 'pki', 'server.crt'));
    assert.equal(server.subjectAltName, 'DNS:a.example, IP Address:127.0.0.1');
    assert.ok(server.verify(ca.publicKey));
    assert.ok(server.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(path.join(data, 'pki', 'server.key')))));

    const admin = path.join(data, 'pki', 'clients', 'admin');
    assert.deepEqual(fs.readFileSync(path.join(admin, 'ca.crt')), fs.readFileSync(path.join(data, 'pki', 'ca.crt')));
    const client = x509(path.join(admin, 'client.cert'));
    assert.ok(client.verify(ca.publicKey));
    assert.match(client.subject, /CN=admin/);
    assert.match(client.subject, /OU=admin/);
    assert.ok(client.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(path.join(admin, 'client.key')))));
    const p12 = await runOk('openssl', ['pkcs12', '-in', path.join(admin, 'client.p12'), '-passin', `pass:${P12_PASSWORD}`, '-nokeys', '-clcerts']);
    assert.match(p12.stdout, /subject=.*CN\s*=\s*admin/);

    assert.match(fs.readFileSync(path.join(data, 'keys', 'mirror.key'), 'utf8'), /^-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----/);
    const mirror = loadSigningKey(fs.readFileSync(path.join(data, 'keys', 'mirror.key'), 'utf8'), KEY_PASSWORD);
    assert.deepEqual(crypto.createPublicKey(mirror).export({ type: 'spki', format: 'der' }), spkiDer(fs.readFileSync(path.join(data, 'keys', 'mirror.pub'), 'utf8')));

    assert.equal(fs.readFileSync(path.join(data, 'airlock.db')).subarray(0, 16).toString('latin1'), 'SQLite format 3\0');
    const config = loadConfigFile(configPath, {});
    assert.equal(config.dataDir, data);
    assert.equal(config.tls.cert, path.join(data, 'pki', 'server.crt'));
    assert.equal(config.signing.key, path.join(data, 'keys', 'mirror.key'));
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 5443 });
  });

  test("without --host, the server certificate's SANs are localhost, 127.0.0.1 and this machine's hostname", async () => {
    const dir = path.join(tmp, 'default-hosts');
    const r = await airlock(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    const server = x509(path.join(dir, 'pki', 'server.crt'));
    const sans = (server.subjectAltName ?? '').split(', ');
    for (const san of ['DNS:localhost', 'IP Address:127.0.0.1', `DNS:${os.hostname()}`]) assert.ok(sans.includes(san), `${san} in ${server.subjectAltName}`);
    assert.ok(server.checkHost(os.hostname()), 'the certificate is valid for the hostname');
    assert.ok(server.verify(x509(path.join(dir, 'pki', 'ca.crt')).publicKey));
  });

  test('a bad --host or --listen is one line and writes nothing', async () => {
    for (const [extra, pattern] of [
      [['--host', 'bad_host!'], /--host: host "bad_host!" is neither an IP address nor a DNS name/],
      [['--host', ''], /^airlock: --host needs a value, not an empty one$/],
      [['--listen', '0.0.0.0:99999'], /^airlock: --listen 0\.0\.0\.0:99999: port must be 0\.\.65535$/],
      [['--listen', '5443'], /^airlock: --listen 5443: must be host:port, like 127\.0\.0\.1:5443 or \[::\]:5443$/],
      [['--listen', 'bad_host:5443'], /^airlock: --listen bad_host:5443: must be host:port/],
      [['--listen', '[mirror]:5443'], /^airlock: --listen \[mirror\]:5443: must be host:port/],
      [['--listen', '300.1.1.1:5443'], /^airlock: --listen 300\.1\.1\.1:5443: "300\.1\.1\.1" is not an IPv4 address or a host name$/],
    ] as [string[], RegExp][]) {
      const dir = path.join(tmp, `refused-${crypto.randomUUID()}`);
      assertUserError(await airlock(['init', '--dir', dir, ...extra]), pattern);
      assert.ok(!fs.existsSync(dir), `nothing was written for ${extra.join(' ')}`);
    }
    assertUserError(await airlock(['init', '--dir', path.join(tmp, 'a-file-too', 'x')], { env: ENV, cwd: (fs.writeFileSync(path.join(tmp, 'a-file-too'), ''), REPO) }), /a file in its path is not a directory \(ENOTDIR\)/);
  });

  test('init --dir naming a file says it is a file, not a directory, and leaves the file as it was', async () => {
    const file = path.join(tmp, 'init-dir-is-a-file');
    fs.writeFileSync(file, 'keep me');
    const r = await airlock(['init', '--dir', file]);
    assertUserError(r, new RegExp(`^airlock: data directory ${file}: a file, not a directory$`));
    assert.equal(fs.readFileSync(file, 'utf8'), 'keep me');
  });

  test('init keeps an airlock.yaml already there and says so, and refuses a --listen it would leave out of it', async () => {
    const dir = path.join(tmp, 'init-kept-config');
    fs.mkdirSync(dir);
    const config = path.join(dir, 'airlock.yaml');
    fs.writeFileSync(config, 'listen: 127.0.0.1:7777\n');
    assertUserError(await airlock(['init', '--dir', dir, '--listen', '0.0.0.0:5443']), /^airlock: --listen: .*airlock\.yaml exists and init keeps it; set listen in it, or leave out --listen$/);
    assert.deepEqual(fs.readdirSync(dir), ['airlock.yaml'], 'nothing was written');
    const r = await airlock(['init', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(`config: ${config} (there already: kept as it was)`), r.stdout);
    assert.equal(fs.readFileSync(config, 'utf8'), 'listen: 127.0.0.1:7777\n');
  });

  test('a second init refuses to overwrite the CA without --force and changes nothing', async () => {
    const before = fs.readFileSync(path.join(data, 'pki', 'ca.crt'));
    const r = await airlock(['init', '--dir', data]);
    assertUserError(r, /exists; refusing to overwrite the CA \(use --force/);
    assert.equal(r.stdout, '');
    assert.deepEqual(fs.readFileSync(path.join(data, 'pki', 'ca.crt')), before);
  });

  test('init --force replaces the CA, the certificates and the mirror key', async () => {
    const dir = path.join(tmp, 'forced');
    await runOk(process.execPath, ['--import', TSX, MAIN, 'init', '--dir', dir, '--host', 'localhost'], { cwd: REPO, env: ENV });
    const oldCa = x509(path.join(dir, 'pki', 'ca.crt'));
    const oldPub = fs.readFileSync(path.join(dir, 'keys', 'mirror.pub'), 'utf8');
    const r = await airlock(['init', '--dir', dir, '--host', 'b.example', '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /initialised/);
    const ca = x509(path.join(dir, 'pki', 'ca.crt'));
    assert.notEqual(ca.fingerprint256, oldCa.fingerprint256);
    assert.equal(x509(path.join(dir, 'pki', 'server.crt')).subjectAltName, 'DNS:b.example');
    const admin = x509(path.join(dir, 'pki', 'clients', 'admin', 'client.cert'));
    assert.ok(admin.verify(ca.publicKey));
    assert.ok(!admin.verify(oldCa.publicKey));
    assert.notEqual(fs.readFileSync(path.join(dir, 'keys', 'mirror.pub'), 'utf8'), oldPub);
  });

  test('init --force gives the private keys and their folders owner-only modes again', async () => {
    const dir = path.join(tmp, 'loosened');
    assert.equal((await airlock(['init', '--dir', dir, '--host', 'localhost'])).code, 0);
    for (const f of ['pki/ca.key', 'pki/server.key']) fs.chmodSync(path.join(dir, f), 0o644);
    for (const d of ['pki', 'keys']) fs.chmodSync(path.join(dir, d), 0o755);
    assert.equal((await airlock(['init', '--dir', dir, '--host', 'localhost', '--force'])).code, 0);
    for (const f of ['pki/ca.key', 'pki/server.key', 'keys/mirror.key']) assert.equal(mode(path.join(dir, f)), 0o600, f);
    for (const d of ['pki', 'keys']) assert.equal(mode(path.join(dir, d)), 0o700, d);
  });

  test('init next to an existing mirror key refuses before writing anything, and keeps the key', async () => {
    const dir = path.join(tmp, 'has-key');
    assert.equal((await airlock(['key', 'generate', '--out', path.join(dir, 'keys', 'mirror')])).code, 0);
    const key = fs.readFileSync(path.join(dir, 'keys', 'mirror.key'));
    assertUserError(await airlock(['init', '--dir', dir]), /keys\/mirror\.key exists; refusing to overwrite the mirror signing key \(use --force to replace everything\)$/);
    assert.deepEqual(fs.readdirSync(dir), ['keys'], 'no CA, no database, no half-made directory');
    assert.deepEqual(fs.readFileSync(path.join(dir, 'keys', 'mirror.key')), key);
  });
});

describe('airlock key generate', () => {
  test('writes a key pair that real cosign loads with $AIRLOCK_KEY_PASSWORD and derives the same public key from', async () => {
    const prefix = path.join(tmp, 'publisher');
    const r = await airlock(['key', 'generate', '--out', prefix], { env: { ...BASE_ENV, AIRLOCK_KEY_PASSWORD: 'publisher-pw' } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(mode(`${prefix}.key`), 0o600);
    const derived = await runOk(cosign(), ['public-key', '--key', `${prefix}.key`], { env: { ...BASE_ENV, COSIGN_PASSWORD: 'publisher-pw' } });
    assert.deepEqual(spkiDer(derived.stdout), spkiDer(fs.readFileSync(`${prefix}.pub`, 'utf8')));

    const wrong = await run(cosign(), ['public-key', '--key', `${prefix}.key`], { env: { ...BASE_ENV, COSIGN_PASSWORD: 'not-the-password' } });
    assert.notEqual(wrong.code, 0, 'the key is encrypted with $AIRLOCK_KEY_PASSWORD, so another password fails');
    assert.match(wrong.stderr, /decrypt/);
  });

  test('says the key has an empty password when $AIRLOCK_KEY_PASSWORD is not set, not that the variable encrypts it', async () => {
    const prefix = path.join(tmp, 'no-password');
    const r = await airlock(['key', 'generate', '--out', prefix], { env: BASE_ENV });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `wrote ${prefix}.key (with an empty password: $AIRLOCK_KEY_PASSWORD is not set) and ${prefix}.pub\n`);
    assert.equal(loadSigningKey(fs.readFileSync(`${prefix}.key`, 'utf8'), '').asymmetricKeyType, 'ec');
  });

  test('a link to nowhere at PREFIX.pub is refused before anything is written, leaving no half of a pair', async () => {
    const prefix = path.join(tmp, 'dangling');
    fs.symlinkSync(path.join(tmp, 'no-such-folder', 'x'), `${prefix}.pub`);
    assertUserError(await airlock(['key', 'generate', '--out', prefix]), /^airlock: refusing to overwrite existing signing key .*dangling\.pub$/);
    assert.ok(!fs.existsSync(`${prefix}.key`), 'no private key without its public half');
  });

  test('refuses to overwrite an existing key, and needs --out', async () => {
    const prefix = path.join(tmp, 'once');
    assert.equal((await airlock(['key', 'generate', '--out', prefix])).code, 0);
    const before = fs.readFileSync(`${prefix}.key`);
    assertUserError(await airlock(['key', 'generate', '--out', prefix]), /refusing to overwrite/);
    assert.deepEqual(fs.readFileSync(`${prefix}.key`), before);
    // A publisher's public key kept next to where a new pair would go is not replaced either.
    const lone = path.join(tmp, 'lone');
    fs.writeFileSync(`${lone}.pub`, 'a public key kept here\n');
    assertUserError(await airlock(['key', 'generate', '--out', lone]), /refusing to overwrite existing signing key .*lone\.pub/);
    assert.equal(fs.readFileSync(`${lone}.pub`, 'utf8'), 'a public key kept here\n');
    assert.ok(!fs.existsSync(`${lone}.key`));
    assertUserError(await airlock(['key', 'generate']), /--out is required/);
    for (const folder of [`${tmp}/`, tmp]) assertUserError(await airlock(['key', 'generate', '--out', folder]), /is a folder; give a file prefix, like .*acme for acme\.key and acme\.pub$/);
    assert.ok(!fs.existsSync(path.join(tmp, '.key')));
    assertUserError(await airlock(['key', 'make', '--out', prefix]), /unknown command "key make"/);
  });
});

describe('airlock cert', () => {
  test('issue prints the serial in hex and writes the bundle into --out', async () => {
    const out = path.join(tmp, 'bob-bundle');
    const r = await airlock(['cert', 'issue', '--config', configPath, '--name', 'bob', '--role', 'pull', '--days', '30', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const serial = r.stdout.trim();
    assert.match(serial, /^[0-9a-f]+$/);
    assert.equal(r.stdout, `${serial}\n`, 'stdout is only the serial');
    assert.deepEqual(fs.readdirSync(out).sort(), ['ca.crt', 'client.cert', 'client.key', 'client.p12']);
    const cert = x509(path.join(out, 'client.cert'));
    assert.equal(normalizeSerial(cert.serialNumber), serial);
    assert.match(cert.subject, /CN=bob/);
    assert.match(cert.subject, /OU=pull/);
    assert.ok(cert.verify(x509(path.join(data, 'pki', 'ca.crt')).publicKey));
    const days = (new Date(cert.validTo).getTime() - Date.now()) / 86_400_000;
    assert.ok(days > 29.9 && days < 30.1, `valid for 30 days, got ${days}`);
    assert.equal(mode(path.join(out, 'client.key')), 0o600);
    assert.ok(!fs.existsSync(path.join(data, 'pki', 'clients', 'bob')), 'nothing is written to the default place');
    // A second certificate into the same folder would replace the first one's only private key: refused, nothing issued.
    const key = fs.readFileSync(path.join(out, 'client.key'));
    assertUserError(await airlock(['cert', 'issue', '--config', configPath, '--name', 'bob2', '--role', 'admin', '--out', out]), /bob-bundle already holds a client bundle; choose another --out or --name, or remove it first$/);
    assert.deepEqual(fs.readFileSync(path.join(out, 'client.key')), key);
    assertUserError(await airlock(['cert', 'issue', '--config', configPath, '--name', 'admin', '--role', 'pull']), /clients\/admin already holds a client bundle/);
  });

  test('issue without --out writes into DATADIR/pki/clients/NAME', async () => {
    const r = await airlock(['cert', 'issue', '--config', configPath, '--name', 'carol', '--role', 'audit']);
    assert.equal(r.code, 0, r.stderr);
    const cert = x509(path.join(data, 'pki', 'clients', 'carol', 'client.cert'));
    assert.equal(normalizeSerial(cert.serialNumber), r.stdout.trim());
    assert.match(cert.subject, /OU=audit/);
  });

  test('issue refuses a bad role, bad days, a bad name and missing flags with one line each', async () => {
    const issue = (...extra: string[]) => airlock(['cert', 'issue', '--config', configPath, ...extra]);
    const cases: [Promise<RunResult>, RegExp][] = [
      [issue('--name', 'dave', '--role', 'root'), /--role must be pull, audit or admin/],
      ...['abc', '1.5', '1e3'].map((days): [Promise<RunResult>, RegExp] => [issue('--name', 'dave', '--role', 'pull', '--days', days), /--days must be a whole number of days$/]),
      // A whole number out of range says what the range is, however many digits it has.
      ...['0', '3651', '99999'].map((days): [Promise<RunResult>, RegExp] => [issue('--name', 'dave', '--role', 'pull', '--days', days), new RegExp(`days must be a whole number from 1 to 3650, got ${days}$`)]),
      [issue('--name', 'dave', '--role', 'pull', '--days', '-3'), /days/],
      [issue('--name', 'has space', '--role', 'pull'), /client name must be/],
      [issue('--name', '../escape', '--role', 'pull'), /client name must be/],
      [issue('--role', 'pull'), /--name is required/],
      [issue('--name', 'dave'), /--role is required/],
      [airlock(['cert', 'issue', '--name', 'dave', '--role', 'pull']), /--config is required/],
      [airlock(['cert', 'issue', '--config', path.join(tmp, 'nope.yaml'), '--name', 'dave', '--role', 'pull']), /cannot read config .*ENOENT/],
    ];
    for (const [r, pattern] of cases) assertUserError(await r, pattern);
    assert.ok(!fs.existsSync(path.join(data, 'pki', 'clients', 'dave')), 'no bundle was written');
    assert.ok(!fs.existsSync(path.join(data, 'pki', 'escape')));
  });

  test('issue into a folder that cannot be made, or that others can write to, is one line and issues nothing', async () => {
    const blocker = path.join(tmp, 'a-file');
    fs.writeFileSync(blocker, 'not a folder');
    const open = path.join(tmp, 'open-to-all');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    const listed = (): number => {
      const db = openDatabase(data);
      try {
        return createCertStore(db).list().length;
      } finally {
        db.close();
      }
    };
    const before = listed();
    assertUserError(await airlock(['cert', 'issue', '--config', configPath, '--name', 'gina', '--role', 'pull', '--out', path.join(blocker, 'gina')]), /cannot write the bundle: ENOTDIR/);
    assertUserError(await airlock(['cert', 'issue', '--config', configPath, '--name', 'gina', '--role', 'pull', '--out', open]), /open-to-all must be a folder of your own that no one else can write to/);
    assert.equal(listed(), before, 'no certificate was issued');
    assert.deepEqual(fs.readdirSync(open), []);
  });

  test('a bundle that cannot be written once issued is one line, and its certificate is revoked', async () => {
    const out = path.join(tmp, 'iris');
    fs.mkdirSync(path.join(out, 'client.cert'), { recursive: true, mode: 0o700 });
    fs.chmodSync(out, 0o700);
    const r = await airlock(['cert', 'issue', '--config', configPath, '--name', 'iris', '--role', 'pull', '--out', out]);
    assertUserError(r, /cannot write the bundle into .*iris \(ERR_FS_EISDIR\); certificate ([0-9a-f]+) was revoked/);
    const serial = /certificate ([0-9a-f]+) was revoked/.exec(r.stderr)?.[1] ?? '';
    const again = await airlock(['cert', 'revoke', '--config', configPath, '--serial', serial]);
    assert.match(again.stdout, /already revoked/);
  });

  test('revoke accepts the printed serial once, reports a repeat, and refuses a malformed serial with one line', async () => {
    const issued = await airlock(['cert', 'issue', '--config', configPath, '--name', 'erin', '--role', 'pull', '--out', path.join(tmp, 'erin')]);
    const serial = issued.stdout.trim();
    const spelled = `0x00${serial.toUpperCase().replace(/(..)(?=.)/g, '$1:')}`;
    const r = await airlock(['cert', 'revoke', '--config', configPath, '--serial', spelled, '--reason', 'laptop lost']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^revoked ${serial}; `), 'the serial as issued, however it was spelt');
    const again = await airlock(['cert', 'revoke', '--config', configPath, '--serial', serial]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already revoked/);
    for (const bad of ['zz', 'not-hex', '0xg1', '']) {
      assertUserError(await airlock(['cert', 'revoke', '--config', configPath, '--serial', bad]), /--serial/);
    }
    assertUserError(await airlock(['cert', 'revoke', '--config', configPath]), /--serial is required/);
    assertUserError(await airlock(['cert', 'renew', '--config', configPath]), /unknown command "cert renew"/);
  });
});

describe('command-line mistakes', () => {
  test('an unknown command, an unknown flag and a stray argument are one-line errors with a non-zero exit', async () => {
    assertUserError(await airlock(['frobnicate']), /unknown command "frobnicate"/);
    assertUserError(await airlock(['cert']), /^airlock: "cert" needs a command after it; use cert issue or cert revoke$/);
    assertUserError(await airlock(['key', 'make']), /^airlock: unknown command "key make"; use key generate --out PREFIX$/);
    assertUserError(await airlock(['init', '--dir', path.join(tmp, 'never'), '--colour', 'blue']), /--colour/);
    assertUserError(await airlock(['serve', '--confg', configPath]), /--confg/);
    assertUserError(await airlock(['init', 'extra']), /unexpected argument "extra"/);
    assertUserError(await airlock(['init', '--dir']), /^airlock: --dir needs a value$/);
    assertUserError(await airlock(['init', '--dir', '--force']), /^airlock: --dir needs a value; to give one that starts with "-", write --dir=VALUE$/);
    assertUserError(await airlock(['cert', 'issue', '--config', configPath, '--name', 'x', '--role', 'pull', '--days', '-3']), /^airlock: --days needs a value; to give one that starts with "-", write --days=VALUE$/);
    assert.ok(!fs.existsSync(path.join(tmp, 'never')));
  });

  test('an empty value ("$UNSET") is refused, not taken for none: serve initialises nothing, init --dir and cert issue --out write nothing here', async () => {
    const cwd = path.join(tmp, 'empty-values');
    fs.mkdirSync(cwd);
    assertUserError(await airlock(['serve', '--config', ''], { cwd }), /^airlock: --config needs a value, not an empty one$/);
    assertUserError(await airlock(['init', '--dir', ''], { cwd }), /^airlock: --dir needs a value, not an empty one$/);
    assertUserError(await airlock(['cert', 'issue', '--config', configPath, '--name', 'empty-out', '--role', 'pull', '--out', ''], { cwd }), /^airlock: --out needs a value, not an empty one$/);
    assert.deepEqual(fs.readdirSync(cwd), []);
  });

  test('help prints the usage and exits 0', async () => {
    const r = await airlock(['help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /airlock cert issue --config FILE --name NAME --role pull\|audit\|admin/);
    for (const argv of [['serve', '--help'], ['cert', 'issue', '-h'], ['audit', 'verify', '--help']]) {
      const one = await airlock(argv);
      assert.equal(one.code, 0, one.stderr);
      assert.match(one.stdout, new RegExp(`^usage:\\n(  airlock ${argv[0]} .*\\n)+$`), argv.join(' '));
    }
    assert.equal((await airlock(['cert', 'issue', '--help'])).stdout, 'usage:\n  airlock cert issue --config FILE --name NAME --role pull|audit|admin [--days N] [--out DIR]\n');
    assert.equal((await airlock(['cert', '--help'])).stdout.split('\n').length, 4, 'cert --help: both cert commands');
    assertUserError(await airlock(['serve', '--bogus']), /^airlock: unknown option --bogus; run "airlock help" for the usage$/);
  });

  test('a command whose stdout reader went away (airlock help | true) exits as it would, without a stack trace', async () => {
    const child = spawn(process.execPath, ['--import', TSX, MAIN, 'help'], { cwd: REPO, env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    // The reading end closes before airlock writes anything: its write fails with EPIPE.
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });
});

describe('airlock serve', () => {
  test('serve --config listens where it says, answers a client with the admin bundle and stops with exit 0 on SIGTERM', async () => {
    const { proc, url, file } = await serveOn('serve-config');
    const out = proc.output();
    const admin = path.join(data, 'pki', 'clients', 'admin');
    assert.ok(out.includes(`admin client bundle: ${admin}/{ca.crt,client.cert,client.key,client.p12}`), out);
    assert.ok(out.includes(`config ${file}`));
    assert.match(out, /containerd: /);
    assert.match(out, /podman\/skopeo: \/etc\/containers\/registries\.conf\.d\/airlock\.conf, a \[\[registry\]\] per upstream, like prefix="docker\.io" location="127\.0\.0\.1:[0-9]+\/docker\.io"/);
    assert.match(out, /\n {2}warning: dockerd sends no client certificate to the loopback address 127\.0\.0\.1:[0-9]+ /);
    assert.doesNotMatch(out, /does not name the listen address/, 'the certificate names 127.0.0.1');
    // Every address the log names is the TLS one (Fastify, handed the server, would otherwise say http://).
    assert.match(out, /"msg":"Server listening at https:\/\/127\.0\.0\.1:[0-9]+"/);
    assert.doesNotMatch(out, /http:\/\//);
    const res = await registryRequest(
      { url, caPath: path.join(admin, 'ca.crt'), clientCertPath: path.join(admin, 'client.cert'), clientKeyPath: path.join(admin, 'client.key') },
      '/v2/',
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');

    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
  });

  test('serve whose stdout reader went away goes on serving, and stops with exit 0 on SIGTERM', async () => {
    const port = await freePort();
    const file = path.join(data, 'serve-closed-stdout.yaml');
    fs.writeFileSync(file, listenOn(`127.0.0.1:${port}`));
    const child = spawn(process.execPath, ['--import', TSX, MAIN, 'serve', '--config', file], { cwd: REPO, env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    // The reading end closes before airlock writes anything: every write to stdout fails with EPIPE.
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let running = true;
    void exited.then(() => (running = false));
    const admin = path.join(data, 'pki', 'clients', 'admin');
    const bundle = { url: `https://127.0.0.1:${port}`, caPath: path.join(admin, 'ca.crt'), clientCertPath: path.join(admin, 'client.cert'), clientKeyPath: path.join(admin, 'client.key') };
    try {
      await waitFor(
        async () => {
          if (!running) throw new StopWaiting(`serve exited:\n${stderr}`);
          return (await registryRequest(bundle, '/healthz').catch(() => null))?.status === 200;
        },
        { timeoutMs: 30_000, what: 'airlock serve with a closed stdout to answer /healthz' },
      );
    } finally {
      if (running) child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
    assert.equal(stderr, '');
  });

  test('serve on a data directory without an admin bundle (TLS files kept elsewhere) says how to issue one, not a path to nothing', async () => {
    const elsewhere = path.join(tmp, 'data-without-bundle');
    const { proc } = await serveOn('serve-no-bundle', (text) => {
      assert.match(text, /^dataDir: \.$/m);
      return `${text.replace(/^dataDir: \.$/m, `dataDir: ${elsewhere}`)}`;
    });
    const admin = path.join(elsewhere, 'pki', 'clients', 'admin');
    assert.ok(
      proc.output().includes(`admin client bundle: none at ${admin}; issue one with airlock cert issue --config ${path.join(data, 'serve-no-bundle.yaml')} --name admin --role admin --out ${admin}`),
      proc.output(),
    );
    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
  });

  test('serve stops with exit 0 on SIGTERM while another process holds the database write lock, its audit writer not cut mid-statement', async () => {
    const { proc, url } = await serveOn('serve-db-locked');
    const admin = path.join(data, 'pki', 'clients', 'admin');
    const holder = new Database(path.join(data, 'airlock.db'));
    holder.exec('BEGIN IMMEDIATE');
    try {
      // Its audit event waits for the lock in the writer thread's statement until the stop.
      const res = await registryRequest({ url, caPath: path.join(admin, 'ca.crt'), clientCertPath: path.join(admin, 'client.cert'), clientKeyPath: path.join(admin, 'client.key') }, '/v2/');
      assert.equal(res.status, 200);
      process.kill(proc.pid, 'SIGTERM');
      assert.equal(await exitWithin(proc, 30_000), 0, proc.output());
      assert.doesNotMatch(proc.output(), /FATAL ERROR/);
      // Not "retried": the events still queued end with the process, and the log says so last.
      assert.match(proc.output(), /"lost":1,"seq":"\d+-\d+","msg":"audit events not written before the stop \(the database refused them\): they are lost/);
    } finally {
      holder.exec('ROLLBACK');
      holder.close();
    }
  });

  test('certificates issued and revoked on the command line become audit events, chained by the server running then or started later', async () => {
    const issue = async (name: string): Promise<string> => {
      const r = await airlock(['cert', 'issue', '--config', configPath, '--name', name, '--role', 'pull', '--out', path.join(tmp, name)]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    const before = await issue('hank');
    const { proc, url } = await serveOn('serve-audit');
    const during = await issue('ivy');
    assert.equal((await airlock(['cert', 'revoke', '--config', configPath, '--serial', during, '--reason', 'test over'])).code, 0);
    const admin = path.join(data, 'pki', 'clients', 'admin');
    const bundle = { url, caPath: path.join(admin, 'ca.crt'), clientCertPath: path.join(admin, 'client.cert'), clientKeyPath: path.join(admin, 'client.key') };
    const exported = path.join(tmp, 'cli-audit.jsonl');
    type Line = { action?: string; reference?: string; actor?: string; reason?: string };
    let events: Line[] = [];
    const mine = (action: string, serial: string): Line[] => events.filter((e) => e.action === action && e.reference === serial);
    await waitFor(
      async () => {
        const r = await registryRequest(bundle, '/api/v1/audit?format=jsonl');
        fs.writeFileSync(exported, r.body);
        events = r.body.toString().trim().split('\n').map((l) => JSON.parse(l) as Line);
        return mine('admin.cert.revoke', during).length > 0;
      },
      { timeoutMs: 10_000, what: 'the revocation in the audit export' },
    );
    for (const [action, serial] of [['admin.cert.issue', before], ['admin.cert.issue', during], ['admin.cert.revoke', during]]) {
      const found = mine(action, serial);
      assert.equal(found.length, 1, `${action} ${serial} once`);
      assert.match(found[0].actor ?? '', /^local:/);
    }
    assert.equal(mine('admin.cert.revoke', during)[0].reason, 'test over');
    const verified = await airlock(['audit', 'verify', exported, '--key', path.join(data, 'keys', 'mirror.pub')]);
    assert.equal(verified.code, 0, verified.stderr);
    assertUserError(
      await airlock(['audit', 'verify', path.join(data, 'nope.jsonl'), '--key', path.join(data, 'keys', 'mirror.pub')]),
      /cannot read .*nope\.jsonl: no such file \(ENOENT\)$/,
    );
    assertUserError(await airlock(['audit', 'verify', exported, '--key', path.join(data, 'nope.pub')]), /--key .*nope\.pub: no such file \(ENOENT\)$/);
    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
    const db = openDatabase(data);
    try {
      assert.deepEqual(createAuditStore(db).queued(0), [], 'the chained events left the outbox');
    } finally {
      db.close();
    }
  });

  test('serve stops with exit 0 on SIGINT, its audit log ending with a checkpoint signed over the last event', async () => {
    const readAudit = () => {
      const db = openDatabase(data);
      try {
        const store = createAuditStore(db);
        return { last: store.last(), checkpoint: store.lastCheckpoint() };
      } finally {
        db.close();
      }
    };
    const before = readAudit().last?.seq ?? 0;
    const { proc, url } = await serveOn('serve-sigint');
    const admin = path.join(data, 'pki', 'clients', 'admin');
    const res = await registryRequest({ url, caPath: path.join(admin, 'ca.crt'), clientCertPath: path.join(admin, 'client.cert'), clientKeyPath: path.join(admin, 'client.key') }, '/v2/');
    assert.equal(res.status, 200);
    process.kill(proc.pid, 'SIGINT');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
    const { last, checkpoint } = readAudit();
    assert.ok(last && last.seq > before, 'this server recorded events');
    assert.ok(checkpoint, 'a checkpoint is stored');
    assert.deepEqual({ seq: checkpoint.seq, hash: checkpoint.hash }, { seq: last.seq, hash: last.hash }, 'the checkpoint covers the last event');
    const pub = crypto.createPublicKey(fs.readFileSync(path.join(data, 'keys', 'mirror.pub'), 'utf8'));
    const signed = Buffer.from(`airlock-audit-checkpoint:v1:${checkpoint.seq}:${checkpoint.hash}`, 'utf8');
    assert.ok(crypto.verify('sha256', signed, { key: pub, dsaEncoding: 'der' }, Buffer.from(checkpoint.signature, 'base64')), 'signed by the mirror key');
  });

  test('audit verify without --key checks with the mirror key of ./airlock.yaml, or of $AIRLOCK_CONFIG before it', async () => {
    const { proc, url } = await serveOn('serve-verify-default');
    const admin = path.join(data, 'pki', 'clients', 'admin');
    const exported = path.join(tmp, 'verify-default.jsonl');
    const r = await registryRequest({ url, caPath: path.join(admin, 'ca.crt'), clientCertPath: path.join(admin, 'client.cert'), clientKeyPath: path.join(admin, 'client.key') }, '/api/v1/audit?format=jsonl');
    assert.equal(r.status, 200);
    fs.writeFileSync(exported, r.body);
    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());

    // data holds the airlock.yaml that names this mirror's key.
    const here = await airlock(['audit', 'verify', exported], { cwd: data });
    assert.equal(here.code, 0, here.stderr);
    assert.match(here.stdout, /^audit log intact: /);
    // Another mirror's configuration names another key: the signed checkpoint does not verify with it.
    const other = path.join(tmp, 'other-mirror');
    assert.equal((await airlock(['init', '--dir', other, '--host', 'localhost'])).code, 0);
    const wrong = await airlock(['audit', 'verify', exported], { cwd: other });
    assert.equal(wrong.code, 1, `verified with the other mirror's key: ${wrong.stdout}${wrong.stderr}`);
    assert.match(wrong.stderr, /^audit log NOT intact at /);
    // $AIRLOCK_CONFIG is used where there is no ./airlock.yaml, and before one.
    const empty = path.join(tmp, 'no-config-here');
    fs.mkdirSync(empty);
    for (const cwd of [empty, other]) {
      const viaEnv = await airlock(['audit', 'verify', exported], { cwd, env: { ...ENV, AIRLOCK_CONFIG: configPath } });
      assert.equal(viaEnv.code, 0, `${cwd}: ${viaEnv.stderr}`);
      assert.match(viaEnv.stdout, /^audit log intact: /);
    }
    assertUserError(await airlock(['audit', 'verify', exported], { cwd: empty }), /--key is required when no local configuration names the mirror key/);
  });

  test('serve with an invalid configuration lists the problem on one line and does not start', async () => {
    const file = path.join(data, 'bad.yaml');
    fs.writeFileSync(file, `${fs.readFileSync(configPath, 'utf8')}\nlistn: 127.0.0.1:0\n`);
    const r = await airlock(['serve', '--config', file]);
    assertUserError(r, /has 1 problem: listn: unknown key/);
  });

  test('serve refuses TLS files and publisher keys it cannot use, naming each field', async () => {
    const junk = path.join(data, 'junk.pem');
    fs.writeFileSync(junk, 'not a PEM file\n');
    const file = path.join(data, 'bad-files.yaml');
    fs.writeFileSync(
      file,
      fs
        .readFileSync(configPath, 'utf8')
        .replace('key: pki/server.key', 'key: pki/ca.key')
        .replace('clientCa: pki/ca.crt', 'clientCa: junk.pem')
        .replace('publishers: []', 'publishers: [{ name: acme, key: junk.pem, repositories: [docker.io/acme/*] }]'),
    );
    const r = await airlock(['serve', '--config', file]);
    assertUserError(r, /has 3 problems: tls\.key: .*ca\.key is not the key of the certificate in .*server\.crt; tls\.clientCa: .*junk\.pem is not a PEM CA certificate; policy\.publishers\[0\]\.key: .*junk\.pem: /);
  });

  test('serve with an expired server certificate says so on one line and exits 2', async () => {
    const ca = { certPem: fs.readFileSync(path.join(data, 'pki', 'ca.crt'), 'utf8'), keyPem: fs.readFileSync(path.join(data, 'pki', 'ca.key'), 'utf8') };
    const expired = issueServerCertWithValidity(ca, ['127.0.0.1'], new Date(Date.now() - 30 * 86_400_000), new Date(Date.now() - 86_400_000));
    fs.writeFileSync(path.join(data, 'expired.crt'), expired.certPem);
    fs.writeFileSync(path.join(data, 'expired.key'), expired.keyPem, { mode: 0o600 });
    const file = path.join(data, 'expired.yaml');
    fs.writeFileSync(file, listenOn('127.0.0.1:0').replace('cert: pki/server.crt', 'cert: expired.crt').replace('key: pki/server.key', 'key: expired.key'));
    const r = await airlock(['serve', '--config', file]);
    assertUserError(r, /has 1 problem: tls\.cert: .*expired\.crt expired on [0-9-]+T[0-9:.]+Z; clients refuse it: renew it/);
    assert.equal(r.code, 2);
    // The commands that do not serve work on: a stolen certificate is revoked without waiting for a renewal.
    const out = path.join(data, 'clients', 'while-expired');
    const issued = await airlock(['cert', 'issue', '--config', file, '--name', 'while-expired', '--role', 'pull', '--out', out]);
    assert.equal(issued.code, 0, issued.stderr);
    const serial = new crypto.X509Certificate(fs.readFileSync(path.join(out, 'client.cert'))).serialNumber.toLowerCase();
    const revoked = await airlock(['cert', 'revoke', '--config', file, '--serial', serial, '--reason', 'stolen']);
    assert.equal(revoked.code, 0, revoked.stderr);
  });

  test('serve refuses a mirror key that is not ECDSA P-256 (an Ed25519 key imported with cosign)', async () => {
    const dir = path.join(tmp, 'ed25519-key');
    fs.mkdirSync(dir);
    const ed = crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' });
    fs.writeFileSync(path.join(dir, 'ed25519.pem'), ed);
    await runOk(cosign(), ['import-key-pair', '--key', 'ed25519.pem', '--output-key-prefix', 'imported'], { cwd: dir, env: { ...BASE_ENV, COSIGN_PASSWORD: KEY_PASSWORD }, timeoutMs: 60_000 });
    const file = path.join(data, 'ed25519.yaml');
    fs.writeFileSync(file, listenOn('127.0.0.1:0').replace('key: keys/mirror.key', `key: ${path.join(dir, 'imported.key')}`));
    assertUserError(await airlock(['serve', '--config', file]), /signing key .*imported\.key: the mirror key must be ECDSA P-256, not ed25519/);
  });

  test('serve with a mirror key it cannot decrypt says where the password was read from, and leaves the database unmigrated', async () => {
    const file = path.join(data, 'wrong-password.yaml');
    fs.writeFileSync(file, listenOn('127.0.0.1:0'));
    // As a build with one migration fewer left it: a start that fails must not migrate it, or that build could not go on.
    const version = (): number => {
      const db = new Database(path.join(data, 'airlock.db'));
      try {
        return db.pragma('user_version', { simple: true }) as number;
      } finally {
        db.close();
      }
    };
    const older = new Database(path.join(data, 'airlock.db'));
    older.pragma(`user_version = ${MIGRATIONS.length - 1}`);
    older.close();
    assertUserError(await airlock(['serve', '--config', file], { env: BASE_ENV }), /cannot decrypt signing key: wrong password or corrupt key \(the password is read from \$AIRLOCK_KEY_PASSWORD, which is not set: an empty password\)$/);
    assertUserError(await airlock(['serve', '--config', file], { env: { ...BASE_ENV, AIRLOCK_KEY_PASSWORD: 'not it' } }), /wrong password or corrupt key \(the password is read from \$AIRLOCK_KEY_PASSWORD\)$/);
    assert.equal(version(), MIGRATIONS.length - 1);
    openDatabase(data).close();
    assert.equal(version(), MIGRATIONS.length, 'migrated by the next start that gets that far');
  });

  test('serve on a database it cannot use (from a newer airlock, or not a database) is one line naming the file', async () => {
    const dir = path.join(tmp, 'bad-db');
    assert.equal((await airlock(['init', '--dir', dir, '--host', '127.0.0.1'])).code, 0);
    const file = path.join(dir, 'airlock.yaml');
    const dbFile = path.join(dir, 'airlock.db');
    const db = openDatabase(dir);
    db.pragma('user_version = 99');
    db.close();
    assertUserError(await airlock(['serve', '--config', file]), /database .*bad-db\/airlock\.db: schema version 99 is newer than this airlock's \([0-9]+\); upgrade airlock$/);
    for (const f of [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]) fs.rmSync(f, { force: true });
    fs.writeFileSync(dbFile, 'this is not a database, and it is long enough to have a header\n'.repeat(20));
    assertUserError(await airlock(['serve', '--config', file]), /database .*bad-db\/airlock\.db: file is not a database$/);
  });

  test('serve on a port below 1024 without the right to it, or on an address no socket can take, is one line saying why', async () => {
    const file = path.join(data, 'privileged.yaml');
    fs.writeFileSync(file, listenOn('127.0.0.1:1'));
    // As root, the process runs without CAP_NET_BIND_SERVICE (and keeps reading the files as root).
    const root = process.getuid?.() === 0;
    const cmd = root ? ['/usr/bin/setpriv', '--bounding-set=-net_bind_service', '--inh-caps=-net_bind_service', process.execPath] : [process.execPath];
    const r = await run(cmd[0], [...cmd.slice(1), '--import', TSX, MAIN, 'serve', '--config', file], { cwd: REPO, env: ENV, timeoutMs: 60_000 });
    assertUserError(r, /^airlock: listen 127\.0\.0\.1:1: permission denied \(EACCES\): a port below 1024 needs root or the CAP_NET_BIND_SERVICE capability$/);
    const linkLocal = path.join(data, 'link-local.yaml');
    fs.writeFileSync(linkLocal, listenOn('"[fe80::1]:5443"'));
    assertUserError(await airlock(['serve', '--config', linkLocal]), /^airlock: listen \[fe80::1\]:5443: (not an address this machine can listen on \(EINVAL\)|no interface of this machine has that address)$/);
  });

  test('a mirror key not named *.key: the banner names no file as its public key, and audit verify asks for --key', async () => {
    fs.copyFileSync(path.join(data, 'keys', 'mirror.key'), path.join(data, 'keys', 'mirror.pem'));
    const pem = (text: string): string => {
      assert.ok(text.includes('key: keys/mirror.key'), text);
      return text.replace('key: keys/mirror.key', 'key: keys/mirror.pem');
    };
    const { proc, url, file } = await serveOn('serve-pem-key', pem);
    await waitFor(() => proc.output().includes('quick check:'), { timeoutMs: 30_000, what: 'the banner' });
    assert.ok(proc.output().includes(`mirror public key:   GET ${url}/api/v1/signing-key\n`), proc.output());
    assert.doesNotMatch(proc.output(), /mirror public key: +\/.*mirror\.pem/);
    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
    const exported = path.join(tmp, 'pem-key-audit.jsonl');
    fs.writeFileSync(exported, '{}\n');
    assertUserError(
      await airlock(['audit', 'verify', exported], { env: { ...ENV, AIRLOCK_CONFIG: file } }),
      /^airlock: --key is required: the mirror key .*mirror\.pem is not named \*\.key, so its \.pub is not known$/,
    );
  });

  test('serve on an address already in use is one line, and exits', async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      const file = path.join(data, 'busy.yaml');
      fs.writeFileSync(file, listenOn(`127.0.0.1:${port}`));
      // As if another airlock were running on this data directory: its download under way must survive.
      const inProgress = path.join(data, 'blobs', 'tmp', 'download-under-way');
      fs.mkdirSync(path.dirname(inProgress), { recursive: true });
      fs.writeFileSync(inProgress, 'half a blob');
      assertUserError(await airlock(['serve', '--config', file]), new RegExp(`listen 127\\.0\\.0\\.1:${port}: the address is already in use`));
      assert.ok(fs.existsSync(inProgress), 'a serve that cannot listen changes nothing in the data directory');
      fs.rmSync(inProgress);
    } finally {
      await new Promise<void>((resolve) => busy.close(() => resolve()));
    }
  });

  test('a second serve, or an init --force, on a data directory a running server holds is refused and changes nothing', async () => {
    const { proc } = await serveOn('holder');
    const inProgress = path.join(data, 'blobs', 'tmp', 'download-under-way');
    fs.writeFileSync(inProgress, 'half a blob');
    const caBefore = fs.readFileSync(path.join(data, 'pki', 'ca.crt'), 'utf8');
    try {
      const second = path.join(data, 'second.yaml');
      fs.writeFileSync(second, listenOn('127.0.0.1:0'));
      const locked = /data directory .*\/data is in use by another running airlock serve \(.*airlock\.lock is locked\); stop it first$/;
      assertUserError(await airlock(['serve', '--config', second]), locked);
      assertUserError(await airlock(['init', '--dir', data, '--force', '--host', '127.0.0.1']), locked);
      assert.ok(fs.existsSync(inProgress), "the running server's download under way is left alone");
      assert.ok(!fs.existsSync(path.join(data, 'airlock.lock-journal')), 'the lock writes no journal');
      assert.equal(fs.readFileSync(path.join(data, 'pki', 'ca.crt'), 'utf8'), caBefore, 'the CA is not replaced under a running server');
      // CLI commands that share the database with a running server still work.
      const issued = await airlock(['cert', 'issue', '--config', configPath, '--name', 'while-serving', '--role', 'pull', '--out', path.join(tmp, 'while-serving')]);
      assert.equal(issued.code, 0, issued.stderr);
    } finally {
      process.kill(proc.pid, 'SIGTERM');
      assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
    }
    // The stopped server let go of the directory: the next one starts, and clears the unfinished download.
    const { proc: next } = await serveOn('after-holder');
    assert.ok(!fs.existsSync(inProgress), 'the next server removed the download the stopped one left');
    process.kill(next.pid, 'SIGTERM');
    assert.equal(await exitWithin(next, 15_000), 0, next.output());
  });

  test('serve on an address its certificate does not name warns that the addresses it prints may not reach it, and how to fix that', async () => {
    // The test certificate names a.example and 127.0.0.1: the commands printed would use a.example.
    const file = path.join(data, 'unnamed-listen.yaml');
    fs.writeFileSync(file, listenOn('127.0.0.2:0'));
    const proc = startAirlockProcess('unnamed-listen', ['serve', '--config', file]);
    await waitFor(
      () => {
        if (!proc.running()) throw new StopWaiting(`serve exited:\n${proc.output()}`);
        return /quick check: /.test(proc.output());
      },
      { timeoutMs: 30_000, what: 'airlock serve on 127.0.0.2 to print its banner' },
    );
    const out = proc.output();
    assert.match(out, /airlock listening on https:\/\/127\.0\.0\.2:[0-9]+ .*\n {2}warning: the server certificate does not name the listen address 127\.0\.0\.2, so the addresses below are a\.example:[0-9]+, which may not reach 127\.0\.0\.2:[0-9]+: set publicUrl to the address clients use, or reissue the server certificate with 127\.0\.0\.2 among its names\n/);
    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
  });

  test('serve with no upstreams configured says so in its banner and stops with exit 0 on SIGTERM', async () => {
    const { proc } = await serveOn('serve-no-upstreams', (text) => text.replace(/^upstreams:\n(?:  .*\n)+/m, '').replace(/^defaultUpstream: .*\n/m, ''));
    assert.match(proc.output(), /containerd: no upstream is configured; add one under upstreams in /);
    assert.match(proc.output(), /podman\/skopeo: no upstream is configured; add one under upstreams in /);
    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
  });

  test('serve uses $AIRLOCK_CONFIG when --config is absent', async () => {
    const r = await airlock(['serve'], { cwd: tmp, env: { ...ENV, AIRLOCK_CONFIG: path.join(tmp, 'missing-from-env.yaml') } });
    assertUserError(r, /cannot read config .*missing-from-env\.yaml: no such file \(ENOENT\)/);
    assert.ok(!fs.existsSync(path.join(tmp, 'airlock-data')), 'no data directory is initialised when a config is named');
  });

  test('serve with no configuration and a file named airlock-data says so, without advising init --force', async () => {
    const cwd = path.join(tmp, 'cwd-with-a-file');
    fs.mkdirSync(cwd);
    fs.writeFileSync(path.join(cwd, 'airlock-data'), 'keep me');
    const r = await airlock(['serve'], { cwd });
    assertUserError(r, /^airlock: no configuration found, and \.\/airlock-data cannot be initialised: data directory .*airlock-data: a file, not a directory$/);
    assert.equal(fs.readFileSync(path.join(cwd, 'airlock-data'), 'utf8'), 'keep me');
  });

  test('serve with no configuration anywhere initialises ./airlock-data, says so, and stops with exit 0 on SIGTERM', async () => {
    // A busy port fails the test rather than skip it, so the check is never silently left out (on CI, say).
    if (!(await portFree(5443))) assert.fail('127.0.0.1:5443, the default listen address, is held by another process on this machine: free the port to run this test');
    const cwd = path.join(tmp, 'empty-cwd');
    fs.mkdirSync(cwd);
    const proc = startAirlockProcess('serve-default', ['serve'], { cwd });
    await waitFor(
      () => {
        if (!proc.running()) throw new StopWaiting(`serve exited:\n${proc.output()}`);
        return proc.output().includes('admin client bundle:');
      },
      { timeoutMs: 30_000, what: 'airlock serve to initialise and listen' },
    );
    const out = proc.output();
    const dir = path.join(cwd, 'airlock-data');
    assert.ok(out.includes(`no configuration found: initialised ${dir}`), out);
    assert.ok(out.includes(`admin client bundle: ${path.join(dir, 'pki', 'clients', 'admin')}/{ca.crt,client.cert,client.key,client.p12}`), out);
    assert.match(out, /airlock listening on https:\/\/127\.0\.0\.1:5443 /);
    for (const f of ['airlock.yaml', 'airlock.db', 'pki/ca.crt', 'pki/clients/admin/client.p12', 'keys/mirror.key']) assert.ok(fs.existsSync(path.join(dir, f)), f);
    process.kill(proc.pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 15_000), 0, proc.output());
  });

  test('as PID 1 (a container), a SIGTERM while serve is starting stops it once started, not ignored', async () => {
    if (!(await portFree(5443))) assert.fail('127.0.0.1:5443, the default listen address, is held by another process on this machine: free the port to run this test');
    const cwd = path.join(tmp, 'pid-one-cwd');
    fs.mkdirSync(cwd);
    // In a PID namespace of its own airlock is PID 1, to which the kernel sends no signal its handlers do not take.
    const proc = startProcess('unshare', ['--pid', '--fork', '--kill-child', process.execPath, '--import', TSX, MAIN, 'serve'], { name: 'serve-pid-one', cwd, env: ENV, logDir: tmp });
    let pid = 0;
    await waitFor(
      () => {
        if (!proc.running()) throw new StopWaiting(`serve exited:\n${proc.output()}`);
        // The first words serve writes, before it starts: a signal now reaches it while it starts.
        if (!proc.output().includes('no configuration found: initialised')) return false;
        pid = Number(fs.readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim().split(' ')[0]);
        return pid > 0;
      },
      { timeoutMs: 30_000, what: 'airlock serve to initialise its data directory' },
    );
    process.kill(pid, 'SIGTERM');
    assert.equal(await exitWithin(proc, 20_000), 0, proc.output());
    assert.match(proc.output(), /"signal":"SIGTERM".*"msg":"stopping: finishing downloads in flight"/);
  });
});
