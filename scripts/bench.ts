// bench measures airlock side by side with nginx, the CNCF registry and a bare Fastify server, on this machine, in
// one run: warm blob throughput, manifest requests, cold pull-through, fan-in of concurrent cold pulls, and airlock's
// peak memory. It starts and stops every process itself (by PID), binds only to 127.0.0.1, and writes
// bench-results/bench-<timestamp>.{json,md}.
// Usage: npm run bench -- [--quick] [--runs N] [--profile] [--source | --no-build] [--keep] [--only LIST]
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { initDataDir } from '../server/init.js';
import { CertAuthority } from '../server/pki/authority.js';
import { writeClientBundle } from '../server/pki/ca.js';
import { createCertStore } from '../storage/certs.js';
import { openDatabase } from '../storage/db.js';
import { run, waitFor } from '../test/harness/proc.js';
import { makeServerCert, makeTestCa } from '../test/harness/tls.js';
import type { BlobResult, InterleaveResult, LoadJob, LoadResult, LoadTls, RequestsResult } from './bench/load.js';
import { summariseProfile } from './bench/profile.js';
import { emptyResults, evaluate, type Machine, type Results } from './bench/report.js';
import { type Blob, type Image, memoryBlob, pushImage, writeRandomBlob } from './bench/seed.js';
import {
  MemorySampler,
  readMemory,
  resetPeakMemory,
  type Server,
  startAirlockProcess,
  startBare,
  startCncfRegistry,
  startNginx,
  type TlsFiles,
  tlsGet,
} from './bench/servers.js';
import { CpuWatch, cpuSince, LoadWorker, NODE_FLAGS, stopEverything, threadCpu, waitQuiet } from './bench/procs.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const RESULTS = path.join(ROOT, 'bench-results');
const LOAD_SCRIPT = path.join(ROOT, 'scripts', 'bench', 'load.ts');
const UPSTREAM_NAME = 'upstream.bench';
const MANIFEST_ACCEPT =
  'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json';
const CONNECTIONS = 64;
// MANIFEST_SLICE_MS is one turn of a manifest series; each turn starts with MANIFEST_SLICE_WARMUP_MS not counted.
const MANIFEST_SLICE_MS = 1000;
const MANIFEST_SLICE_WARMUP_MS = 100;
const FAN_IN = 8;
// WARM_ROUNDS is how many times the single warm client downloads the blob, one after another on its connection, per
// run: one 256 MiB download lasts about 0.4 s here, short enough for the machine's noise to swing it by a third.
const WARM_ROUNDS = 3;
const MiB = 2 ** 20;
// MAX_OTHER_CPUS is how much CPU other processes may use during a repeatable measurement before it is run again.
const MAX_OTHER_CPUS = 0.25;
// MAX_ATTEMPTS bounds those repeats per measurement.
const MAX_ATTEMPTS = 3;
// RETRY_BUDGET_MS bounds the time all repeats together may add to a run (full run, --quick).
const RETRY_BUDGET_MS = { full: 45_000, quick: 10_000 };
// PROXY_FAN_IN_RUNS is how many runs also send the fan-in through the registry in proxy mode (a reference whose
// count does not vary, so it need not cost the time of every run).
const PROXY_FAN_IN_RUNS = 2;

interface Options {
  quick: boolean;
  runs: number;
  profile: boolean;
  source: boolean;
  noBuild: boolean;
  keep: boolean;
  // only names the measurements to run (all by default); memory is measured during the warm and fan-in ones.
  only: Set<Section>;
}

const SECTIONS = ['warm', 'manifests', 'cold', 'fanin'] as const;
type Section = (typeof SECTIONS)[number];

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      runs: { type: 'string' },
      profile: { type: 'boolean' },
      source: { type: 'boolean' },
      'no-build': { type: 'boolean' },
      keep: { type: 'boolean' },
      only: { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help === true) {
    console.log(`usage: npm run bench -- [--quick] [--runs N] [--profile] [--source | --no-build] [--keep] [--only LIST]
  --quick     2 runs, 32 MiB blobs, 2 s manifest runs, airlock from source (a smoke test, under a minute)
  --runs N    runs per figure (default 5; medians are reported)
  --profile   also run airlock under --cpu-prof for one warm-blob run, one cold pull and one manifest run, and
              summarise the profiles
  --source    run airlock from TypeScript with tsx instead of the compiled dist/ (the default without --quick)
  --no-build  use dist/ as it is, even when sources are newer
  --keep      keep the temporary directory's logs and configs (not the blobs) and print its path
  --only LIST run only these measurements, comma-separated: ${SECTIONS.join(', ')} (a partial table)`);
    process.exit(0);
  }
  const quick = values.quick === true;
  const runs = values.runs === undefined ? (quick ? 2 : 5) : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new Error('--runs must be a whole number from 1 to 20');
  const only = new Set<Section>();
  for (const name of (values.only ?? SECTIONS.join(',')).split(',')) {
    const section = SECTIONS.find((x) => x === name.trim());
    if (section === undefined) throw new Error(`--only takes a comma-separated list of ${SECTIONS.join(', ')}; "${name}" is none of them`);
    only.add(section);
  }
  return {
    quick,
    runs,
    profile: values.profile === true,
    source: values.source === true || (quick && values['no-build'] !== true),
    noBuild: values['no-build'] === true,
    keep: values.keep === true,
    only,
  };
}

const started = Date.now();

function log(message: string): void {
  const s = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${s}s] ${message}\n`);
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const m = fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs;
    if (m > newest) newest = m;
  }
  return newest;
}

// airlockCommand returns the node arguments that run airlock's CLI: the compiled dist/ (built when the sources are
// newer, as `npm run build` does) or the TypeScript sources through tsx.
async function airlockCommand(o: Options): Promise<string[]> {
  if (o.source) return [...NODE_FLAGS, '--import', 'tsx', path.join(ROOT, 'server', 'main.ts')];
  const main = path.join(ROOT, 'dist', 'server', 'main.js');
  const built = fs.existsSync(main) ? fs.statSync(main).mtimeMs : 0;
  const sources = Math.max(newestMtime(path.join(ROOT, 'server')), newestMtime(path.join(ROOT, 'storage')), fs.statSync(path.join(ROOT, 'tsconfig.json')).mtimeMs);
  if (!o.noBuild && sources > built) {
    log('building dist/ (tsc -p tsconfig.json, then scripts/copy-assets.mjs)');
    const before = Date.now();
    const tsc = await run(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: ROOT, timeoutMs: 300_000 });
    if (tsc.code !== 0) {
      const errors = tsc.stdout.split('\n').filter((l) => /error TS/.test(l));
      log(`tsc reported ${errors.length} type error(s); the emitted JavaScript is used anyway. First: ${errors[0] ?? tsc.stderr.trim()}`);
    }
    if (!fs.existsSync(main) || fs.statSync(main).mtimeMs < before - 1000) throw new Error(`the build did not write ${main}`);
    const assets = await run(process.execPath, [path.join(ROOT, 'scripts', 'copy-assets.mjs')], { cwd: ROOT });
    if (assets.code !== 0) throw new Error(`copy-assets failed: ${assets.stderr}`);
  }
  if (!fs.existsSync(main)) throw new Error(`${main} does not exist; run npm run build or pass --source`);
  return [...NODE_FLAGS, main];
}

let worker: LoadWorker | null = null;

function load<T extends LoadResult>(job: LoadJob, timeoutMs = 180_000): Promise<T> {
  if (worker === null) throw new Error('the load worker is not set up');
  return worker.run<T>(job, timeoutMs);
}

function blobJob(server: Server | { url: string }, p: string, t: LoadTls, clients: number, bytes: number, rounds = 1): LoadJob {
  return { mode: 'blob', origin: server.url, path: p, tls: t, clients, rounds, expectBytes: bytes, warmPath: '/v2/', timeoutMs: 120_000 };
}

function countUpstreamGets(logPath: string, uri: string): number {
  const text = fs.readFileSync(logPath, 'utf8');
  let n = 0;
  for (const line of text.split('\n')) {
    if (line.includes('msg="response completed"') && line.includes('http.request.method=GET') && line.includes(`http.request.uri="${uri}`)) n++;
  }
  return n;
}

// settledGets waits until the upstream has logged at least one GET of uri and the count stays put for half a second.
async function settledGets(logPath: string, uri: string, before: number): Promise<number> {
  let last = -1;
  let since = Date.now();
  await waitFor(
    () => {
      const n = countUpstreamGets(logPath, uri) - before;
      if (n !== last) {
        last = n;
        since = Date.now();
      }
      return n > 0 && Date.now() - since >= 500;
    },
    { timeoutMs: 15_000, what: `the upstream to log a GET of ${uri}` },
  );
  return last;
}

function negotiated(server: Server, t: TlsFiles): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: server.port,
      ca: fs.readFileSync(t.ca),
      cert: t.cert === undefined ? undefined : fs.readFileSync(t.cert),
      key: t.key === undefined ? undefined : fs.readFileSync(t.key),
      minVersion: 'TLSv1.3',
      ciphers: 'TLS_AES_128_GCM_SHA256',
      ALPNProtocols: ['http/1.1'],
    });
    socket.once('secureConnect', () => {
      const c = socket.getCipher();
      resolve(`${socket.getProtocol() ?? '?'} ${c.standardName}`);
      socket.destroy();
    });
    socket.once('error', (err) => resolve(`handshake failed: ${err.message}`));
  });
}

async function machine(): Promise<Machine> {
  const nginx = await run('/usr/sbin/nginx', ['-v']);
  const registry = await run('/usr/bin/docker-registry', ['--version']);
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: os.totalmem() / 2 ** 30,
    node: process.version,
    kernel: os.release(),
    nginx: (nginx.stderr.trim().split(': ')[1] ?? 'nginx').trim(),
    registry: registry.stdout.trim().split(/\s+/).find((w) => /^v?[0-9]+\.[0-9]+/.test(w)) ?? registry.stdout.trim(),
    date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
    loadAverage: os.loadavg()[0] ?? 0,
    otherCpus: 0,
  };
}

function issuePullBundle(dataDir: string, out: string): TlsFiles {
  const db = openDatabase(dataDir);
  try {
    const pki = path.join(dataDir, 'pki');
    const authority = new CertAuthority({ certPem: fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8'), keyPem: fs.readFileSync(path.join(pki, 'ca.key'), 'utf8') }, createCertStore(db));
    const issued = authority.issue('bench', 'pull', 30, 'airlock bench');
    writeClientBundle(out, issued, issued.caPem, '');
  } finally {
    db.close();
  }
  return { ca: path.join(out, 'ca.crt'), cert: path.join(out, 'client.cert'), key: path.join(out, 'client.key') };
}

function hashFile(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(MiB);
  try {
    for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return `sha256:${h.digest('hex')}`;
}

function cachePath(dataDir: string, digest: string): string {
  const hex = digest.slice(7);
  return path.join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

// findProfile picks the main thread's profile: Node names them CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile, and
// other threads (tsx's module loader) write their own.
function findProfile(dir: string): string {
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => /\.[0-9]+\.0\.[0-9]+\.cpuprofile$/.test(f)) : [];
  const f = files.sort().pop();
  if (f === undefined) throw new Error(`no .cpuprofile was written to ${dir}`);
  return path.join(dir, f);
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const blobBytes = (o.quick ? 32 : 256) * MiB;
  const manifestMs = o.quick ? 2000 : 10_000;
  const warmupMs = o.quick ? 300 : 500;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-[0-9]{3}Z$/, 'Z');
  const budgetMs = o.quick ? 300_000 : 15 * 60_000;
  // Past the soft budget, disturbed measurements are no longer repeated.
  const softBudgetMs = o.quick ? 60_000 : 7 * 60_000;
  const watchdog = setTimeout(() => {
    interrupted(`over the ${budgetMs / 1000} s time budget`, 2);
  }, budgetMs);
  watchdog.unref();

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-bench-'));
  tmpRoot = tmp;
  const notes: string[] = [];
  let finished = false;
  try {
    const command = await airlockCommand(o);
    const info = await machine();
    worker = new LoadWorker(LOAD_SCRIPT, ROOT, path.join(tmp, 'logs', 'load.log'));
    const whole = new CpuWatch();
    log(`machine: ${info.nproc} CPUs, ${info.memoryGiB.toFixed(1)} GiB, Node ${info.node}; temp dir ${tmp}`);

    // PKI: airlock's own data directory (CA, server certificate, mirror key), a pull client, and the upstream's CA.
    const dataDir = path.join(tmp, 'airlock');
    initDataDir({ dir: dataDir, hosts: ['127.0.0.1', 'localhost'], force: false, keyPassword: '', p12Password: '' });
    const client = issuePullBundle(dataDir, path.join(tmp, 'client'));
    const serverCert = path.join(dataDir, 'pki', 'server.crt');
    const serverKey = path.join(dataDir, 'pki', 'server.key');
    const caCert = path.join(dataDir, 'pki', 'ca.crt');
    const upCa = await makeTestCa(path.join(tmp, 'upstream-pki'), 'bench-upstream-ca');
    const upCert = await makeServerCert(upCa, path.join(tmp, 'upstream-pki'));
    const upTls: TlsFiles = { ca: upCa.certPath };

    const upstreamData = path.join(tmp, 'upstream', 'data');
    const upstream = await startCncfRegistry({ name: 'upstream', dir: path.join(tmp, 'upstream'), dataDir: upstreamData, cert: upCert.certPath, key: upCert.keyPath, probe: upTls });
    log(`upstream registry (TLS) on ${upstream.url}, pid ${upstream.pid}`);

    // Seed: the warm blob (also nginx's file), a manifest with eight small layers, and one fresh blob per cold run.
    const seedDir = path.join(tmp, 'seed');
    const nginxRoot = path.join(tmp, 'nginx-root');
    fs.mkdirSync(seedDir, { recursive: true });
    fs.mkdirSync(nginxRoot, { recursive: true });
    const up = { url: upstream.url, ca: upCa.certPath };
    const warmBlob = await writeRandomBlob(path.join(nginxRoot, 'blob'), blobBytes);
    const big = await pushImage(up, 'bench/big', 'v1', [warmBlob]);
    const small: Blob[] = Array.from({ length: 8 }, (_, i) => memoryBlob(crypto.randomBytes(2048 + 997 * i)));
    const man = await pushImage(up, 'bench/manifest', 'v1', small, {
      'org.opencontainers.image.source': 'https://git.example.internal/platform/bench-image',
      'org.opencontainers.image.revision': crypto.randomBytes(20).toString('hex'),
    });
    const seedFresh = async (repo: string, prefix: string, count: number): Promise<Image[]> => {
      const out: Image[] = [];
      for (let i = 0; i < count; i++) {
        const file = path.join(seedDir, `${prefix}${i}`);
        const b = await writeRandomBlob(file, blobBytes);
        out.push(await pushImage(up, repo, `${prefix}${i}`, [b]));
        fs.rmSync(file);
      }
      return out;
    };
    const cold = await seedFresh('bench/cold', 'c', o.only.has('cold') ? o.runs : 0);
    const fan = await seedFresh('bench/fanin', 'f', o.only.has('fanin') ? o.runs : 0);
    // With --profile, one more fresh blob for a profiled cold pull.
    const profileCold = await seedFresh('bench/profile', 'p', o.profile ? 1 : 0);
    await run('sync', []);
    log(`seeded ${2 + cold.length + fan.length + profileCold.length} images (${(blobBytes / MiB).toFixed(0)} MiB layers; manifest ${man.manifest.length} bytes)`);

    // airlock: the upstream, and pins for everything (a tag pin for the manifest series).
    const configPath = path.join(dataDir, 'airlock.yaml');
    const pins = [
      `${UPSTREAM_NAME}/bench/big@${big.digest}`,
      `${UPSTREAM_NAME}/bench/manifest:v1@${man.digest}`,
      ...cold.map((i) => `${UPSTREAM_NAME}/bench/cold@${i.digest}`),
      ...fan.map((i) => `${UPSTREAM_NAME}/bench/fanin@${i.digest}`),
      ...profileCold.map((i) => `${UPSTREAM_NAME}/bench/profile@${i.digest}`),
    ];
    fs.writeFileSync(
      configPath,
      YAML.stringify({
        listen: '127.0.0.1:0',
        dataDir: '.',
        tls: { cert: 'pki/server.crt', key: 'pki/server.key', clientCa: 'pki/ca.crt' },
        signing: { key: 'keys/mirror.key' },
        upstreams: [{ name: UPSTREAM_NAME, url: upstream.url, ca: upCa.certPath }],
        defaultUpstream: UPSTREAM_NAME,
        policy: { pins, publishers: [] },
        cache: { maxBytes: '64GiB' },
        log: { level: 'info' },
      }),
    );
    const airlockEnv = { ...process.env, AIRLOCK_KEY_PASSWORD: '' };
    const airlockLog = path.join(tmp, 'logs', 'airlock.log');
    const startAirlock = (extra: string[] = []): Promise<Server> =>
      startAirlockProcess({ name: 'airlock', command: [...extra, ...command], configPath, cwd: ROOT, env: airlockEnv, logPath: airlockLog, probe: client });
    let airlock = await startAirlock();
    log(`airlock on ${airlock.url}, pid ${airlock.pid} (${command.join(' ')})`);
    const rssAll = new MemorySampler(airlock.pid, 100);
    rssAll.start();

    // Warm airlock: every manifest once (admission, signing), then the warm blob into the cache.
    for (const img of [big, man, ...cold, ...fan, ...profileCold]) {
      const r = await tlsGet(`${airlock.url}/v2/${img.repo}/manifests/${img.digest}`, client, { accept: MANIFEST_ACCEPT });
      if (r.status !== 200 || !r.body.equals(img.manifest)) throw new Error(`airlock did not serve ${img.repo}@${img.digest}: ${r.status} ${r.body.toString().slice(0, 300)}`);
    }
    const byTag = await tlsGet(`${airlock.url}/v2/${man.repo}/manifests/v1`, client, { accept: MANIFEST_ACCEPT });
    if (byTag.status !== 200 || !byTag.body.equals(man.manifest)) throw new Error(`airlock did not serve the pinned tag: ${byTag.status}`);
    const blobPath = `/v2/${big.repo}/blobs/${warmBlob.digest}`;
    await load<BlobResult>(blobJob(airlock, blobPath, client, 1, blobBytes));
    await waitFor(() => fs.existsSync(cachePath(dataDir, warmBlob.digest)), { timeoutMs: 30_000, what: 'the warm blob in airlock cache' });
    if (hashFile(cachePath(dataDir, warmBlob.digest)) !== warmBlob.digest) throw new Error('airlock cached the warm blob with the wrong content');
    for (const img of [...cold, ...fan, ...profileCold]) {
      const d = img.layers[0]?.digest ?? '';
      if (fs.existsSync(cachePath(dataDir, d))) throw new Error(`${img.repo}:${img.tag} was cached before its cold run`);
    }

    // The references: nginx on the same file, the CNCF registry with mutual TLS on the upstream's storage, a
    // pull-through CNCF registry, and bare Fastify returning the manifest bytes; all with airlock's certificates.
    const nginx = await startNginx({ dir: path.join(tmp, 'nginx'), root: nginxRoot, cert: serverCert, key: serverKey, clientCa: caCert, probe: client });
    const registry = await startCncfRegistry({ name: 'registry-mtls', dir: path.join(tmp, 'registry-mtls'), dataDir: upstreamData, cert: serverCert, key: serverKey, clientCas: [caCert], probe: client });
    const proxy = await startCncfRegistry({
      name: 'registry-proxy',
      dir: path.join(tmp, 'registry-proxy'),
      dataDir: path.join(tmp, 'registry-proxy', 'data'),
      cert: serverCert,
      key: serverKey,
      clientCas: [caCert],
      proxyRemoteUrl: upstream.url,
      trustBundle: upCa.certPath,
      probe: client,
    });
    const manifestFile = path.join(tmp, 'bare', 'manifest.json');
    fs.mkdirSync(path.dirname(manifestFile), { recursive: true });
    fs.writeFileSync(manifestFile, man.manifest);
    const bare = await startBare({
      dir: path.join(tmp, 'bare'),
      root: ROOT,
      cert: serverCert,
      key: serverKey,
      clientCa: caCert,
      bodyPath: manifestFile,
      headers: { 'content-type': man.mediaType, 'docker-content-digest': man.digest, etag: `"${man.digest}"`, 'docker-distribution-api-version': 'registry/2.0' },
      probe: client,
    });
    const ciphers = new Set<string>();
    for (const s of [airlock, nginx, registry, bare]) ciphers.add(await negotiated(s, client));
    log(`references: nginx pid ${nginx.pid}, registry (mTLS) pid ${registry.pid}, registry (proxy) pid ${proxy.pid}, bare pid ${bare.pid}; TLS ${[...ciphers].join(', ')}`);

    const results: Results = emptyResults(
      info,
      {
        quick: o.quick,
        runs: o.runs,
        blobBytes,
        manifestBytes: man.manifest.length,
        manifestSeconds: manifestMs / 1000,
        connections: CONNECTIONS,
        airlockCommand: `node ${command.map((c) => path.relative(ROOT, c) || c).join(' ')} serve`,
        loadGenerator: 'scripts/bench/load.ts (undici Client per blob download, Pool for manifests, pipelining 1, dispatch API: bodies counted as they arrive, never buffered)',
        tls: `${[...ciphers].join(', ')} with client certificates (mutual TLS) everywhere except the plain-TLS upstream`,
      },
      notes,
    );
    // measure runs a load job while watching other processes' CPU use; a repeatable job disturbed by them runs again
    // (while the time budget allows) and the least disturbed attempt counts.
    // lastMachineCpuMs is the CPU the whole machine used during the attempt of the last measurement that counted.
    let retryLeftMs = o.quick ? RETRY_BUDGET_MS.quick : RETRY_BUDGET_MS.full;
    let lastMachineCpuMs = 0;
    const measure = async <T extends LoadResult>(what: string, job: LoadJob, repeatable: boolean): Promise<T> => {
      let best: { result: T; otherCpus: number; machineCpuMs: number } | null = null;
      let attempts = 0;
      let lastMs = 0;
      while (attempts < MAX_ATTEMPTS) {
        if (attempts > 0) retryLeftMs -= lastMs;
        attempts++;
        const t0 = Date.now();
        const watch = new CpuWatch();
        const result = await load<T>(job);
        const otherCpus = watch.otherCpus();
        const machineCpuMs = watch.machineCpuMs();
        lastMs = Date.now() - t0;
        if (best === null || otherCpus < best.otherCpus) best = { result, otherCpus, machineCpuMs };
        if (!repeatable || otherCpus <= MAX_OTHER_CPUS || retryLeftMs < lastMs || Date.now() - started > softBudgetMs) break;
      }
      if (best === null) throw new Error(`no result for ${what}`);
      results.interference.push({ what, otherCpus: best.otherCpus, attempts });
      lastMachineCpuMs = best.machineCpuMs;
      return best.result;
    };
    let hwmWorks = true;
    const measurePeak = async <T>(fn: () => Promise<T>): Promise<T> => {
      hwmWorks = resetPeakMemory(airlock.pid) && hwmWorks;
      const sampler = new MemorySampler(airlock.pid, 50);
      sampler.start();
      try {
        return await fn();
      } finally {
        sampler.stop();
        const m = readMemory(airlock.pid);
        results.memory.peakBytes.push(Math.max(sampler.maxRssBytes, hwmWorks && m !== null ? m.hwmBytes : 0));
      }
    };

    // 1. Warm blob throughput; the servers take turns within each run.
    const warmTargets = [
      ['airlock', airlock, blobPath],
      ['nginx', nginx, '/blob'],
      ['registry', registry, blobPath],
    ] as const;
    if (o.only.has('warm')) for (const [, s, p] of warmTargets) await load<BlobResult>(blobJob(s, p, client, 1, blobBytes));
    for (let i = 0; o.only.has('warm') && i < o.runs; i++) {
      for (let k = 0; k < warmTargets.length; k++) {
        const [name, s, p] = warmTargets[(i + k) % warmTargets.length] ?? warmTargets[0];
        const one = await measure<BlobResult>(`warm ${name} 1 client, run ${i + 1}`, blobJob(s, p, client, 1, blobBytes, WARM_ROUNDS), true);
        const job8 = blobJob(s, p, client, 8, blobBytes);
        const what8 = `warm ${name} 8 clients, run ${i + 1}`;
        const eight = name === 'airlock' ? await measurePeak(() => measure<BlobResult>(what8, job8, true)) : await measure<BlobResult>(what8, job8, true);
        results.warm[name].c1.push(one.mbPerSec);
        results.warm[name].c8.push(eight.mbPerSec);
      }
      log(`warm run ${i + 1}/${o.runs}: 1 client ${(['airlock', 'nginx', 'registry'] as const).map((n) => `${n} ${results.warm[n].c1[i]?.toFixed(0)}`).join(', ')} MB/s; 8 clients ${(['airlock', 'nginx', 'registry'] as const).map((n) => `${n} ${results.warm[n].c8[i]?.toFixed(0)}`).join(', ')} MB/s`);
    }

    // 2. Manifest requests over 64 keep-alive connections.
    const digestPath = `/v2/${man.repo}/manifests/${man.digest}`;
    const tagPath = `/v2/${man.repo}/manifests/v1`;
    // The servers alternate: a series that follows a slice on its own server ran about 5 % faster than one that
    // follows another server (docs/performance.md), and the bare server always follows another.
    const series = [
      ['airlockDigest', airlock, digestPath],
      ['registryDigest', registry, digestPath],
      ['bare', bare, tagPath],
      ['airlockTag', airlock, tagPath],
      ['registryTag', registry, tagPath],
    ] as const;
    const manifestJob = (s: Server, p: string, ms: number): LoadJob => ({
      mode: 'requests',
      origin: s.url,
      path: p,
      tls: client,
      connections: CONNECTIONS,
      warmupMs,
      durationMs: ms,
      headers: { accept: MANIFEST_ACCEPT },
      expectBytes: man.manifest.length,
    });
    // Within each run the series take turns in slices of MANIFEST_SLICE_MS, in the order above, round after round, each
    // over its own connections (opened once per run): this machine speeds up and slows down for seconds at a time, and
    // short turns spread those phases over all five series instead of onto whichever was running.
    const interleaveJob: LoadJob = {
      mode: 'interleave',
      series: series.map(([name, s, p]) => ({ name, origin: s.url, path: p })),
      tls: client,
      connections: CONNECTIONS,
      warmupMs: MANIFEST_SLICE_WARMUP_MS,
      sliceMs: MANIFEST_SLICE_MS,
      slices: Math.max(1, Math.round(manifestMs / MANIFEST_SLICE_MS)),
      headers: { accept: MANIFEST_ACCEPT },
      expectBytes: man.manifest.length,
    };
    for (let i = 0; o.only.has('manifests') && i < o.runs; i++) {
      const r = await measure<InterleaveResult>(`manifests, run ${i + 1}`, interleaveJob, true);
      for (const [name] of series) {
        const one = r.series[name];
        if (one === undefined) throw new Error(`the load generator returned no figures for ${name}`);
        if (one.errors > 0) notes.push(`manifest ${name} run ${i + 1}: ${one.errors} failed or short responses (${JSON.stringify(one.statuses)})`);
        results.manifests[name].push(one);
      }
      log(`manifest run ${i + 1}/${o.runs}: ${series.map(([n]) => `${n} ${results.manifests[n][i]?.rps.toFixed(0)}/s p99 ${results.manifests[n][i]?.p99Ms.toFixed(1)}ms`).join(', ')}`);
    }

    // settle waits until the servers are idle and then flushes the cache writes, so neither the registry proxy's own
    // cache fill (it goes on after its client has every byte) nor write-back lands in the next measurement.
    const settle = async (before: string): Promise<void> => {
      const q = await waitQuiet([upstream.pid, airlock.pid, proxy.pid]);
      if (!q.quiet) notes.push(`before ${before}: the servers were still busy after ${(q.ms / 1000).toFixed(0)} s of waiting`);
      else if (q.ms > 1000) log(`waited ${(q.ms / 1000).toFixed(1)} s for the servers to go idle before ${before}`);
      await run('sync', []);
    };

    // 3. Cold pull-through: a fresh blob per run, fetched directly, through airlock, and through the registry proxy.
    // Each measurement starts with the servers idle and the previous one's cache writes flushed.
    for (let i = 0; o.only.has('cold') && i < o.runs; i++) {
      await settle(`cold run ${i + 1}`);
      const img = cold[i];
      const d = img?.layers[0]?.digest;
      if (img === undefined || d === undefined) throw new Error('missing cold image');
      const p = `/v2/${img.repo}/blobs/${d}`;
      const direct = await measure<BlobResult>(`cold direct, run ${i + 1}`, blobJob(upstream, p, upTls, 1, blobBytes), true);
      results.coldMachineCpu.direct.push(lastMachineCpuMs);
      if (fs.existsSync(cachePath(dataDir, d))) throw new Error(`cold blob ${d} was already cached`);
      await settle(`cold airlock, run ${i + 1}`);
      const airlockCpu = threadCpu(airlock.pid);
      const viaAirlock = await measure<BlobResult>(`cold airlock, run ${i + 1}`, blobJob(airlock, p, client, 1, blobBytes), false);
      results.coldCpu.airlock.push(cpuSince(airlock.pid, airlockCpu));
      results.coldMachineCpu.airlock.push(lastMachineCpuMs);
      await settle(`cold registry proxy, run ${i + 1}`);
      const proxyCpu = threadCpu(proxy.pid);
      const viaProxy = await measure<BlobResult>(`cold registry proxy, run ${i + 1}`, blobJob(proxy, p, client, 1, blobBytes), false);
      results.coldMachineCpu.registryProxy.push(lastMachineCpuMs);
      // The proxy's CPU includes the cache fill it goes on with after its client has the blob.
      await waitQuiet([proxy.pid]);
      results.coldCpu.registryProxy.push(cpuSince(proxy.pid, proxyCpu));
      results.cold.direct.push(direct.seconds);
      results.cold.airlock.push(viaAirlock.seconds);
      results.cold.registryProxy.push(viaProxy.seconds);
      log(`cold run ${i + 1}/${o.runs}: direct ${direct.seconds.toFixed(2)} s, airlock ${viaAirlock.seconds.toFixed(2)} s, registry proxy ${viaProxy.seconds.toFixed(2)} s`);
    }

    // 4. Fan-in: eight concurrent cold pulls of one fresh blob; count the GETs of it that reach the upstream.
    for (let i = 0; o.only.has('fanin') && i < o.runs; i++) {
      await settle(`fan-in run ${i + 1}`);
      const img = fan[i];
      const d = img?.layers[0]?.digest;
      if (img === undefined || d === undefined) throw new Error('missing fan-in image');
      const p = `/v2/${img.repo}/blobs/${d}`;
      const before = countUpstreamGets(upstream.logPath, p);
      const viaAirlock = await measurePeak(() => measure<BlobResult>(`fan-in airlock, run ${i + 1}`, blobJob(airlock, p, client, FAN_IN, blobBytes), false));
      const airlockGets = await settledGets(upstream.logPath, p, before);
      results.fanIn.airlock.seconds.push(viaAirlock.seconds);
      results.fanIn.airlock.upstreamGets.push(airlockGets);
      let proxyNote = '';
      if (i < PROXY_FAN_IN_RUNS) {
        const mid = countUpstreamGets(upstream.logPath, p);
        await settle(`fan-in registry proxy, run ${i + 1}`);
        const viaProxy = await measure<BlobResult>(`fan-in registry proxy, run ${i + 1}`, blobJob(proxy, p, client, FAN_IN, blobBytes), false);
        const proxyGets = await settledGets(upstream.logPath, p, mid);
        results.fanIn.registryProxy.seconds.push(viaProxy.seconds);
        results.fanIn.registryProxy.upstreamGets.push(proxyGets);
        proxyNote = `; registry proxy ${viaProxy.seconds.toFixed(2)} s, ${proxyGets} upstream GET(s)`;
      }
      log(`fan-in run ${i + 1}/${o.runs}: airlock ${viaAirlock.seconds.toFixed(2)} s, ${airlockGets} upstream GET(s)${proxyNote}`);
    }
    rssAll.stop();
    results.memory.processPeakBytes = Math.max(rssAll.maxRssBytes, readMemory(airlock.pid)?.hwmBytes ?? 0);
    results.memory.method = hwmWorks ? 'VmHWM reset before each 8-client run (clear_refs 5), and VmRSS sampled every 50 ms' : 'VmRSS sampled every 50 ms (resetting VmHWM was refused)';
    notes.push(
      `airlock's peak RSS over the whole benchmark (manifest runs included): ${(results.memory.processPeakBytes / MiB).toFixed(0)} MiB` +
        (results.memory.peakBytes.length > 0 ? `; during 8-client runs: ${results.memory.peakBytes.map((b) => (b / MiB).toFixed(0)).join(', ')} MiB (${results.memory.method}).` : '.'),
    );

    // 5. Profiles: airlock again under --cpu-prof, once each for the warm blob, a cold pull and manifests by tag.
    if (o.profile) {
      const profRoot = path.join(RESULTS, 'prof', stamp);
      const sessions = [
        {
          label: `warm ${(blobBytes / MiB).toFixed(0)} MiB blob, 1 client then 8 clients`,
          dir: path.join(profRoot, 'blob'),
          work: async (s: Server) => {
            await load<BlobResult>(blobJob(s, blobPath, client, 1, blobBytes));
            await load<BlobResult>(blobJob(s, blobPath, client, 8, blobBytes));
          },
        },
        {
          label: `cold ${(blobBytes / MiB).toFixed(0)} MiB pull-through, 1 client`,
          dir: path.join(profRoot, 'cold'),
          work: async (s: Server) => {
            const img = profileCold[0];
            const d = img?.layers[0]?.digest;
            if (img === undefined || d === undefined) throw new Error('missing the image for the cold profile');
            await run('sync', []);
            await load<BlobResult>(blobJob(s, `/v2/${img.repo}/blobs/${d}`, client, 1, blobBytes));
          },
        },
        {
          label: `manifest by pinned tag, ${CONNECTIONS} connections, ${manifestMs / 1000} s`,
          dir: path.join(profRoot, 'manifest'),
          work: async (s: Server) => {
            await load<RequestsResult>(manifestJob(s, tagPath, manifestMs));
          },
        },
      ];
      await airlock.stop();
      for (const session of sessions) {
        airlock = await startAirlock(['--cpu-prof', `--cpu-prof-dir=${session.dir}`]);
        await session.work(airlock);
        await airlock.stop();
        results.profiles.push(summariseProfile(findProfile(session.dir), session.label, ROOT, 15, airlock.startupMs));
        log(`profiled ${session.label}: ${path.relative(ROOT, session.dir)}`);
      }
    }

    info.otherCpus = whole.otherCpus();
    const repeated = results.interference.filter((x) => x.attempts > 1).length;
    const disturbed = results.interference.filter((x) => x.otherCpus > MAX_OTHER_CPUS);
    if (repeated > 0 || disturbed.length > 0) {
      notes.push(
        `Other processes on the machine disturbed some measurements: ${repeated} were repeated (up to ${MAX_ATTEMPTS} attempts while the ${((o.quick ? RETRY_BUDGET_MS.quick : RETRY_BUDGET_MS.full) / 1000).toFixed(0)} s allowance for repeats lasted, keeping the least disturbed one), ` +
          `and ${disturbed.length} of ${results.interference.length} still ran while others used more than ${MAX_OTHER_CPUS} CPUs (worst ${Math.max(...results.interference.map((x) => x.otherCpus)).toFixed(2)}); see interference in the JSON.`,
      );
    }
    if (info.otherCpus > 0.1) {
      notes.unshift(
        `The machine was not idle: other processes kept ${info.otherCpus.toFixed(2)} of ${info.nproc} CPUs busy on average (load average ${info.loadAverage.toFixed(2)} at the start), so the figures are lower and noisier than on an idle machine.`,
      );
    }
    const { checks, markdown } = evaluate(results);
    fs.mkdirSync(RESULTS, { recursive: true });
    const jsonPath = path.join(RESULTS, `bench-${stamp}.json`);
    const mdPath = path.join(RESULTS, `bench-${stamp}.md`);
    fs.writeFileSync(jsonPath, `${JSON.stringify({ ...results, checks }, null, 2)}\n`);
    fs.writeFileSync(mdPath, `${markdown}\n`);
    console.log(markdown);
    log(`wrote ${path.relative(ROOT, jsonPath)} and ${path.relative(ROOT, mdPath)}`);
    finished = true;
  } finally {
    await stopEverything();
    if (o.keep || !finished) {
      // The blobs are most of the space; the logs and configs stay for a look at what went wrong.
      for (const d of ['seed', 'nginx-root', path.join('upstream', 'data'), path.join('registry-proxy', 'data'), path.join('airlock', 'blobs')]) {
        fs.rmSync(path.join(tmp, d), { recursive: true, force: true });
      }
      log(`kept ${tmp} (logs and configs; blobs removed)`);
    } else {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    clearTimeout(watchdog);
  }
}

// tmpRoot is the run's temporary directory, removed also when the benchmark is interrupted.
let tmpRoot: string | null = null;

function interrupted(reason: string, code: number): void {
  log(`${reason}: stopping everything`);
  void stopEverything().finally(() => {
    if (tmpRoot !== null) fs.rmSync(tmpRoot, { recursive: true, force: true });
    process.exit(code);
  });
}

process.on('SIGINT', () => interrupted('SIGINT', 130));
process.on('SIGTERM', () => interrupted('SIGTERM', 143));

main().catch((err: Error) => {
  log(`failed: ${err.stack ?? err.message}`);
  process.exit(1);
});
