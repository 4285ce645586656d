// The Docker daemon end to end (SPEC §3, §4): dockerd 20.10 pulls a pinned image through airlock as its registry
// mirror over mutual TLS and runs it. dockerd sends no client certificate to 127.0.0.0/8 (it treats loopback
// registries as insecure), so dockerd runs in a private network namespace and dials airlock on the host end of a
// veth pair (10.250.X.1/30); the upstream is a real CNCF registry on loopback, configured as docker.io.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initDataDir } from '../server/init.js';
import { startTestAirlock, TEST_KEY_PASSWORD, type Bundle, type TestAirlock } from './harness/airlock.js';
import { describeRun, listDirs, readRequestLog, removeCgroups, removeNewEmptyDirs, startContainerd, unmountUnder, type ClientRun, type Containerd } from './harness/clients.js';
import { buildImage, inspectDigest, pushImage } from './harness/images.js';
import { createNetns, type Netns } from './harness/netns.js';
import { requireTool, run, startProcess, stopAll, StopWaiting, waitFor, type Proc } from './harness/proc.js';
import { startRegistry, type Registry } from './harness/registry.js';

const DOCKERD = '/usr/sbin/dockerd';
// /usr/local/bin/docker is a different (newer) client that comes first on PATH.
const DOCKER = '/usr/bin/docker';
const CERTS_D = '/etc/docker/certs.d';
const RUN_DOCKER = '/run/docker';

let work: string;
let netns: Netns | undefined;
let upstream: Registry;
let t: TestAirlock | undefined;
let pull: Bundle;
let containerd: Containerd | undefined;
let dockerd: Proc | undefined;
let socket: string;
let cliEnv: NodeJS.ProcessEnv;
let certsEntry: string | undefined;
let createdCertsD = false;
let createdEtcDocker = false;
let runDockerBefore: Set<string> | undefined;
const tag = `1.36-${randomBytes(3).toString('hex')}`;
const cgroupParent = `airlock-docker-${randomBytes(4).toString('hex')}`;
let digest = '';
let pulled = false;

// withoutProxies drops proxy variables so dockerd dials the mirror directly.
function withoutProxies(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!/^(https?|no|all)_proxy$/i.test(k) && !/^DOCKER_/.test(k)) out[k] = v;
  return out;
}

async function docker(args: readonly string[], timeoutMs = 30_000): Promise<ClientRun> {
  const started = performance.now();
  const r = await run(DOCKER, ['-H', `unix://${socket}`, ...args], { env: cliEnv, timeoutMs });
  return { ...r, ms: Math.round(performance.now() - started) };
}

function tail(text: string, lines = 25): string {
  return text.split('\n').slice(-lines).join('\n');
}

function diagnostics(): string {
  const log = t !== undefined && fs.existsSync(t.logPath) ? tail(fs.readFileSync(t.logPath, 'utf8'), 12) : '(no airlock log)';
  return `\n--- airlock log tail ---\n${log}\n--- dockerd output tail ---\n${tail(dockerd?.output() ?? '(dockerd not started)')}`;
}



before(async () => {
  requireTool(DOCKERD);
  requireTool(DOCKER);
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-docker-'));
  // Without a namespace there is no non-loopback address to put airlock on: fail, naming the command that failed.
  netns = await createNetns();

  upstream = await startRegistry({ dir: path.join(work, 'upstream') });
  const image = await buildImage(path.join(work, 'images'), { tag, withBusybox: true, files: { '/etc/probe-release': `probe ${tag}\n` } });
  await pushImage(image, `${upstream.host}/library/busybox:${tag}`, { certDir: upstream.certDir });
  digest = await inspectDigest(upstream, 'library/busybox', tag);

  const airlockDir = path.join(work, 'airlock');
  initDataDir({ dir: airlockDir, hosts: ['127.0.0.1', 'localhost', netns.hostAddr], force: false, keyPassword: TEST_KEY_PASSWORD, p12Password: '' });
  t = await startTestAirlock({
    dir: airlockDir,
    upstreams: [{ name: 'docker.io', url: upstream.url, ca: upstream.caPath }],
    defaultUpstream: 'docker.io',
    pins: [`docker.io/library/busybox:${tag}@${digest}`],
    listen: `${netns.hostAddr}:0`,
  });
  pull = t.bundle('pull');
  const mirrorHost = `${netns.hostAddr}:${String(t.airlock.port)}`;

  createdEtcDocker = !fs.existsSync('/etc/docker');
  createdCertsD = !fs.existsSync(CERTS_D);
  certsEntry = path.join(CERTS_D, mirrorHost);
  fs.mkdirSync(certsEntry, { recursive: true });
  for (const f of ['ca.crt', 'client.cert', 'client.key']) fs.copyFileSync(path.join(pull.dir, f), path.join(certsEntry, f));

  containerd = await startContainerd(path.join(work, 'containerd'));

  const home = path.join(work, 'docker');
  fs.mkdirSync(home, { recursive: true });
  socket = path.join(home, 'docker.sock');
  const daemonJson = path.join(home, 'daemon.json');
  fs.writeFileSync(
    daemonJson,
    JSON.stringify({
      'registry-mirrors': [`https://${mirrorHost}`],
      'deprecated-key-path': path.join(home, 'key.json'),
      'cgroup-parent': `/${cgroupParent}`,
    }),
  );
  cliEnv = { ...withoutProxies(process.env), DOCKER_CONFIG: path.join(work, 'docker-cli') };
  runDockerBefore = listDirs(RUN_DOCKER);
  const cmd = netns.wrap(DOCKERD, [
    '--config-file', daemonJson,
    '--data-root', path.join(home, 'data'),
    '--exec-root', path.join(home, 'exec'),
    '--pidfile', path.join(home, 'dockerd.pid'),
    '--host', `unix://${socket}`,
    '--containerd', containerd.address,
    '--storage-driver', 'vfs',
    '--iptables=false', '--ip6tables=false', '--ip-forward=false', '--ip-masq=false', '--bridge=none',
    '--debug',
  ]);
  // nsenter execs dockerd, so the PID startProcess keeps is dockerd's own.
  const daemon = startProcess(cmd.cmd, cmd.args, { name: 'dockerd', logDir: home, env: withoutProxies(process.env), stopTimeoutMs: 15_000 });
  dockerd = daemon;
  await waitFor(
    async () => {
      if (!daemon.running()) throw new StopWaiting(`dockerd exited:\n${tail(daemon.output(), 40)}`);
      if (!fs.existsSync(socket)) return false;
      return (await docker(['version', '--format', '{{.Server.Version}}'], 5000)).code === 0;
    },
    { timeoutMs: 20_000, what: 'dockerd to answer docker version' },
  );
});

after(async () => {
  const problems: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown> | unknown): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
    }
  };
  if (dockerd !== undefined) {
    const d = dockerd;
    await attempt('stop dockerd', () => d.stop());
  }
  if (containerd !== undefined) {
    const c = containerd;
    await attempt('stop containerd', async () => problems.push(...(await c.stop()).map((l) => `left in /run/containerd: ${l}`)));
  }
  await attempt('stop airlock', () => t?.stop());
  await attempt('stop upstream', () => stopAll());
  // dockerd bind-mounts its network namespace at <exec-root>/netns/default; unmount before removing anything.
  if (work !== undefined) await attempt('unmount scratch', () => unmountUnder(work));
  if (netns !== undefined) {
    const n = netns;
    await attempt('remove netns', async () => problems.push(...(await n.cleanup())));
  }
  if (certsEntry !== undefined) {
    const entry = certsEntry;
    await attempt('remove certs.d entry', () => {
      fs.rmSync(entry, { recursive: true, force: true });
      if (createdCertsD) fs.rmdirSync(CERTS_D);
      if (createdEtcDocker) fs.rmdirSync('/etc/docker');
    });
  }
  if (runDockerBefore !== undefined) {
    const before = runDockerBefore;
    await attempt('remove /run/docker leftovers', () => problems.push(...removeNewEmptyDirs(RUN_DOCKER, before).map((d) => `left: ${d}`)));
  }
  await attempt('remove cgroups', async () => problems.push(...(await removeCgroups(cgroupParent)).map((d) => `left cgroup: ${d}`)));
  if (work !== undefined) await attempt('remove scratch', () => fs.rmSync(work, { recursive: true, force: true }));
  assert.deepEqual(problems, [], 'the test removed everything it created');
});

describe('dockerd pulls through airlock over mutual TLS from a network namespace', () => {
  test('docker pull busybox:<tag> reaches airlock with the pull certificate and gets 200 for the manifest and blobs', async (ctx) => {
    const r = await docker(['pull', `busybox:${tag}`], 30_000);
    assert.equal(r.code, 0, `docker pull failed: ${describeRun(r)}${diagnostics()}`);
    pulled = true;
    ctx.diagnostic(`docker pull took ${String(r.ms)} ms`);
    const certLine = dockerd?.output().split('\n').find((l) => l.includes('client.cert'));
    if (certLine !== undefined) ctx.diagnostic(`dockerd: ${certLine.trim()}`);
    const lines = readRequestLog(t?.logPath ?? '').filter((l) => l.path.startsWith('/v2/'));
    assert.ok(lines.length > 0, `airlock logged no /v2/ request from dockerd${diagnostics()}`);
    for (const l of lines) ctx.diagnostic(`airlock: ${l.method} ${l.path} ${String(l.status)} actor=${String(l.actor)}`);
    for (const l of lines) assert.equal(l.actor, pull.name, `every request carried the pull certificate: ${JSON.stringify(l)}`);
    const tagged = lines.filter((l) => l.path === `/v2/library/busybox/manifests/${tag}`);
    assert.ok(tagged.length > 0 && tagged.every((l) => l.status === 200), `manifest by tag answered 200: ${JSON.stringify(tagged)}`);
    const blobs = lines.filter((l) => l.path.startsWith('/v2/library/busybox/blobs/sha256:'));
    assert.ok(blobs.length >= 2, `the config and the layer were fetched through airlock: ${JSON.stringify(blobs)}`);
    assert.ok(blobs.every((l) => l.status === 200), `every blob answered 200: ${JSON.stringify(blobs)}`);
    assert.ok(!/registry-1\.docker\.io/.test(r.stderr), 'docker did not fall back to Docker Hub');
  });

  test('the pulled image carries the upstream manifest digest', async (ctx) => {
    if (!pulled) {
      assert.fail('docker pull did not succeed, so there is no image to inspect');
    }
    const r = await docker(['image', 'inspect', '--format', '{{index .RepoDigests 0}}', `busybox:${tag}`]);
    assert.equal(r.code, 0, `docker image inspect failed: ${describeRun(r)}`);
    assert.ok(r.stdout.includes(digest), `RepoDigests ${r.stdout.trim()} contains the upstream digest ${digest}`);
    ctx.diagnostic(`RepoDigests[0] = ${r.stdout.trim()}`);
  });

  test('docker run --network none of the pulled image prints hello', async (ctx) => {
    if (!pulled) {
      assert.fail('docker pull did not succeed, so there is no image to run');
    }
    const r = await docker(['run', '--rm', '--network', 'none', `busybox:${tag}`, '/bin/busybox', 'echo', 'hello'], 30_000);
    assert.equal(r.code, 0, `docker run failed: ${describeRun(r)}${diagnostics()}`);
    ctx.diagnostic(`docker run took ${String(r.ms)} ms`);
    assert.equal(r.stdout.trim(), 'hello');
  });
});
