// Renewing the CA without cutting anyone off (docs/operator-guide.md, "The CA"): with the new CA listed before the old
// one in tls.clientCa, bundles issued then trust both CAs, so they and the old bundles given the combined ca.crt reach
// the server over real mutual TLS before and after its certificate switches to the new CA.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import YAML from 'yaml';
import { loadConfigFile } from '../server/config.js';
import { initDataDir } from '../server/init.js';
import { type CertKeyPair, createCa, issueServerCert, pemCertificates, writeWithMode } from '../server/pki/ca.js';
import { type Airlock, startAirlock } from '../server/runtime.js';
import { run } from './harness/proc.js';
import { registryRequest, type RegistryEndpoint } from './harness/registry.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MAIN = path.join(REPO, 'server', 'main.ts');
const TSX = import.meta.resolve('tsx');
const KEY_PASSWORD = 'ca-renewal-key-password';
const ENV = { ...process.env, AIRLOCK_KEY_PASSWORD: KEY_PASSWORD, AIRLOCK_P12_PASSWORD: '' };

let tmp: string;
let data: string;
let pki: string;
let configPath: string;
let oldCaPem: string;
let newCa: CertKeyPair;
let airlock: Airlock | undefined;

// bundle is a client bundle folder as an endpoint of the running server.
function bundle(dir: string, ca = path.join(dir, 'ca.crt')): RegistryEndpoint {
  return { url: airlock?.url ?? '', caPath: ca, clientCertPath: path.join(dir, 'client.cert'), clientKeyPath: path.join(dir, 'client.key') };
}

function fingerprints(pem: string): string[] {
  return pemCertificates(pem).map((c) => new crypto.X509Certificate(c).fingerprint256);
}

async function start(): Promise<void> {
  const logger = pino({ level: 'info' }, pino.destination({ dest: path.join(tmp, 'airlock.log'), sync: true, append: true }));
  airlock = await startAirlock(loadConfigFile(configPath, ENV), { logger });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-ca-renewal-'));
  data = path.join(tmp, 'data');
  pki = path.join(data, 'pki');
  initDataDir({ dir: data, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: KEY_PASSWORD, p12Password: '' });
  oldCaPem = fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8');
  // Step 1 of the renewal: the new CA issues from now on (its key is pki/ca.key) and is listed first; the old CA stays
  // listed after it, and the server keeps its certificate from the old CA.
  newCa = createCa('airlock CA 2');
  fs.renameSync(path.join(pki, 'ca.key'), path.join(pki, 'ca-old.key'));
  writeWithMode(path.join(pki, 'ca.key'), newCa.keyPem, 0o600);
  fs.writeFileSync(path.join(pki, 'ca-new.crt'), newCa.certPem);
  configPath = path.join(data, 'airlock.yaml');
  const doc = YAML.parse(fs.readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  doc.listen = '127.0.0.1:0';
  doc.upstreams = [];
  delete doc.defaultUpstream;
  doc.tls = { cert: 'pki/server.crt', key: 'pki/server.key', clientCa: ['pki/ca-new.crt', 'pki/ca.crt'] };
  fs.writeFileSync(configPath, YAML.stringify(doc));
  await start();
});

after(async () => {
  await airlock?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('renewing the CA', () => {
  const admin = (): string => path.join(pki, 'clients', 'admin');
  const overlap = (): string => path.join(tmp, 'overlap');
  const cliOverlap = (): string => path.join(tmp, 'cli-overlap');

  test('a bundle issued through the API while both CAs are listed trusts both, and reaches the server still on the old certificate', async () => {
    const res = await registryRequest(bundle(admin()), '/api/v1/certs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'overlap', role: 'pull' }),
    });
    assert.equal(res.status, 201, res.body.toString());
    const issued = JSON.parse(res.body.toString()) as { certificate: string; privateKey: string; ca: string };
    assert.deepEqual(fingerprints(issued.ca), fingerprints(newCa.certPem + oldCaPem), 'the new CA, then the old one');
    fs.mkdirSync(overlap(), { mode: 0o700 });
    fs.writeFileSync(path.join(overlap(), 'ca.crt'), issued.ca);
    fs.writeFileSync(path.join(overlap(), 'client.cert'), issued.certificate);
    fs.writeFileSync(path.join(overlap(), 'client.key'), issued.privateKey, { mode: 0o600 });
    assert.ok(new crypto.X509Certificate(issued.certificate).verify(new crypto.X509Certificate(newCa.certPem).publicKey), 'issued by the new CA');
    assert.equal((await registryRequest(bundle(overlap()), '/v2/')).status, 200);
  });

  test('a bundle issued with cert issue while both CAs are listed has both in ca.crt and client.p12, and reaches the server', async () => {
    const r = await run(process.execPath, ['--import', TSX, MAIN, 'cert', 'issue', '--config', configPath, '--name', 'cli-overlap', '--role', 'pull', '--out', cliOverlap()], { cwd: REPO, env: ENV, timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(fingerprints(fs.readFileSync(path.join(cliOverlap(), 'ca.crt'), 'utf8')), fingerprints(newCa.certPem + oldCaPem));
    const p12 = execFileSync('openssl', ['pkcs12', '-in', path.join(cliOverlap(), 'client.p12'), '-nokeys', '-passin', 'pass:'], { encoding: 'utf8' });
    assert.equal(pemCertificates(p12).length, 3, 'the client certificate and both CAs');
    assert.equal((await registryRequest(bundle(cliOverlap()), '/v2/')).status, 200);
  });

  test('after the server certificate switches to the new CA, old bundles given the combined ca.crt and bundles issued in the overlap still connect', async () => {
    // Step 2: the old bundles get the combined ca.crt; the old one is kept here to show what it would have done.
    const oldOnly = path.join(tmp, 'old-only-ca.crt');
    fs.copyFileSync(path.join(admin(), 'ca.crt'), oldOnly);
    fs.copyFileSync(path.join(overlap(), 'ca.crt'), path.join(admin(), 'ca.crt'));
    // Step 3: only then the server certificate switches to one from the new CA.
    await airlock?.close();
    const server = issueServerCert(newCa, ['127.0.0.1', 'localhost']);
    fs.writeFileSync(path.join(pki, 'server.crt'), server.certPem);
    writeWithMode(path.join(pki, 'server.key'), server.keyPem, 0o600);
    await start();

    await assert.rejects(registryRequest(bundle(admin(), oldOnly), '/v2/'), /certificate/, 'a client trusting only the old CA is cut off');
    for (const dir of [admin(), overlap(), cliOverlap()]) assert.equal((await registryRequest(bundle(dir), '/v2/')).status, 200, dir);
  });
});
