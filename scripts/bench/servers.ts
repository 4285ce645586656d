// The servers the benchmark compares: airlock, nginx, the CNCF registry (plain, mutual TLS, proxy mode) and a bare
// Fastify server. Each runs as a child process with its output going straight to a log file (never through this
// process), bound to 127.0.0.1, and is stopped by its PID.
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import YAML from 'yaml';
import { freePort, StopWaiting, waitFor } from '../../test/harness/proc.js';
import { type Child, NODE_FLAGS, spawnLogged } from './procs.js';

const REGISTRY_BIN = '/usr/bin/docker-registry';
const NGINX_BIN = '/usr/sbin/nginx';

/** TlsFiles are PEM file paths for a TLS endpoint: the CA that signed the server, and optionally a client pair. */
export interface TlsFiles {
  ca: string;
  cert?: string;
  key?: string;
}

/** Server is a running child process serving HTTPS on 127.0.0.1. */
export interface Server {
  readonly name: string;
  readonly pid: number;
  readonly url: string;
  readonly port: number;
  readonly logPath: string;
  readonly exited: Promise<number | null>;
  /** startupMs is the time from spawning the process until it answered. */
  readonly startupMs: number;
  running(): boolean;
  stop(): Promise<void>;
}

/** tlsGet sends one GET with the given TLS files and returns the status, headers and body (for small responses). */
export function tlsGet(url: string, tlsFiles: TlsFiles, headers: Record<string, string> = {}, timeoutMs = 5000): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: 'GET',
        headers,
        agent: false,
        timeout: timeoutMs,
        ca: fs.readFileSync(tlsFiles.ca),
        cert: tlsFiles.cert === undefined ? undefined : fs.readFileSync(tlsFiles.cert),
        key: tlsFiles.key === undefined ? undefined : fs.readFileSync(tlsFiles.key),
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

function tail(file: string, bytes = 3000): string {
  try {
    return readFrom(file, Math.max(0, fs.statSync(file).size - bytes));
  } catch {
    return '';
  }
}

async function waitReady(name: string, child: Child, logPath: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  try {
    await waitFor(
      async () => {
        if (!child.running()) throw new StopWaiting(`${name} exited before it was ready:\n${tail(logPath)}`);
        return probe();
      },
      { timeoutMs, what: `${name} to answer` },
    );
  } catch (err) {
    await child.stop();
    throw err;
  }
}

function asServer(name: string, child: Child, port: number, logPath: string, startupMs: number): Server {
  return {
    startupMs,
    name,
    pid: child.pid,
    url: `https://127.0.0.1:${port}`,
    port,
    logPath,
    exited: child.exited,
    running: child.running,
    stop: () => child.stop(),
  };
}

/** RegistryServerOptions configures startCncfRegistry. */
export interface RegistryServerOptions {
  name: string;
  dir: string;
  /** dataDir is the storage root; two registries may share one for reading. */
  dataDir: string;
  cert: string;
  key: string;
  /** clientCas turns on mutual TLS with these CAs. */
  clientCas?: string[];
  /** proxyRemoteUrl runs the registry as a pull-through cache of that remote. */
  proxyRemoteUrl?: string;
  /** trustBundle is an SSL_CERT_FILE for the registry's own outgoing TLS (the proxied remote's CA). */
  trustBundle?: string;
  /** probe is the TLS material used to check readiness (a client pair when clientCas is set). */
  probe: TlsFiles;
}

/** startCncfRegistry starts docker-registry 2.8 with the filesystem driver, TLS, info logs, and waits for /v2/. */
export async function startCncfRegistry(o: RegistryServerOptions): Promise<Server> {
  fs.mkdirSync(o.dir, { recursive: true });
  fs.mkdirSync(o.dataDir, { recursive: true });
  const port = await freePort();
  const tls: Record<string, unknown> = { certificate: o.cert, key: o.key };
  if (o.clientCas !== undefined) tls.clientcas = o.clientCas;
  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: 'info', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: o.dataDir },
      delete: { enabled: true },
      cache: { blobdescriptor: 'inmemory' },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: `127.0.0.1:${port}`, secret: 'airlock-bench-secret', tls },
    health: { storagedriver: { enabled: false } },
  };
  if (o.proxyRemoteUrl !== undefined) config.proxy = { remoteurl: o.proxyRemoteUrl };
  const configPath = path.join(o.dir, 'config.yml');
  fs.writeFileSync(configPath, YAML.stringify(config));
  const logPath = path.join(o.dir, `${o.name}.log`);
  const env = { ...process.env, ...(o.trustBundle === undefined ? {} : { SSL_CERT_FILE: o.trustBundle }) };
  const t0 = Date.now();
  const child = spawnLogged(REGISTRY_BIN, ['serve', configPath], { logPath, cwd: o.dir, env });
  const url = `https://127.0.0.1:${port}/v2/`;
  await waitReady(o.name, child, logPath, async () => (await tlsGet(url, o.probe, {}, 1000)).status === 200);
  return asServer(o.name, child, port, logPath, Date.now() - t0);
}

/** NginxOptions configures startNginx. */
export interface NginxOptions {
  dir: string;
  root: string;
  cert: string;
  key: string;
  clientCa: string;
  probe: TlsFiles;
}

/** startNginx runs nginx in the foreground serving root over TLS 1.3 with `ssl_verify_client on` and sendfile. */
export async function startNginx(o: NginxOptions): Promise<Server> {
  fs.mkdirSync(o.dir, { recursive: true });
  const port = await freePort();
  const conf = path.join(o.dir, 'nginx.conf');
  fs.writeFileSync(
    conf,
    `daemon off;
user root;
worker_processes auto;
pid ${path.join(o.dir, 'nginx.pid')};
error_log ${path.join(o.dir, 'error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types { application/octet-stream bin; }
  default_type application/octet-stream;
  client_body_temp_path ${path.join(o.dir, 'tmp')};
  proxy_temp_path ${path.join(o.dir, 'tmp')};
  fastcgi_temp_path ${path.join(o.dir, 'tmp')};
  uwsgi_temp_path ${path.join(o.dir, 'tmp')};
  scgi_temp_path ${path.join(o.dir, 'tmp')};
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${o.cert};
    ssl_certificate_key ${o.key};
    ssl_client_certificate ${o.clientCa};
    ssl_verify_client on;
    location / { root ${o.root}; }
  }
}
`,
  );
  fs.mkdirSync(path.join(o.dir, 'tmp'), { recursive: true });
  const logPath = path.join(o.dir, 'nginx.log');
  const t0 = Date.now();
  const child = spawnLogged(NGINX_BIN, ['-c', conf, '-p', o.dir, '-e', path.join(o.dir, 'error.log')], { logPath, cwd: o.dir });
  const url = `https://127.0.0.1:${port}/`;
  await waitReady('nginx', child, logPath, async () => (await tlsGet(url, o.probe, {}, 1000)).status > 0);
  return asServer('nginx', child, port, logPath, Date.now() - t0);
}

// readFrom reads a file from a byte offset to its end.
function readFrom(file: string, offset: number): string {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.max(0, size - offset));
    fs.readSync(fd, buf, 0, buf.length, offset);
    return buf.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/** AirlockProcessOptions configures startAirlockProcess. */
export interface AirlockProcessOptions {
  name: string;
  /** command is the node argv before `serve --config FILE` (the node flags and the main script). */
  command: string[];
  configPath: string;
  cwd: string;
  env: NodeJS.ProcessEnv;
  logPath: string;
  probe: TlsFiles;
}

/** startAirlockProcess runs `airlock serve --config FILE` as a child and waits for its "listening on" line. */
export async function startAirlockProcess(o: AirlockProcessOptions): Promise<Server> {
  const start = fs.existsSync(o.logPath) ? fs.statSync(o.logPath).size : 0;
  const t0 = Date.now();
  const child = spawnLogged(process.execPath, [...o.command, 'serve', '--config', o.configPath], { logPath: o.logPath, cwd: o.cwd, env: o.env });
  let port = 0;
  await waitReady(o.name, child, o.logPath, async () => {
    if (port === 0) {
      // Only what this process wrote: after manifest runs the log holds a line per request, gigabytes of them.
      const text = readFrom(o.logPath, start);
      const m = /airlock listening on https:\/\/127\.0\.0\.1:([0-9]+)/.exec(text);
      if (!m) return false;
      port = Number(m[1]);
    }
    return (await tlsGet(`https://127.0.0.1:${port}/v2/`, o.probe, {}, 1000)).status === 200;
  });
  return asServer(o.name, child, port, o.logPath, Date.now() - t0);
}

/** BareOptions configures startBare. */
export interface BareOptions {
  dir: string;
  /** root is the repository root: the working directory, so `--import tsx` resolves. */
  root: string;
  cert: string;
  key: string;
  clientCa: string;
  bodyPath: string;
  headers: Record<string, string>;
  probe: TlsFiles;
}

/** startBare runs scripts/bench/bare.ts: a Fastify HTTPS server with mutual TLS that answers every GET with one body. */
export async function startBare(o: BareOptions): Promise<Server> {
  fs.mkdirSync(o.dir, { recursive: true });
  const port = await freePort();
  const spec = path.join(o.dir, 'bare.json');
  fs.writeFileSync(spec, JSON.stringify({ port, cert: o.cert, key: o.key, clientCa: o.clientCa, bodyPath: o.bodyPath, headers: o.headers }));
  const logPath = path.join(o.dir, 'bare.log');
  const script = path.join(import.meta.dirname, 'bare.ts');
  const t0 = Date.now();
  const child = spawnLogged(process.execPath, [...NODE_FLAGS, '--import', 'tsx', script, spec], { logPath, cwd: o.root });
  await waitReady('bare', child, logPath, async () => (await tlsGet(`https://127.0.0.1:${port}/`, o.probe, {}, 1000)).status === 200);
  return asServer('bare', child, port, logPath, Date.now() - t0);
}

/** MemoryStatus is the resident set of a process: now and its peak. */
export interface MemoryStatus {
  rssBytes: number;
  hwmBytes: number;
}

/** readMemory reads VmRSS and VmHWM from /proc/<pid>/status, or null when the process is gone. */
export function readMemory(pid: number): MemoryStatus | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kib = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+([0-9]+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rssBytes: kib('VmRSS'), hwmBytes: kib('VmHWM') };
}

/** resetPeakMemory resets VmHWM to the current RSS (writing 5 to clear_refs); false when the kernel refuses. */
export function resetPeakMemory(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** MemorySampler polls a process's RSS while a measurement runs, as a cross-check of VmHWM. */
export class MemorySampler {
  private timer: NodeJS.Timeout | undefined;
  maxRssBytes = 0;

  constructor(private readonly pid: number, private readonly intervalMs = 50) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.sample();
  }

  private sample(): void {
    const m = readMemory(this.pid);
    if (m !== null && m.rssBytes > this.maxRssBytes) this.maxRssBytes = m.rssBytes;
  }
}
