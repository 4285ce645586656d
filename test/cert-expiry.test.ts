// Certificates that end soon are said at start, before clients fail: a warning in the log for the server certificate
// and each tls.clientCa certificate ending within 30 days, and airlock_certificate_expiry_seconds for alerts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { initDataDir } from '../server/init.js';
import { createCa, issueServerCert, writeWithMode } from '../server/pki/ca.js';
import { createCertStore } from '../storage/certs.js';
import { openDatabase } from '../storage/db.js';
import { startTestAirlock, TEST_KEY_PASSWORD, type TestAirlock } from './harness/airlock.js';
import { waitFor } from './harness/proc.js';

const DAY_MS = 24 * 60 * 60 * 1000;

let tmp: string;
const running: TestAirlock[] = [];

interface LogLine {
  level: number;
  msg: string;
  cert?: string;
  notAfter?: string;
  serial?: string;
  name?: string;
  role?: string;
  more?: number;
}

function warnings(t: TestAirlock): LogLine[] {
  return fs
    .readFileSync(t.logPath, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as LogLine)
    .filter((l) => l.level === 40 && l.cert !== undefined);
}

async function gauge(t: TestAirlock, cert: string): Promise<number> {
  const res = await t.request('audit', '/metrics');
  assert.equal(res.status, 200);
  const m = new RegExp(`^airlock_certificate_expiry_seconds\\{cert="${cert}"\\} ([0-9.e+]+)$`, 'm').exec(res.body.toString());
  assert.ok(m, `a series for cert="${cert}"`);
  return Number(m[1]);
}

// recordCerts stores client certificate records as issuing them would, each ending in so many days (revoked when asked).
function recordCerts(dir: string, certs: { name: string; role: string; days: number; revoked?: boolean }[]): void {
  const db = openDatabase(dir);
  try {
    const store = createCertStore(db);
    certs.forEach((c, i) => {
      const serial = (0x1000 + i).toString(16);
      store.record({ serial, name: c.name, role: c.role, notAfter: new Date(Date.now() + c.days * DAY_MS).toISOString(), issuedBy: 'test' });
      if (c.revoked) store.revoke(serial, 'test');
    });
  } finally {
    db.close();
  }
}

function notAfter(pem: string): number {
  return new Date(new crypto.X509Certificate(pem).validTo).getTime();
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-cert-expiry-'));
});

after(async () => {
  for (const t of running) await t.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('a server certificate and a CA ending within 30 days are each warned of at start, and their ends are metrics', async () => {
  const dir = path.join(tmp, 'ending');
  initDataDir({ dir, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: TEST_KEY_PASSWORD, p12Password: '' });
  // A CA of 20 days and a server certificate of 10 from it, in place of init's.
  const ca = createCa('short CA', 20);
  const server = issueServerCert(ca, ['127.0.0.1', 'localhost'], 10);
  fs.writeFileSync(path.join(dir, 'pki', 'ca.crt'), ca.certPem);
  writeWithMode(path.join(dir, 'pki', 'ca.key'), ca.keyPem, 0o600);
  fs.writeFileSync(path.join(dir, 'pki', 'server.crt'), server.certPem);
  writeWithMode(path.join(dir, 'pki', 'server.key'), server.keyPem, 0o600);
  const t = await startTestAirlock({ dir });
  running.push(t);

  const w = warnings(t);
  assert.equal(w.length, 2, JSON.stringify(w));
  const [s, c] = [w.find((l) => l.cert === 'server'), w.find((l) => l.cert === 'ca')];
  assert.match(s?.msg ?? '', /^the server certificate \(tls\.cert\) expires on [0-9-]+T[0-9:.]+Z \(in 9 days\); every client fails TLS from then on: renew it/);
  assert.match(c?.msg ?? '', /^a CA certificate of tls\.clientCa expires on [0-9-]+T[0-9:.]+Z \(in 19 days\); client certificates it issued fail from then on: renew the CA/);
  assert.equal(s?.notAfter, new Date(notAfter(server.certPem)).toISOString());
  assert.equal(await gauge(t, 'server'), notAfter(server.certPem) / 1000);
  assert.equal(await gauge(t, 'ca'), notAfter(ca.certPem) / 1000);
});

test('certificates far from their end are not warned of; the CA gauge is the CA that ends first', async () => {
  const dir = path.join(tmp, 'far');
  initDataDir({ dir, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: TEST_KEY_PASSWORD, p12Password: '' });
  const t = await startTestAirlock({ dir });
  running.push(t);
  assert.deepEqual(warnings(t), []);
  const server = fs.readFileSync(path.join(dir, 'pki', 'server.crt'), 'utf8');
  assert.equal(await gauge(t, 'server'), notAfter(server) / 1000);
  assert.ok((await gauge(t, 'ca')) * 1000 > Date.now() + 3000 * DAY_MS, "init's CA lasts ten years");
});

test('a server that keeps running checks again: the warnings come back each time, from the certificates it serves with', async () => {
  const dir = path.join(tmp, 'running');
  initDataDir({ dir, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: TEST_KEY_PASSWORD, p12Password: '' });
  const ca = createCa('short CA', 20);
  fs.writeFileSync(path.join(dir, 'pki', 'ca.crt'), ca.certPem);
  writeWithMode(path.join(dir, 'pki', 'ca.key'), ca.keyPem, 0o600);
  const server = issueServerCert(ca, ['127.0.0.1', 'localhost'], 10);
  fs.writeFileSync(path.join(dir, 'pki', 'server.crt'), server.certPem);
  writeWithMode(path.join(dir, 'pki', 'server.key'), server.keyPem, 0o600);
  const t = await startTestAirlock({ dir, expiryCheckMs: 100 });
  running.push(t);
  await waitFor(() => warnings(t).length >= 6, { timeoutMs: 10_000, what: 'three rounds of warnings' });
  const w = warnings(t);
  assert.ok(w.every((l) => l.cert === 'server' || l.cert === 'ca'), JSON.stringify(w));
  assert.equal(w.filter((l) => l.cert === 'server').length, w.filter((l) => l.cert === 'ca').length, 'one of each per round');
  assert.ok(w.every((l) => l.cert !== 'server' || l.notAfter === new Date(notAfter(server.certPem)).toISOString()));
});

test('client certificates ending within 30 days are warned of, the first ten to end by name; revoked and expired ones are not', async () => {
  const dir = path.join(tmp, 'clients');
  initDataDir({ dir, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: TEST_KEY_PASSWORD, p12Password: '' });
  recordCerts(dir, [
    ...Array.from({ length: 11 }, (_, i) => ({ name: `build-${i}`, role: 'pull', days: 5 + i / 100 })),
    { name: 'auditor', role: 'audit', days: 3.5 },
    { name: 'gone', role: 'pull', days: 2, revoked: true },
    { name: 'ended', role: 'pull', days: -1 },
    { name: 'far', role: 'pull', days: 90 },
  ]);
  const t = await startTestAirlock({ dir });
  running.push(t);

  const w = warnings(t).filter((l) => l.cert === 'client');
  assert.equal(w.length, 11, JSON.stringify(w));
  assert.deepEqual(
    w.slice(0, 10).map((l) => l.name),
    ['auditor', ...Array.from({ length: 9 }, (_, i) => `build-${i}`)],
    'the first to end first',
  );
  assert.match(w[0].msg, /^the audit certificate "auditor" \(serial 100b\) expires on [0-9-]+T[0-9:.]+Z \(in 3 days\); its client is refused from then on: issue a new one/);
  assert.equal(w[0].role, 'audit');
  assert.equal(w[0].serial, '100b');
  assert.equal(w[10].more, 2);
  assert.match(w[10].msg, /^and 2 more client certificates expire within 30 days/);
});

test('the admin gauge is when the last admin certificate not revoked ends, read at every scrape', async () => {
  const dir = path.join(tmp, 'admin');
  initDataDir({ dir, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: TEST_KEY_PASSWORD, p12Password: '' });
  const t = await startTestAirlock({ dir });
  running.push(t);
  const init = t.airlock.services.certs.list().find((c) => c.issuedBy === 'airlock init');
  assert.ok(init);
  assert.equal(await gauge(t, 'admin'), Date.parse(init.notAfter) / 1000);

  // A renewed admin bundle counts at once, an earlier-ending one does not move the gauge, and a revoked one stops counting.
  const renewed = t.airlock.services.authority.issue('admin-2027', 'admin', 400, 'test');
  t.airlock.services.authority.issue('admin-short', 'admin', 10, 'test');
  assert.equal(await gauge(t, 'admin'), Date.parse(renewed.notAfter) / 1000);
  const res = await t.request('admin', `/api/v1/certs/${renewed.serial}/revoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"reason":"renewed by mistake"}' });
  assert.equal(res.status, 200, res.body.toString());
  assert.equal(await gauge(t, 'admin'), Date.parse(init.notAfter) / 1000);
});
