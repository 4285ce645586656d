import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { TLSSocket, type PeerCertificate } from 'node:tls';
import {
  clientTrust,
  createCa,
  issueClientCert,
  issueClientCertWithValidity,
  issueServerCert,
  normalizeSerial,
  pemCertificates,
  toPkcs12,
  writeClientBundle,
  type CertKeyPair,
  type IssuedClientCert,
  type Role,
} from '../server/pki/ca.js';
import { identityFromPeer, type Identity } from '../server/pki/identity.js';

const DAY_MS = 24 * 60 * 60 * 1000;

let tmp: string;
let ca: CertKeyPair;
let otherCa: CertKeyPair;
let server: CertKeyPair;
let client: IssuedClientCert;
let caFile: string;
let serverFile: string;
let clientDir: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-pki-'));
  ca = createCa();
  otherCa = createCa('some other CA');
  server = issueServerCert(ca, ['localhost', '127.0.0.1', '::1']);
  client = issueClientCert(ca, 'alice@ci_1', 'pull');
  caFile = path.join(tmp, 'ca.crt');
  serverFile = path.join(tmp, 'server.crt');
  fs.writeFileSync(caFile, ca.certPem);
  fs.writeFileSync(serverFile, server.certPem);
  clientDir = path.join(tmp, 'clients', 'alice');
  writeClientBundle(clientDir, client, ca.certPem, 'PW');
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function openssl(...args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function x509Text(file: string): string {
  return openssl('x509', '-in', file, '-noout', '-text', '-nameopt', 'RFC2253');
}

test('openssl verifies the client certificate and the server certificate against the CA, each for its purpose', () => {
  const clientCert = path.join(clientDir, 'client.cert');
  assert.match(openssl('verify', '-CAfile', caFile, '-purpose', 'sslclient', clientCert), /: OK/);
  assert.match(openssl('verify', '-CAfile', caFile, '-purpose', 'sslserver', serverFile), /: OK/);
});

test('openssl refuses a client certificate against a CA that did not issue it', () => {
  const otherFile = path.join(tmp, 'other-ca.crt');
  fs.writeFileSync(otherFile, otherCa.certPem);
  const result = spawnSync('openssl', ['verify', '-CAfile', otherFile, path.join(clientDir, 'client.cert')], {
    encoding: 'utf8',
  });
  assert.notEqual(result.status, 0);
});

test('the CA certificate is a critical CA:TRUE that may sign certificates and CRLs', () => {
  const text = x509Text(caFile);
  assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE/);
  assert.match(text, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
  assert.match(text, /X509v3 Subject Key Identifier/);
  assert.match(text, /Signature Algorithm: sha256WithRSAEncryption/);
  assert.match(text, /Subject: O=airlock,CN=airlock CA/);
});

test('the server certificate names its hosts as IP and DNS SANs and is only for serverAuth', () => {
  const text = x509Text(serverFile);
  assert.match(text, /DNS:localhost/);
  assert.match(text, /IP Address:127\.0\.0\.1/);
  assert.match(text, /IP Address:0:0:0:0:0:0:0:1/);
  assert.match(text, /X509v3 Extended Key Usage:\s+TLS Web Server Authentication\n/);
  assert.match(text, /X509v3 Authority Key Identifier/);
  assert.match(text, /Subject: O=airlock,CN=localhost/);
  const x509 = new crypto.X509Certificate(server.certPem);
  assert.equal(x509.checkHost('localhost'), 'localhost');
  assert.equal(x509.checkIP('127.0.0.1'), '127.0.0.1');
  assert.equal(x509.checkIP('::1'), '::1');
  assert.equal(x509.checkIssued(new crypto.X509Certificate(ca.certPem)), true);
});

test('the client certificate carries the name in CN, the role in OU and is only for clientAuth', () => {
  const text = x509Text(path.join(clientDir, 'client.cert'));
  assert.match(text, /Subject: O=airlock,OU=pull,CN=alice@ci_1/);
  assert.match(text, /X509v3 Extended Key Usage:\s+TLS Web Client Authentication\n/);
  assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  assert.match(text, /Signature Algorithm: sha256WithRSAEncryption/);
});

test('a client certificate issued for N days expires N days from now', () => {
  const issued = issueClientCert(ca, 'shortlived', 'audit', 7);
  const x509 = new crypto.X509Certificate(issued.certPem);
  const notAfter = new Date(x509.validTo).getTime();
  assert.ok(Math.abs(notAfter - (Date.now() + 7 * DAY_MS)) < 60_000);
  assert.ok(new Date(x509.validFrom).getTime() <= Date.now());
});

test('no certificate outlives the CA that issued it', () => {
  const caEnd = new Date(new crypto.X509Certificate(ca.certPem).validTo).getTime();
  for (const pem of [issueClientCert(ca, 'longlived', 'pull', 3650).certPem, issueServerCert(ca, ['localhost'], 3650).certPem]) {
    assert.ok(new Date(new crypto.X509Certificate(pem).validTo).getTime() <= caEnd);
  }
});

test('serials are random, distinct, positive, about 128 bits and match what node:crypto reads', () => {
  const issued = [client, ...Array.from({ length: 5 }, (_, i) => issueClientCert(ca, `user${i}`, 'pull'))];
  const serials = issued.map((c) => c.serial);
  assert.equal(new Set(serials).size, serials.length);
  for (const c of issued) {
    assert.match(c.serial, /^[1-9a-f][0-9a-f]*$/);
    assert.ok(c.serial.length >= 26 && c.serial.length <= 32, `serial ${c.serial} is not about 128 bits`);
    // 32 hex digits means the top byte is set; it must still be below 0x80 to be a positive INTEGER.
    if (c.serial.length === 32) assert.ok(parseInt(c.serial[0], 16) < 8);
    const fromNode = new crypto.X509Certificate(c.certPem).serialNumber;
    assert.equal(normalizeSerial(fromNode), c.serial);
  }
});

test('normalizeSerial accepts upper case, 0x, colons and leading zeros and rejects anything not hex', () => {
  assert.equal(normalizeSerial('0A:35:5A'), 'a355a');
  assert.equal(normalizeSerial('0x00FF'), 'ff');
  assert.equal(normalizeSerial(' 00ab '), 'ab');
  assert.equal(normalizeSerial('000'), '0');
  assert.throws(() => normalizeSerial(''), /serial must be hexadecimal/);
  assert.throws(() => normalizeSerial('0x'), /serial must be hexadecimal/);
  assert.throws(() => normalizeSerial('12g4'), /serial must be hexadecimal/);
  assert.throws(() => normalizeSerial('-12'), /serial must be hexadecimal/);
});

test('the client bundle has the certs.d layout and keeps the key and the PKCS#12 private', () => {
  const names = fs.readdirSync(clientDir).sort();
  assert.deepEqual(names, ['ca.crt', 'client.cert', 'client.key', 'client.p12']);
  assert.equal(fs.statSync(path.join(clientDir, 'client.key')).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.join(clientDir, 'client.p12')).mode & 0o777, 0o600);
  assert.equal(fs.readFileSync(path.join(clientDir, 'ca.crt'), 'utf8'), ca.certPem);
  const key = crypto.createPrivateKey(fs.readFileSync(path.join(clientDir, 'client.key')));
  assert.equal(new crypto.X509Certificate(client.certPem).checkPrivateKey(key), true);
});

test('rewriting a bundle over loosened files makes the key private again', () => {
  const dir = path.join(tmp, 'rewrite');
  writeClientBundle(dir, client, ca.certPem, '');
  fs.chmodSync(path.join(dir, 'client.key'), 0o644);
  const bundle = writeClientBundle(dir, client, ca.certPem, '');
  assert.equal(bundle.files.length, 4);
  assert.equal(fs.statSync(path.join(dir, 'client.key')).mode & 0o777, 0o600);
});

test('a bundle is written neither through a link nor into a file or folder someone else made', () => {
  const dir = path.join(tmp, 'planted');
  fs.mkdirSync(dir, { mode: 0o700 });
  const victim = path.join(tmp, 'victim.yaml');
  fs.writeFileSync(victim, 'keep me\n');
  fs.symlinkSync(victim, path.join(dir, 'client.cert'));
  const planted = path.join(dir, 'client.p12');
  fs.writeFileSync(planted, 'theirs');
  fs.chmodSync(planted, 0o666);
  const root = process.getuid?.() === 0;
  if (root) fs.chownSync(planted, 1234, 1234);
  writeClientBundle(dir, client, ca.certPem, '');
  assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me\n', 'the link was replaced, not followed');
  assert.ok(fs.lstatSync(path.join(dir, 'client.cert')).isFile());
  const p12 = fs.statSync(planted);
  assert.equal(p12.mode & 0o777, 0o600);
  assert.equal(p12.uid, process.getuid?.(), 'the planted file was replaced by a file of our own');

  const open = path.join(tmp, 'open');
  fs.mkdirSync(open);
  fs.chmodSync(open, 0o777);
  assert.throws(() => writeClientBundle(open, client, ca.certPem, ''), /open must be a folder of your own that no one else can write to/);
  fs.symlinkSync(dir, path.join(tmp, 'link-to-folder'));
  assert.throws(() => writeClientBundle(path.join(tmp, 'link-to-folder'), client, ca.certPem, ''), /is not a folder \(a link to one is refused too\)/);
  if (root) {
    const theirs = path.join(tmp, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o700 });
    fs.chownSync(theirs, 1234, 1234);
    assert.throws(() => writeClientBundle(theirs, client, ca.certPem, ''), /theirs must be a folder of your own/);
  }
  assert.deepEqual(fs.readdirSync(open), []);
});

test('the PKCS#12 opens in OpenSSL 3 without -legacy and holds the client certificate, the CA and the key', () => {
  const p12 = path.join(clientDir, 'client.p12');
  const certs = openssl('pkcs12', '-in', p12, '-passin', 'pass:PW', '-nokeys');
  assert.equal(certs.match(/-----BEGIN CERTIFICATE-----/g)?.length, 2);
  assert.match(certs, /friendlyName: alice@ci_1/);
  assert.match(certs, /subject=.*CN\s?=\s?airlock CA/);
  const keys = openssl('pkcs12', '-in', p12, '-passin', 'pass:PW', '-nocerts', '-nodes');
  assert.match(keys, /-----BEGIN PRIVATE KEY-----/);
  const info = spawnSync('openssl', ['pkcs12', '-in', p12, '-passin', 'pass:PW', '-info', '-noout'], {
    encoding: 'utf8',
  });
  assert.equal(info.status, 0);
  assert.match(info.stderr, /pbeWithSHA1And3-KeyTripleDES-CBC/);
});

test("clientTrust holds each tls.clientCa certificate once, in order, and the server certificate's issuer from its chain", () => {
  const fp = (pem: string): string[] => pemCertificates(pem).map((c) => new crypto.X509Certificate(c).fingerprint256);
  // A server certificate from the CA already listed adds nothing; a file listed twice or holding two CAs counts once each.
  assert.deepEqual(fp(clientTrust([otherCa.certPem + ca.certPem, ca.certPem], server.certPem)), fp(otherCa.certPem + ca.certPem));
  // One from a CA clientCa does not list is trusted through the issuer its tls.cert file carries after it.
  const elsewhere = issueServerCert(otherCa, ['localhost']);
  assert.deepEqual(fp(clientTrust([ca.certPem], elsewhere.certPem + otherCa.certPem)), fp(ca.certPem + otherCa.certPem));
  assert.deepEqual(fp(clientTrust([ca.certPem], elsewhere.certPem)), fp(ca.certPem));
});

test('the PKCS#12 refuses a wrong password', () => {
  const result = spawnSync(
    'openssl',
    ['pkcs12', '-in', path.join(clientDir, 'client.p12'), '-passin', 'pass:wrong', '-nokeys'],
    { encoding: 'utf8' },
  );
  assert.notEqual(result.status, 0);
});

test('a PKCS#12 with an empty password opens with an empty password', () => {
  const p12 = path.join(tmp, 'empty.p12');
  fs.writeFileSync(p12, toPkcs12(client, ca.certPem, '', 'browser'));
  const out = openssl('pkcs12', '-in', p12, '-passin', 'pass:', '-nodes');
  assert.equal(out.match(/-----BEGIN CERTIFICATE-----/g)?.length, 2);
  assert.match(out, /-----BEGIN PRIVATE KEY-----/);
  assert.match(out, /friendlyName: browser/);
});

test('bad client names are refused with a clear error', () => {
  for (const name of ['', '-alice', '.alice', 'al ice', 'alice/bob', 'a'.repeat(65), 'élan', 'a,OU=admin']) {
    assert.throws(() => issueClientCert(ca, name, 'pull'), /client name must be 1 to 64 characters/, name);
  }
  assert.doesNotThrow(() => issueClientCert(ca, 'a'.repeat(64), 'pull', 1));
});

test('an unknown role is refused with a clear error', () => {
  assert.throws(() => issueClientCert(ca, 'bob', 'root' as Role), /role must be one of pull, audit, admin, got "root"/);
});

test('days outside 1 to 3650 or not whole are refused with a clear error', () => {
  for (const days of [0, -1, 3651, 1.5, Number.NaN]) {
    assert.throws(() => issueClientCert(ca, 'bob', 'pull', days), /days must be a whole number from 1 to 3650/);
  }
  assert.throws(() => createCa('x', 0), /days must be a whole number from 1 to 3650/);
  assert.throws(() => issueServerCert(ca, ['localhost'], 5000), /days must be a whole number from 1 to 3650/);
});

test('explicit validity must end after it starts', () => {
  const now = new Date();
  assert.throws(() => issueClientCertWithValidity(ca, 'bob', 'pull', now, now), /notAfter must be later than notBefore/);
});

test('a server certificate needs a host, and each host must be an IP address or a DNS name', () => {
  assert.throws(() => issueServerCert(ca, []), /at least one non-empty host/);
  assert.throws(() => issueServerCert(ca, ['']), /at least one non-empty host/);
  assert.throws(() => issueServerCert(ca, ['bad host']), /neither an IP address nor a DNS name/);
});

test('issuing refuses a CA key that does not belong to the CA certificate', () => {
  const mixed = { certPem: ca.certPem, keyPem: otherCa.keyPem };
  assert.throws(() => issueClientCert(mixed, 'bob', 'pull'), /CA key does not match the CA certificate/);
});

test('issuing refuses a certificate that is not a CA', () => {
  assert.throws(() => issueClientCert(server, 'bob', 'pull'), /not a certificate authority/);
});

test('identityFromPeer returns null when the peer sent no certificate', () => {
  assert.equal(identityFromPeer(undefined), null);
  assert.equal(identityFromPeer({} as PeerCertificate), null);
});

// A real HTTPS listener with mutual TLS, configured the way airlock's listener is.
interface MtlsServer {
  port: number;
  // Reasons the server gave for refused handshakes: socket.authorizationError, else the error code.
  refusals: string[];
  close(): Promise<void>;
}

type Outcome =
  | { accepted: true; identity: Identity | null; peer: PeerCertificate }
  | { accepted: false; clientError: string; serverReason: string };

let mtls: MtlsServer;
let lastPeer: PeerCertificate | undefined;

async function startMtlsServer(): Promise<MtlsServer> {
  const refusals: string[] = [];
  const srv = https.createServer(
    { cert: server.certPem, key: server.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const socket = req.socket;
      const peer = socket instanceof TLSSocket ? socket.getPeerCertificate() : undefined;
      lastPeer = peer;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(identityFromPeer(peer)));
    },
  );
  srv.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    // Node stores the verification failure as a code string here, although its typings say Error.
    const reason: unknown = socket.authorizationError;
    refusals.push(typeof reason === 'string' ? reason : (err.code ?? err.message));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  return {
    port,
    refusals,
    close: () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => resolve());
      }),
  };
}

function waitForRefusal(srvCount: number, deadlineMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + deadlineMs;
    const check = (): void => {
      if (mtls.refusals.length > srvCount) {
        resolve(mtls.refusals[srvCount]);
      } else if (Date.now() > deadline) {
        reject(new Error('the server never reported the refused handshake'));
      } else {
        setTimeout(check, 5);
      }
    };
    check();
  });
}

async function connect(pair: CertKeyPair | undefined): Promise<Outcome> {
  const before = mtls.refusals.length;
  const clientResult = await new Promise<{ body: string } | { error: NodeJS.ErrnoException }>((resolve) => {
    const req = https.get(
      {
        host: '127.0.0.1',
        port: mtls.port,
        path: '/',
        ca: ca.certPem,
        agent: false,
        ...(pair === undefined ? {} : { cert: pair.certPem, key: pair.keyPem }),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ body }));
        res.on('error', (error: NodeJS.ErrnoException) => resolve({ error }));
      },
    );
    req.on('error', (error: NodeJS.ErrnoException) => resolve({ error }));
  });
  if ('body' in clientResult) {
    const identity = JSON.parse(clientResult.body) as Identity | null;
    assert.ok(lastPeer !== undefined);
    return { accepted: true, identity, peer: lastPeer };
  }
  const serverReason = await waitForRefusal(before, 5000);
  return { accepted: false, clientError: clientResult.error.code ?? clientResult.error.message, serverReason };
}

test('mutual TLS accepts a client certificate from the CA and yields its name, serial and role', async () => {
  mtls = await startMtlsServer();
  try {
    const outcome = await connect(client);
    assert.ok(outcome.accepted);
    // notAfter is the certificate's expiry in milliseconds, for the checks on connections that outlive it.
    const notAfter = (pem: string): number => Date.parse(new crypto.X509Certificate(pem).validTo);
    assert.deepEqual(outcome.identity, { cn: 'alice@ci_1', serial: client.serial, role: 'pull', notAfter: notAfter(client.certPem) });

    const admin = issueClientCert(ca, 'root-operator', 'admin');
    const adminOutcome = await connect(admin);
    assert.ok(adminOutcome.accepted);
    assert.deepEqual(adminOutcome.identity, { cn: 'root-operator', serial: admin.serial, role: 'admin', notAfter: notAfter(admin.certPem) });
  } finally {
    await mtls.close();
  }
});

test('identityFromPeer gives a null role when the OU of a verified certificate is not a role', async () => {
  mtls = await startMtlsServer();
  try {
    const outcome = await connect(client);
    assert.ok(outcome.accepted);
    const peer = outcome.peer;
    assert.deepEqual(identityFromPeer({ ...peer, subject: { ...peer.subject, OU: 'root' } }), {
      cn: 'alice@ci_1',
      serial: client.serial,
      role: null,
      notAfter: Date.parse(peer.valid_to),
    });
  } finally {
    await mtls.close();
  }
});

test('mutual TLS refuses a client certificate from another CA', async () => {
  mtls = await startMtlsServer();
  try {
    const stranger = issueClientCert(otherCa, 'mallory', 'admin');
    const outcome = await connect(stranger);
    assert.ok(!outcome.accepted);
    assert.equal(outcome.serverReason, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  } finally {
    await mtls.close();
  }
});

test('mutual TLS refuses an expired client certificate from the CA', async () => {
  mtls = await startMtlsServer();
  try {
    const now = Date.now();
    const expired = issueClientCertWithValidity(ca, 'old', 'pull', new Date(now - 10 * DAY_MS), new Date(now - DAY_MS));
    const outcome = await connect(expired);
    assert.ok(!outcome.accepted);
    assert.equal(outcome.serverReason, 'CERT_HAS_EXPIRED');
  } finally {
    await mtls.close();
  }
});

test('mutual TLS refuses a client that presents no certificate', async () => {
  mtls = await startMtlsServer();
  try {
    const outcome = await connect(undefined);
    assert.ok(!outcome.accepted);
    assert.equal(outcome.serverReason, 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
    assert.equal(outcome.clientError, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
  } finally {
    await mtls.close();
  }
});
