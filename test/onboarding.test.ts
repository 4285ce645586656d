// Onboarding a client with nothing but the admin API (SPEC §6): a pull certificate issued through the API works with
// skopeo at once, the files GET /api/v1/client-config returns work unedited with containerd and podman, and revoking
// the certificate through the API shuts it out within a second.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestAirlock, type Bundle, type TestAirlock } from './harness/airlock.js';
import {
  describeRun,
  preparePodman,
  readDirImage,
  readRequestLog,
  skopeoPull,
  startContainerd,
  unmountUnder,
  type ClientRun,
  type Containerd,
  type Podman,
  type RequestLine,
} from './harness/clients.js';
import { buildImage, inspectDigest, pushImage } from './harness/images.js';
import { stopAll, waitFor } from './harness/proc.js';
import { registryRequest, startRegistry, type HttpResult, type Registry, type RegistryEndpoint } from './harness/registry.js';

const TAG = '1.36';
const CLIENT = 'onboarded-client';
const CONTAINERD_CERTS_D = '/etc/containerd/certs.d/';
const PODMAN_DROP_IN = '/etc/containers/registries.conf.d/airlock.conf';

interface IssuedCert {
  serial: string;
  name: string;
  role: string;
  certificate: string;
  privateKey: string;
  ca: string;
}

interface ClientConfigAnswer {
  kind: string;
  address: string;
  files: { path: string; content: string }[];
}

let work: string;
let bundleDir: string;
let upstream: Registry;
let t: TestAirlock;
let admin: Bundle;
let issued: IssuedCert | undefined;
let onboarded: RegistryEndpoint;
let busyboxDigest = '';
let counter = 0;
let containerd: Containerd | undefined;
let podman: Podman | undefined;

function out(label: string): string {
  counter += 1;
  const parent = path.join(work, 'out');
  fs.mkdirSync(parent, { recursive: true });
  return path.join(parent, `${String(counter)}-${label}`);
}

function logTail(): string {
  return fs.existsSync(t.logPath) ? fs.readFileSync(t.logPath, 'utf8').split('\n').slice(-15).join('\n') : '(no log)';
}

function mustSucceed(what: string, r: ClientRun): void {
  assert.equal(r.code, 0, `${what} failed: ${describeRun(r)}\nairlock log tail:\n${logTail()}`);
}

function describeLines(lines: readonly RequestLine[]): string {
  return lines.map((l) => `${l.method} ${l.path} ${String(l.status)} ${l.actor ?? '-'}`).join(', ');
}

// adminCall sends one admin API request with the admin bundle over a fresh connection.
function adminCall(method: string, pathname: string, body?: unknown): Promise<HttpResult> {
  return registryRequest(admin.endpoint, pathname, {
    method,
    answerChallenge: false,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
}

// clientConfig asks airlock, as the onboarded pull client, for the files of one kind with the bundle in bundleDir.
async function clientConfig(kind: 'containerd' | 'podman'): Promise<ClientConfigAnswer> {
  const res = await registryRequest(onboarded, `/api/v1/client-config?kind=${kind}&certDir=${encodeURIComponent(bundleDir)}`, { answerChallenge: false });
  assert.equal(res.status, 200, `client-config ${kind}: ${res.body.toString()}`);
  const answer = JSON.parse(res.body.toString()) as ClientConfigAnswer;
  assert.equal(answer.kind, kind);
  assert.equal(answer.address, t.host);
  return answer;
}

// writeExactly writes content to file and checks the bytes on disk are the returned content, untouched.
function writeExactly(file: string, content: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  assert.equal(fs.readFileSync(file, 'utf8'), content, `${file} holds the returned content byte for byte`);
}

// onboardedSkopeo copies the pinned busybox into a fresh folder with the API-issued bundle; a new process, so a new connection.
async function onboardedSkopeo(label: string): Promise<{ run: ClientRun; dir: string }> {
  const dir = out(label);
  const run = await skopeoPull(`${t.host}/library/busybox:${TAG}`, `dir:${dir}`, { certDir: bundleDir, scratch: path.join(work, 'skopeo-tmp'), timeoutMs: 20_000 });
  return { run, dir };
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-onboarding-'));
  bundleDir = path.join(work, 'bundle');
  upstream = await startRegistry({ dir: path.join(work, 'upstream') });
  const busybox = await buildImage(path.join(work, 'images'), { tag: TAG, withBusybox: true, files: { '/etc/probe-release': `probe ${TAG}\n` } });
  await pushImage(busybox, `${upstream.host}/library/busybox:${TAG}`, { certDir: upstream.certDir });
  busyboxDigest = await inspectDigest(upstream, 'library/busybox', TAG);
  t = await startTestAirlock({
    dir: path.join(work, 'airlock'),
    upstreams: [{ name: 'docker.io', url: upstream.url, ca: upstream.caPath }],
    defaultUpstream: 'docker.io',
    pins: [`docker.io/library/busybox:${TAG}@${busyboxDigest}`],
  });
  admin = t.bundle('admin');
  onboarded = {
    url: t.url,
    caPath: path.join(bundleDir, 'ca.crt'),
    clientCertPath: path.join(bundleDir, 'client.cert'),
    clientKeyPath: path.join(bundleDir, 'client.key'),
  };
});

after(async () => {
  const leftovers: string[] = [];
  if (containerd) leftovers.push(...(await containerd.stop()));
  if (podman) leftovers.push(...(await podman.cleanup()));
  await t?.stop();
  await stopAll();
  if (work) {
    await unmountUnder(work);
    fs.rmSync(work, { recursive: true, force: true });
  }
  assert.deepEqual(leftovers, [], 'containerd and podman left nothing behind in /run or the cgroup tree');
});

describe('onboarding a client through the admin API', () => {
  test('a pull certificate issued through the API copies a pinned image with skopeo at once', async () => {
    const res = await adminCall('POST', '/api/v1/certs', { name: CLIENT, role: 'pull' });
    assert.equal(res.status, 201, res.body.toString());
    const cert = JSON.parse(res.body.toString()) as IssuedCert;
    issued = cert;
    assert.equal(cert.role, 'pull');
    assert.equal(cert.name, CLIENT);
    fs.mkdirSync(bundleDir, { recursive: true });
    fs.writeFileSync(path.join(bundleDir, 'client.cert'), cert.certificate);
    fs.writeFileSync(path.join(bundleDir, 'client.key'), cert.privateKey, { mode: 0o600 });
    fs.writeFileSync(path.join(bundleDir, 'ca.crt'), cert.ca);

    const mark = readRequestLog(t.logPath).length;
    const { run: r, dir } = await onboardedSkopeo('skopeo-issued');
    mustSucceed('skopeo copy with the API-issued bundle', r);
    console.log(`skopeo copy right after issuing the certificate through the API: ${String(r.ms)} ms`);
    const img = readDirImage(dir);
    assert.equal(img.digest, busyboxDigest, 'skopeo got the upstream manifest digest');
    const lines = readRequestLog(t.logPath).slice(mark);
    assert.ok(lines.some((l) => l.path === `/v2/library/busybox/manifests/${TAG}` && l.status === 200), describeLines(lines));
    assert.ok(lines.every((l) => l.actor === CLIENT), `every request carried the API-issued certificate: ${describeLines(lines)}`);
  });

  test('the containerd hosts.toml from client-config, written unedited, lets ctr pull docker.io/library/busybox through airlock', async () => {
    const answer = await clientConfig('containerd');
    assert.equal(answer.files.length, 1, 'one hosts.toml per configured upstream');
    const certsD = path.join(work, 'containerd-certs.d');
    for (const f of answer.files) {
      assert.ok(f.path.startsWith(CONTAINERD_CERTS_D), f.path);
      assert.ok(f.content.includes(`"${path.join(bundleDir, 'client.cert')}"`), `the file names the bundle in certDir:\n${f.content}`);
      assert.ok(!f.content.includes('/etc/airlock'), 'no path points at the default bundle folder');
      writeExactly(path.join(certsD, f.path.slice(CONTAINERD_CERTS_D.length)), f.content);
    }
    assert.ok(fs.existsSync(path.join(certsD, 'docker.io', 'hosts.toml')));

    containerd = await startContainerd(path.join(work, 'containerd'));
    const mark = readRequestLog(t.logPath).length;
    const r = await containerd.ctr(['images', 'pull', '--hosts-dir', certsD, `docker.io/library/busybox:${TAG}`], 60_000);
    mustSucceed('ctr images pull with the generated hosts.toml', r);
    console.log(`ctr images pull with the generated hosts.toml: ${String(r.ms)} ms`);
    const lines = readRequestLog(t.logPath).slice(mark);
    console.log(`containerd sent: ${describeLines(lines)}`);
    assert.ok(lines.length > 0, 'containerd reached airlock');
    // With server = airlock, containerd still treats airlock as a proxy of docker.io (the host differs from the
    // reference's), so it names the registry with ?ns=docker.io on every request.
    assert.ok(lines.every((l) => l.path.endsWith('?ns=docker.io')), `every request named ns=docker.io: ${describeLines(lines)}`);
    assert.ok(lines.some((l) => l.method === 'HEAD' && l.path === `/v2/library/busybox/manifests/${TAG}?ns=docker.io`), describeLines(lines));
    assert.ok(lines.every((l) => l.repo === 'docker.io/library/busybox'), 'routed to docker.io/library/busybox');
    assert.ok(lines.every((l) => l.status === 200 && l.actor === CLIENT), `all answered 200 to the API-issued certificate: ${describeLines(lines)}`);
    const ls = await containerd.ctr(['images', 'ls']);
    mustSucceed('ctr images ls', ls);
    const row = ls.stdout.split('\n').find((l) => l.startsWith(`docker.io/library/busybox:${TAG} `));
    assert.ok(row !== undefined && row.includes(busyboxDigest), `ctr lists the upstream digest ${busyboxDigest}:\n${ls.stdout}`);
  });

  test('the podman registries.conf from client-config, written unedited, lets podman pull docker.io/library/busybox through airlock', async () => {
    const answer = await clientConfig('podman');
    const dropIn = answer.files.find((f) => f.path === PODMAN_DROP_IN);
    assert.ok(dropIn !== undefined, `client-config names ${PODMAN_DROP_IN}: ${answer.files.map((f) => f.path).join(', ')}`);
    assert.ok(dropIn.content.includes(`location = "${t.host}/docker.io"`), dropIn.content);
    const certsD = answer.files.filter((f) => f.path !== PODMAN_DROP_IN);
    assert.equal(certsD.length, 3, 'ca.crt, client.cert and client.key');
    assert.ok(certsD.every((f) => f.path.startsWith(`/etc/containers/certs.d/${t.host}/`)), 'the other files are the certs.d places of the bundle');
    assert.ok(certsD.every((f) => f.content.startsWith(`# copy ${bundleDir}/`)), 'and tell where to copy it from');

    podman = preparePodman({ dir: path.join(work, 'podman'), mirror: t.host, certDir: bundleDir });
    const registriesConf = podman.env.CONTAINERS_REGISTRIES_CONF;
    assert.ok(registriesConf !== undefined);
    writeExactly(registriesConf, dropIn.content);
    const mark = readRequestLog(t.logPath).length;
    const r = await podman.pull(`docker.io/library/busybox:${TAG}`);
    mustSucceed('podman pull with the generated registries.conf', r);
    console.log(`podman pull with the generated registries.conf: ${String(r.ms)} ms`);
    const lines = readRequestLog(t.logPath).slice(mark);
    assert.ok(
      lines.some((l) => l.method === 'GET' && l.path === `/v2/docker.io/library/busybox/manifests/${TAG}` && l.status === 200),
      `podman fetched the manifest under the docker.io prefix: ${describeLines(lines)}`,
    );
    const repoLines = lines.filter((l) => l.path !== '/v2/');
    assert.ok(repoLines.every((l) => l.repo === 'docker.io/library/busybox'), describeLines(lines));
    assert.ok(lines.every((l) => l.status === 200 && l.actor === CLIENT), `all answered 200 to the API-issued certificate: ${describeLines(lines)}`);
    const images = await podman.podman(['images', '--digests', '--format', '{{.Repository}}:{{.Tag}} {{.Digest}}']);
    mustSucceed('podman images', images);
    assert.ok(images.stdout.split('\n').includes(`docker.io/library/busybox:${TAG} ${busyboxDigest}`), `podman images shows the upstream digest:\n${images.stdout}`);
  });

  test('client-config names /etc/airlock by default and refuses a certDir that is not a plain absolute path, naming the field', async () => {
    const plain = await adminCall('GET', '/api/v1/client-config?kind=containerd');
    assert.equal(plain.status, 200);
    const files = (JSON.parse(plain.body.toString()) as ClientConfigAnswer).files;
    assert.ok(files.length > 0, 'a hosts.toml per upstream');
    assert.ok(files.every((f) => f.content.includes('"/etc/airlock/ca.crt"')), 'the default bundle folder is /etc/airlock');
    const trailing = await adminCall('GET', `/api/v1/client-config?kind=containerd&certDir=${encodeURIComponent(`${bundleDir}/`)}`);
    assert.equal(trailing.status, 200);
    assert.ok(trailing.body.toString().includes(`${bundleDir}/client.key`) && !trailing.body.toString().includes('//client.key'), 'a trailing slash is not doubled');
    for (const bad of ['etc/airlock', '/etc/air"lock', '/etc/air lock', '/etc/airlock\\x', `/${'a'.repeat(200)}`, '']) {
      const res = await adminCall('GET', `/api/v1/client-config?kind=podman&certDir=${encodeURIComponent(bad)}`);
      assert.equal(res.status, 400, `certDir ${JSON.stringify(bad)}: ${res.body.toString()}`);
      assert.match(res.body.toString(), /certDir/, `the error names certDir: ${res.body.toString()}`);
    }
  });

  test('revoking the certificate through the API refuses skopeo with that bundle within one second', async () => {
    assert.ok(issued !== undefined, 'the certificate was issued');
    const started = performance.now();
    const res = await adminCall('POST', `/api/v1/certs/${issued.serial}/revoke`, { reason: 'onboarding test' });
    assert.equal(res.status, 200, res.body.toString());
    assert.ok(typeof (JSON.parse(res.body.toString()) as { revokedAt?: unknown }).revokedAt === 'string', res.body.toString());
    const deadline = started + 1000;
    let refused: ClientRun | undefined;
    let tries = 0;
    while (refused === undefined && performance.now() < deadline) {
      tries += 1;
      const { run: r } = await onboardedSkopeo('skopeo-revoked');
      if (r.code !== 0) refused = r;
    }
    const ms = Math.round(performance.now() - started);
    assert.ok(refused !== undefined, `skopeo still copied ${String(tries)} times in ${String(ms)} ms after the revocation`);
    console.log(`revoked through the API; skopeo refused after ${String(ms)} ms (try ${String(tries)}): ${refused.stderr.trim().split('\n').pop() ?? ''}`);
    assert.ok(ms <= 1000, `refused within one second, took ${String(ms)} ms`);
    assert.match(refused.stderr, /EOF|connection reset|broken pipe|certificate/i, 'the connection is refused');
    assert.doesNotMatch(refused.stderr, /manifest unknown|denied/i, 'the refusal is the connection, not the image');
    await assert.rejects(registryRequest(onboarded, '/v2/', { answerChallenge: false }), 'a fresh connection with the bundle is closed too');
    const serial = issued.serial;
    let events: { action: string; actorSerial: string | null; reason: string | null }[] = [];
    await waitFor(
      async () => {
        const audit = await adminCall('GET', '/api/v1/audit?format=jsonl');
        events = audit.body.toString().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as (typeof events)[number]);
        return events.some((e) => e.action === 'tls.refused' && e.actorSerial === serial);
      },
      { timeoutMs: 5000, what: 'the audit log to record the refused revoked certificate' },
    );
    assert.ok(events.some((e) => e.action === 'admin.cert.issue'), 'the issue is audited');
    assert.ok(events.some((e) => e.action === 'admin.cert.revoke'), 'the revocation is audited');
  });
});
