// Seeding the upstream: random, incompressible blobs written to disk while they are hashed, pushed with the OCI blob
// upload API (POST then a monolithic PUT), and images whose manifests reference them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';

const CHUNK = 1 << 20;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';

/** Upstream is where seed pushes: an https registry URL and the CA that signed it. */
export interface Upstream {
  url: string;
  ca: string;
}

/** Blob is content by digest, on disk (path) or in memory (bytes). */
export interface Blob {
  digest: string;
  size: number;
  path?: string;
  bytes?: Buffer;
}

/** Image is a pushed image: its manifest bytes and digest and the blobs it references. */
export interface Image {
  repo: string;
  tag: string;
  digest: string;
  manifest: Buffer;
  mediaType: string;
  layers: Blob[];
}

/** sha256 is the OCI digest of bytes. */
export function sha256(bytes: Buffer): string {
  return `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
}

/** writeRandomBlob writes size incompressible bytes (an AES-CTR key stream) to file and returns its digest. */
export async function writeRandomBlob(file: string, size: number): Promise<Blob> {
  const cipher = crypto.createCipheriv('aes-128-ctr', crypto.randomBytes(16), crypto.randomBytes(16));
  const zeros = Buffer.alloc(CHUNK);
  const hash = crypto.createHash('sha256');
  let left = size;
  async function* chunks(): AsyncGenerator<Buffer> {
    while (left > 0) {
      const n = Math.min(CHUNK, left);
      const out = cipher.update(n === CHUNK ? zeros : zeros.subarray(0, n));
      hash.update(out);
      left -= n;
      yield out;
    }
  }
  await pipeline(Readable.from(chunks()), fs.createWriteStream(file));
  return { digest: `sha256:${hash.digest('hex')}`, size, path: file };
}

/** memoryBlob wraps bytes as a Blob. */
export function memoryBlob(bytes: Buffer): Blob {
  return { digest: sha256(bytes), size: bytes.length, bytes };
}

function request(
  up: Upstream,
  method: string,
  target: string,
  headers: Record<string, string | number>,
  body: Buffer | fs.ReadStream | null,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(target, up.url), { method, headers, ca: fs.readFileSync(up.ca), agent: false, timeout: 120_000 }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${target} timed out`)));
    req.on('error', reject);
    if (body === null || Buffer.isBuffer(body)) req.end(body ?? undefined);
    else body.pipe(req);
  });
}

/** pushBlob uploads a blob to repo with POST /blobs/uploads/ and one PUT ?digest=. */
export async function pushBlob(up: Upstream, repo: string, blob: Blob): Promise<void> {
  const start = await request(up, 'POST', `/v2/${repo}/blobs/uploads/`, { 'content-length': 0 }, null);
  const location = start.headers.location;
  if (start.status !== 202 || typeof location !== 'string') throw new Error(`upload start for ${repo}: ${start.status} ${start.body}`);
  const target = `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(blob.digest)}`;
  const body = blob.bytes ?? (blob.path === undefined ? null : fs.createReadStream(blob.path, { highWaterMark: CHUNK }));
  if (body === null) throw new Error(`blob ${blob.digest} has neither bytes nor a path`);
  const put = await request(up, 'PUT', target, { 'content-type': 'application/octet-stream', 'content-length': blob.size }, body);
  if (put.status !== 201) throw new Error(`upload of ${blob.digest} to ${repo}: ${put.status} ${put.body}`);
}

/** pushImage pushes the layers, a config and an OCI manifest (tagged) and returns the image. */
export async function pushImage(up: Upstream, repo: string, tag: string, layers: Blob[], annotations: Record<string, string> = {}): Promise<Image> {
  const config = memoryBlob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Cmd: ['/bin/sh'], Labels: { 'org.opencontainers.image.title': `${repo}:${tag}` } },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
        history: layers.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `airlock bench layer ${i}` })),
      }),
    ),
  );
  for (const l of layers) await pushBlob(up, repo, l);
  await pushBlob(up, repo, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: OCI_LAYER, digest: l.digest, size: l.size })),
      annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z', ...annotations },
    }),
  );
  const put = await request(up, 'PUT', `/v2/${repo}/manifests/${tag}`, { 'content-type': OCI_MANIFEST, 'content-length': manifest.length }, manifest);
  if (put.status !== 201) throw new Error(`manifest ${repo}:${tag}: ${put.status} ${put.body}`);
  return { repo, tag, digest: sha256(manifest), manifest, mediaType: OCI_MANIFEST, layers };
}
