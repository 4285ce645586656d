import { createHash, randomFillSync, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { requireTool, runOk, type RunResult } from './proc.js';
import { expectOk, registryRequest, type RegistryEndpoint } from './registry.js';

const UMOCI = '/usr/bin/umoci';
const SKOPEO = '/usr/bin/skopeo';
const BUSYBOX = '/bin/busybox';
const BUSYBOX_APPLETS = ['sh', 'ls', 'cat', 'echo', 'env', 'wget', 'sleep', 'true'];
const REF_ANNOTATION = 'org.opencontainers.image.ref.name';

/** MEDIA_TYPES names the four manifest media types registries serve. */
export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

/** ALL_MANIFEST_TYPES is an Accept header listing all four manifest media types. */
export const ALL_MANIFEST_TYPES = Object.values(MEDIA_TYPES).join(', ');

/** Arch is a platform architecture the harness builds images for. */
export type Arch = 'amd64' | 'arm64';

/** BuildOptions describes one single-platform image built with umoci. */
export interface BuildOptions {
  /** tag is the ref of the image inside the OCI layout. */
  tag: string;
  /** files maps paths inside the rootfs (leading slash optional) to their contents. */
  files: Record<string, string | Buffer>;
  arch?: Arch;
  /** withBusybox adds /bin/busybox and applet symlinks (sh, ls, cat, …), making an amd64 image runnable. */
  withBusybox?: boolean;
  /** layerBytes adds `/data/random.bin` with that many random bytes (for large-blob tests). */
  layerBytes?: number;
  /** cmd is the image's Cmd (default ['/bin/sh'] with busybox, none otherwise). */
  cmd?: string[];
}

/** LocalImage is an image (or index) in an OCI layout on disk, addressed by ref. */
export interface LocalImage {
  layout: string;
  ref: string;
  /** digest is the manifest digest inside the layout; pushing with a format change alters it upstream. */
  digest: string;
}

/** CopyOptions configures skopeoCopy. */
export interface CopyOptions {
  srcCertDir?: string;
  destCertDir?: string;
  /** srcCreds/destCreds are `user:password`; without them skopeo is told to go anonymous. */
  srcCreds?: string;
  destCreds?: string;
  /** srcTlsVerify/destTlsVerify default to true with a cert dir, false without (plain-http registries). */
  srcTlsVerify?: boolean;
  destTlsVerify?: boolean;
  all?: boolean;
  format?: 'oci' | 'v2s2';
  timeoutMs?: number;
}

/** PushOptions configures pushImage. */
export interface PushOptions {
  certDir?: string;
  creds?: string;
  tlsVerify?: boolean;
  all?: boolean;
  format?: 'oci' | 'v2s2';
}

/** FetchedContent is a manifest or blob as a registry served it, with the sha256 of the exact bytes. */
export interface FetchedContent {
  bytes: Buffer;
  mediaType: string;
  digest: string;
  /** headerDigest is the Docker-Content-Digest header, when the registry sent one. */
  headerDigest: string | undefined;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
}

interface LayoutIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function blobPath(layout: string, digest: string): string {
  const [algo, hex] = digest.split(':');
  if (algo === undefined || hex === undefined) {
    throw new Error(`bad digest ${digest}`);
  }
  return path.join(layout, 'blobs', algo, hex);
}

function readIndex(layout: string): LayoutIndex {
  return JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8')) as LayoutIndex;
}

function findRef(layout: string, ref: string): Descriptor {
  const found = readIndex(layout).manifests.find((d) => d.annotations?.[REF_ANNOTATION] === ref);
  if (found === undefined) {
    throw new Error(`ref ${ref} not found in OCI layout ${layout}`);
  }
  return found;
}

async function ensureLayout(workDir: string): Promise<string> {
  const layout = path.join(workDir, 'oci');
  if (!fs.existsSync(path.join(layout, 'oci-layout'))) {
    fs.mkdirSync(workDir, { recursive: true });
    await runOk(UMOCI, ['init', '--layout', layout]);
  }
  return layout;
}

function writeRandomFile(file: string, size: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    const chunk = Buffer.allocUnsafe(Math.min(size, 1024 * 1024));
    let left = size;
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      randomFillSync(chunk, 0, n);
      fs.writeSync(fd, chunk, 0, n);
      left -= n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

function rootfsPath(rootfs: string, file: string): string {
  const rel = file.replace(/^\/+/, '');
  const full = path.resolve(rootfs, rel);
  if (rel === '' || !full.startsWith(`${rootfs}${path.sep}`)) {
    throw new Error(`file path ${file} escapes the image rootfs`);
  }
  return full;
}

/** buildImage builds a one-layer linux image with umoci into `<workDir>/oci` (builds into one workDir must not overlap in time). */
export async function buildImage(workDir: string, opts: BuildOptions): Promise<LocalImage> {
  requireTool(UMOCI);
  const layout = await ensureLayout(workDir);
  const image = `${layout}:${opts.tag}`;
  const bundle = path.join(workDir, `bundle-${randomUUID()}`);
  const rootless = process.getuid?.() === 0 ? [] : ['--rootless'];
  try {
    await runOk(UMOCI, ['new', '--image', image]);
    await runOk(UMOCI, ['unpack', ...rootless, '--image', image, bundle]);
    const rootfs = path.join(bundle, 'rootfs');
    if (opts.withBusybox === true) {
      requireTool(BUSYBOX);
      fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
      fs.copyFileSync(BUSYBOX, path.join(rootfs, 'bin', 'busybox'));
      fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
      for (const applet of BUSYBOX_APPLETS) {
        fs.symlinkSync('busybox', path.join(rootfs, 'bin', applet));
      }
    }
    for (const [file, content] of Object.entries(opts.files)) {
      const full = rootfsPath(rootfs, file);
      fs.mkdirSync(path.dirname(full), { recursive: true });
      fs.writeFileSync(full, content);
    }
    if (opts.layerBytes !== undefined && opts.layerBytes > 0) {
      fs.mkdirSync(path.join(rootfs, 'data'), { recursive: true });
      writeRandomFile(path.join(rootfs, 'data', 'random.bin'), opts.layerBytes);
    }
    await runOk(UMOCI, ['repack', '--refresh-bundle', '--image', image, bundle], { timeoutMs: 600_000 });
    const cmd = opts.cmd ?? (opts.withBusybox === true ? ['/bin/sh'] : []);
    await runOk(UMOCI, [
      'config', '--image', image, '--os', 'linux', '--architecture', opts.arch ?? 'amd64',
      ...cmd.flatMap((c) => ['--config.cmd', c]),
    ]);
    await runOk(UMOCI, ['gc', '--layout', layout]);
  } finally {
    fs.rmSync(bundle, { recursive: true, force: true });
  }
  return { layout, ref: opts.tag, digest: findRef(layout, opts.tag).digest };
}

function copyBlobs(from: string, to: string, digests: string[]): void {
  for (const digest of digests) {
    const dest = blobPath(to, digest);
    if (!fs.existsSync(dest)) {
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.copyFileSync(blobPath(from, digest), dest);
    }
  }
}

/** buildIndex writes an OCI index of the children (with their config's platforms) into `<workDir>/oci` as ref tag. */
export async function buildIndex(workDir: string, children: readonly { layout: string; ref: string }[], tag: string): Promise<LocalImage> {
  requireTool(UMOCI);
  const layout = await ensureLayout(workDir);
  const manifests: Descriptor[] = [];
  for (const child of children) {
    const desc = findRef(child.layout, child.ref);
    const manifestBytes = fs.readFileSync(blobPath(child.layout, desc.digest));
    const manifest = JSON.parse(manifestBytes.toString()) as { config: Descriptor; layers: Descriptor[] };
    const config = JSON.parse(fs.readFileSync(blobPath(child.layout, manifest.config.digest), 'utf8')) as {
      architecture: string;
      os: string;
      variant?: string;
    };
    if (path.resolve(child.layout) !== path.resolve(layout)) {
      copyBlobs(child.layout, layout, [desc.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]);
    }
    manifests.push({
      mediaType: desc.mediaType,
      digest: desc.digest,
      size: desc.size,
      platform: { architecture: config.architecture, os: config.os, ...(config.variant === undefined ? {} : { variant: config.variant }) },
    });
  }
  const indexBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }));
  const digest = sha256(indexBytes);
  fs.writeFileSync(blobPath(layout, digest), indexBytes);
  const top = readIndex(layout);
  top.manifests = top.manifests.filter((d) => d.annotations?.[REF_ANNOTATION] !== tag);
  top.manifests.push({ mediaType: MEDIA_TYPES.ociIndex, digest, size: indexBytes.length, annotations: { [REF_ANNOTATION]: tag } });
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify(top));
  return { layout, ref: tag, digest };
}

function tlsArgs(side: 'src' | 'dest', certDir: string | undefined, verify: boolean | undefined): string[] {
  const args = certDir === undefined ? [] : [`--${side}-cert-dir`, certDir];
  args.push(`--${side}-tls-verify=${String(verify ?? certDir !== undefined)}`);
  return args;
}

/** skopeoCopy runs `skopeo copy` between two image references (`oci:…`, `docker://…`, `dir:…`). */
export function skopeoCopy(src: string, dest: string, opts: CopyOptions = {}): Promise<RunResult> {
  requireTool(SKOPEO);
  const args = ['--insecure-policy', 'copy', '--quiet'];
  if (src.startsWith('docker://')) {
    args.push(...tlsArgs('src', opts.srcCertDir, opts.srcTlsVerify));
    args.push(...(opts.srcCreds === undefined ? ['--src-no-creds'] : ['--src-creds', opts.srcCreds]));
  }
  if (dest.startsWith('docker://')) {
    args.push(...tlsArgs('dest', opts.destCertDir, opts.destTlsVerify));
    args.push(...(opts.destCreds === undefined ? ['--dest-no-creds'] : ['--dest-creds', opts.destCreds]));
  }
  if (opts.all === true) {
    args.push('--all');
  }
  if (opts.format !== undefined) {
    args.push('--format', opts.format);
  }
  args.push(src, dest);
  return runOk(SKOPEO, args, { timeoutMs: opts.timeoutMs ?? 300_000 });
}

/** pushImage copies a local layout image to a registry reference such as `127.0.0.1:PORT/library/busybox:1.36`. */
export async function pushImage(src: { layout: string; ref: string }, dest: string, opts: PushOptions = {}): Promise<void> {
  await skopeoCopy(`oci:${src.layout}:${src.ref}`, `docker://${dest}`, {
    destCertDir: opts.certDir,
    destCreds: opts.creds,
    destTlsVerify: opts.tlsVerify,
    all: opts.all,
    format: opts.format,
  });
}

/** fetchManifest GETs a manifest (Accept: all four manifest types by default) and hashes the exact bytes. */
export async function fetchManifest(
  registry: RegistryEndpoint,
  repo: string,
  ref: string,
  accept: string = ALL_MANIFEST_TYPES,
): Promise<FetchedContent> {
  const res = expectOk(
    `GET manifest ${repo}:${ref}`,
    await registryRequest(registry, `/v2/${repo}/manifests/${ref}`, { headers: { accept } }),
  );
  const headerDigest = res.headers['docker-content-digest'];
  return {
    bytes: res.body,
    mediaType: String(res.headers['content-type'] ?? ''),
    digest: sha256(res.body),
    headerDigest: typeof headerDigest === 'string' ? headerDigest : undefined,
  };
}

/** fetchBlob GETs a blob and hashes the bytes it received. */
export async function fetchBlob(registry: RegistryEndpoint, repo: string, digest: string): Promise<FetchedContent> {
  const res = expectOk(`GET blob ${repo}@${digest}`, await registryRequest(registry, `/v2/${repo}/blobs/${digest}`));
  const headerDigest = res.headers['docker-content-digest'];
  return {
    bytes: res.body,
    mediaType: String(res.headers['content-type'] ?? ''),
    digest: sha256(res.body),
    headerDigest: typeof headerDigest === 'string' ? headerDigest : undefined,
  };
}

/** inspectDigest returns the digest of the manifest bytes the registry serves for repo:ref. */
export async function inspectDigest(registry: RegistryEndpoint, repo: string, ref: string): Promise<string> {
  return (await fetchManifest(registry, repo, ref)).digest;
}
