// Real registry clients for tests: skopeo, containerd with ctr, and podman, each confined to a scratch folder,
// plus readers for what they pulled and for airlock's JSON request log.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { requireTool, run, startProcess, StopWaiting, waitFor, type Proc, type RunResult } from './proc.js';

const SKOPEO = '/usr/bin/skopeo';
const CONTAINERD = '/usr/bin/containerd';
const CTR = '/usr/bin/ctr';
const PODMAN = '/usr/bin/podman';
const RUN_CONTAINERD = '/run/containerd';
const PODMAN_RUN_DIRS = ['/run/containers', '/run/runc'];
const CGROUP_ROOT = '/sys/fs/cgroup';

/** ClientRun is a finished client command with its wall-clock duration. */
export interface ClientRun extends RunResult {
  ms: number;
}

/** SkopeoOptions configures skopeoPull. */
export interface SkopeoOptions {
  /** certDir is a certs.d-layout folder (ca.crt, client.cert, client.key) for the source registry. */
  certDir: string;
  /** scratch receives skopeo's temporary files and an empty registries.conf. */
  scratch: string;
  all?: boolean;
  overrideArch?: string;
  timeoutMs?: number;
}

/** BlobFile is one blob a client wrote, with the sha256 of the bytes on disk. */
export interface BlobFile {
  name: string;
  digest: string;
}

/** DirImage is what `skopeo copy … dir:DIR` wrote: the top manifest, per-instance manifests and blobs, hashed. */
export interface DirImage {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  /** instances maps the digest of each `<hex>.manifest.json` (lists copied with --all) to its bytes. */
  instances: Map<string, Buffer>;
  /** blobs maps the file name's digest (`sha256:<name>`) to the sha256 of the file's bytes. */
  blobs: Map<string, string>;
}

/** ImageManifest is the part of an image manifest the tests compare. */
export interface ImageManifest {
  mediaType?: string;
  config: { digest: string; size: number };
  layers: { digest: string; size: number }[];
}

/** ImageIndex is the part of an image index the tests compare. */
export interface ImageIndex {
  mediaType?: string;
  manifests: { digest: string; mediaType: string; platform?: { architecture: string; os: string } }[];
}

/** RequestLine is one `request` line of airlock's JSON log. */
export interface RequestLine {
  method: string;
  path: string;
  status: number | string;
  repo?: string | null;
  ref?: string | null;
  digest?: string | null;
  decision?: string | null;
  source?: string | null;
  actor?: string | null;
  serial?: string | null;
  reason?: string | null;
  time: number;
}

/** sha256Of is the OCI digest of bytes. */
export function sha256Of(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function timed(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<ClientRun> {
  const started = performance.now();
  const result = await run(cmd, args, { env: opts.env, timeoutMs: opts.timeoutMs ?? 60_000 });
  return { ...result, ms: Math.round(performance.now() - started) };
}

/** describeRun formats a command's outcome for assertion messages. */
export function describeRun(r: RunResult): string {
  return `exit ${String(r.code)}${r.timedOut ? ' (timed out)' : ''}\nstdout: ${r.stdout.trim()}\nstderr: ${r.stderr.trim()}`;
}

/** skopeoPull copies `docker://<ref>` to dest (`dir:…` or `oci:…`) with a client certificate, keeping digests unchanged. */
export async function skopeoPull(ref: string, dest: string, opts: SkopeoOptions): Promise<ClientRun> {
  requireTool(SKOPEO);
  fs.mkdirSync(opts.scratch, { recursive: true });
  const registriesConf = path.join(opts.scratch, 'registries.conf');
  if (!fs.existsSync(registriesConf)) fs.writeFileSync(registriesConf, 'unqualified-search-registries = []\n');
  const global = ['--insecure-policy', '--tmpdir', opts.scratch];
  if (opts.overrideArch !== undefined) global.push('--override-arch', opts.overrideArch, '--override-os', 'linux');
  const args = [...global, 'copy', '--quiet', '--preserve-digests', '--src-cert-dir', opts.certDir, '--src-tls-verify=true', '--src-no-creds'];
  if (opts.all === true) args.push('--all');
  args.push(`docker://${ref}`, dest);
  const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: registriesConf };
  return timed(SKOPEO, args, { env, timeoutMs: opts.timeoutMs });
}

/** readDirImage reads a `dir:` copy and hashes every file in it. */
export function readDirImage(dir: string): DirImage {
  const bytes = fs.readFileSync(path.join(dir, 'manifest.json'));
  const doc = JSON.parse(bytes.toString()) as { mediaType?: string };
  const instances = new Map<string, Buffer>();
  const blobs = new Map<string, string>();
  for (const name of fs.readdirSync(dir)) {
    const file = fs.readFileSync(path.join(dir, name));
    if (/^[a-f0-9]{64}\.manifest\.json$/.test(name)) instances.set(sha256Of(file), file);
    else if (/^[a-f0-9]{64}$/.test(name)) blobs.set(`sha256:${name}`, sha256Of(file));
  }
  return { digest: sha256Of(bytes), mediaType: doc.mediaType ?? '', bytes, instances, blobs };
}

/** readRequestLog returns the `request` lines of airlock's pino log, oldest first. */
export function readRequestLog(logPath: string): RequestLine[] {
  if (!fs.existsSync(logPath)) throw new Error(`no airlock log at ${logPath}`);
  const lines: RequestLine[] = [];
  for (const raw of fs.readFileSync(logPath, 'utf8').split('\n')) {
    if (!raw.startsWith('{')) continue;
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (doc.msg === 'request' && typeof doc.path === 'string' && typeof doc.method === 'string') lines.push(doc as unknown as RequestLine);
  }
  return lines;
}

/** unmountUnder lazily unmounts every mount point below dir, deepest first, so a scratch folder can be removed safely. */
export async function unmountUnder(dir: string): Promise<string[]> {
  const root = `${path.resolve(dir)}/`;
  const points = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && `${p}/`.startsWith(root))
    .map((p) => p.replace(/\\040/g, ' '))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('/bin/umount', ['-l', p]);
  return points;
}

/** listDirs lists a folder and every folder below it (empty when it does not exist). */
export function listDirs(root: string): Set<string> {
  const found = new Set<string>();
  const walk = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    found.add(d);
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
  };
  walk(root);
  return found;
}

/** removeNewEmptyDirs removes, deepest first, the folders under root that were not in before and are empty now; it returns what it could not remove. */
export function removeNewEmptyDirs(root: string, before: ReadonlySet<string>): string[] {
  const left: string[] = [];
  for (const d of [...listDirs(root)].filter((x) => !before.has(x)).sort((a, b) => b.length - a.length)) {
    try {
      fs.rmdirSync(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') left.push(d);
    }
  }
  return left;
}

/** HostsEntry names the mirror a containerd hosts.toml sends a registry's pulls to. */
export interface HostsEntry {
  /** registry is the name clients use, e.g. docker.io. */
  registry: string;
  /** server is the registry's own endpoint, tried last (it need not resolve). */
  server: string;
  /** mirror is host:port of airlock. */
  mirror: string;
  caPath: string;
  certPath: string;
  keyPath: string;
}

/** writeHostsToml writes `<certsD>/<registry>/hosts.toml` naming airlock as a pull/resolve mirror with mTLS. */
export function writeHostsToml(certsD: string, e: HostsEntry): string {
  const dir = path.join(certsD, e.registry);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'hosts.toml');
  fs.writeFileSync(
    file,
    [
      `server = ${JSON.stringify(e.server)}`,
      '',
      `[host.${JSON.stringify(`https://${e.mirror}`)}]`,
      '  capabilities = ["pull", "resolve"]',
      `  ca = ${JSON.stringify(e.caPath)}`,
      `  client = [[${JSON.stringify(e.certPath)}, ${JSON.stringify(e.keyPath)}]]`,
      '',
    ].join('\n'),
  );
  return file;
}

/** Containerd is a private containerd 1.6 daemon whose root, state and sockets live under dir. */
export interface Containerd {
  address: string;
  dir: string;
  proc: Proc;
  ctr(args: readonly string[], timeoutMs?: number): Promise<ClientRun>;
  /** stop ends the daemon by PID, unmounts what is left under dir and removes the empty folders it made in /run/containerd. */
  stop(): Promise<string[]>;
}

/** startContainerd starts containerd with config v2 (CRI disabled) under dir and waits until ctr can talk to it. */
export async function startContainerd(dir: string): Promise<Containerd> {
  requireTool(CONTAINERD);
  requireTool(CTR);
  fs.mkdirSync(dir, { recursive: true });
  const runBefore = listDirs(RUN_CONTAINERD);
  const address = path.join(dir, 'containerd.sock');
  const configPath = path.join(dir, 'config.toml');
  fs.writeFileSync(
    configPath,
    [
      'version = 2',
      `root = ${JSON.stringify(path.join(dir, 'root'))}`,
      `state = ${JSON.stringify(path.join(dir, 'state'))}`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = ${JSON.stringify(address)}`,
      '[ttrpc]',
      `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
      '[debug]',
      `  address = ${JSON.stringify(path.join(dir, 'debug.sock'))}`,
      '  level = "info"',
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${JSON.stringify(path.join(dir, 'opt'))}`,
      '',
    ].join('\n'),
  );
  const proc = startProcess(CONTAINERD, ['--config', configPath], { name: 'containerd', logDir: dir });
  const ctr = (args: readonly string[], timeoutMs?: number): Promise<ClientRun> => timed(CTR, ['--address', address, ...args], { timeoutMs });
  await waitFor(
    async () => {
      if (!proc.running()) throw new StopWaiting(`containerd exited:\n${proc.output().slice(-2000)}`);
      if (!fs.existsSync(address)) return false;
      return (await ctr(['version'], 5000)).code === 0;
    },
    { timeoutMs: 15_000, what: 'containerd to answer ctr version' },
  );
  return {
    address,
    dir,
    proc,
    ctr,
    async stop(): Promise<string[]> {
      await proc.stop();
      await unmountUnder(dir);
      return removeNewEmptyDirs(RUN_CONTAINERD, runBefore);
    },
  };
}

/** PodmanSetup configures a podman confined to a scratch folder that pulls docker.io through a mirror. */
export interface PodmanSetup {
  dir: string;
  /** mirror is host:port of airlock, the only mirror of docker.io. */
  mirror: string;
  /** certDir is the client bundle (ca.crt, client.cert, client.key) passed as --cert-dir. */
  certDir: string;
}

/** Podman runs podman 4.3 with private storage (vfs), registries.conf and containers.conf. */
export interface Podman {
  env: NodeJS.ProcessEnv;
  /** cgroupParent is the cgroup (per controller) that `run` should pass as --cgroup-parent, removed by cleanup. */
  cgroupParent: string;
  podman(args: readonly string[], timeoutMs?: number): Promise<ClientRun>;
  /** pull runs `podman pull --cert-dir <certDir> ref`. */
  pull(ref: string): Promise<ClientRun>;
  /** cleanup removes podman's containers and images, unmounts what is left under the scratch folder, and removes the
   *  cgroups and the empty folders in /run that this podman created; it returns what it could not remove. */
  cleanup(): Promise<string[]>;
}

/** preparePodman writes storage.conf, registries.conf and containers.conf under dir. */
export function preparePodman(setup: PodmanSetup): Podman {
  requireTool(PODMAN);
  const dir = setup.dir;
  fs.mkdirSync(dir, { recursive: true });
  const storageConf = path.join(dir, 'storage.conf');
  fs.writeFileSync(
    storageConf,
    ['[storage]', 'driver = "vfs"', `graphroot = ${JSON.stringify(path.join(dir, 'graph'))}`, `runroot = ${JSON.stringify(path.join(dir, 'runroot'))}`, ''].join('\n'),
  );
  const registriesConf = path.join(dir, 'registries.conf');
  fs.writeFileSync(
    registriesConf,
    [
      'unqualified-search-registries = []',
      'short-name-mode = "disabled"',
      '[[registry]]',
      'prefix = "docker.io"',
      'location = "registry-1.docker.io"',
      '[[registry.mirror]]',
      `location = ${JSON.stringify(setup.mirror)}`,
      '',
    ].join('\n'),
  );
  const containersConf = path.join(dir, 'containers.conf');
  fs.writeFileSync(
    containersConf,
    [
      '[containers]',
      'netns = "none"',
      'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
      '[engine]',
      'runtime = "runc"',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `events_logfile_path = ${JSON.stringify(path.join(dir, 'events.log'))}`,
      `tmp_dir = ${JSON.stringify(path.join(dir, 'tmp'))}`,
      `volume_path = ${JSON.stringify(path.join(dir, 'volumes'))}`,
      '[network]',
      `network_config_dir = ${JSON.stringify(path.join(dir, 'networks'))}`,
      '',
    ].join('\n'),
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONTAINERS_STORAGE_CONF: storageConf,
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    CONTAINERS_CONF: containersConf,
    TMPDIR: path.join(dir, 'tmp'),
  };
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  // podman 4.3 always uses /run/containers/networks (netavark) and runc's default root /run/runc.
  const runBefore = new Map(PODMAN_RUN_DIRS.map((d) => [d, listDirs(d)]));
  const cgroupParent = `/airlock-test-${randomBytes(6).toString('hex')}`;
  const podman = (args: readonly string[], timeoutMs?: number): Promise<ClientRun> => timed(PODMAN, args, { env, timeoutMs });
  return {
    env,
    cgroupParent,
    podman,
    pull: (ref: string) => podman(['pull', '--cert-dir', setup.certDir, ref], 60_000),
    async cleanup(): Promise<string[]> {
      await podman(['rm', '--all', '--force'], 30_000);
      await podman(['rmi', '--all', '--force'], 30_000);
      await unmountUnder(dir);
      const left: string[] = [];
      for (const [d, before] of runBefore) left.push(...removeNewEmptyDirs(d, before));
      left.push(...(await removeCgroups(cgroupParent)));
      return left;
    },
  };
}

// removeCgroups removes a cgroup and its children (conmon's) from every hierarchy, waiting until their processes are gone.
export async function removeCgroups(name: string): Promise<string[]> {
  const dirs = fs
    .readdirSync(CGROUP_ROOT)
    .map((h) => path.join(CGROUP_ROOT, h, name))
    .filter((d) => fs.existsSync(d));
  let left: string[] = [];
  await waitFor(
    () => {
      left = dirs.flatMap((d) => removeNewEmptyDirs(d, new Set()));
      return left.length === 0;
    },
    { timeoutMs: 5000, what: `cgroup ${name} to empty` },
  ).catch(() => undefined);
  return left;
}
