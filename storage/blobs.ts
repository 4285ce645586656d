// The content-addressed blob store on disk.
//
// Layout under DATADIR/blobs:
//   sha256/<first two hex>/<hex>   a verified blob, named by its digest
//   tmp/<random>                   a blob being written; renamed into place only when its digest matches
// Leftover tmp files (a crash mid-write) are removed at start-up. Least-recently-used blobs beyond
// maxBytes are evicted; the order survives restarts through the files' modification times.
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type BlobBody, fileBody } from './chunks.js';

const TOUCH_PERSIST_MS = 10 * 60 * 1000;

// WRITE_BUFFER is how much a download may have received ahead of the write to its temp file under way. With 1 MiB the
// upstream connection stalled behind every write (a write into fresh page cache can take milliseconds); with 8 MiB a
// cold 256 MiB pull took 1.6-1.8 s instead of 1.8-2.4 s here, and more buffer gained nothing.
const WRITE_BUFFER = 8 << 20;

interface Entry {
  size: number;
  touched: number;
}

// BlobStore holds verified blobs by digest, with a size limit and LRU eviction.
export class BlobStore {
  readonly root: string;
  private readonly tmpDir: string;
  private readonly index = new Map<string, Entry>();
  private total = 0;
  maxBytes: number;
  onEvict: (digest: string, size: number) => void = () => {};

  constructor(dataDir: string, maxBytes: number) {
    this.root = path.join(dataDir, 'blobs');
    this.tmpDir = path.join(this.root, 'tmp');
    this.maxBytes = maxBytes;
  }

  // init removes leftover temp files and indexes the blobs on disk; returns how many temp files it removed.
  init(): number {
    fs.mkdirSync(path.join(this.root, 'sha256'), { recursive: true });
    fs.mkdirSync(this.tmpDir, { recursive: true });
    let removed = 0;
    for (const f of fs.readdirSync(this.tmpDir)) {
      fs.rmSync(path.join(this.tmpDir, f), { force: true, recursive: true });
      removed++;
    }
    const found: [string, Entry][] = [];
    for (const prefix of fs.readdirSync(path.join(this.root, 'sha256'), { withFileTypes: true })) {
      if (!prefix.isDirectory() || !/^[a-f0-9]{2}$/.test(prefix.name)) continue;
      const dir = path.join(this.root, 'sha256', prefix.name);
      for (const hex of fs.readdirSync(dir)) {
        if (!/^[a-f0-9]{64}$/.test(hex) || hex.slice(0, 2) !== prefix.name) continue;
        const st = fs.statSync(path.join(dir, hex));
        found.push([`sha256:${hex}`, { size: st.size, touched: st.mtimeMs }]);
      }
    }
    found.sort((a, b) => a[1].touched - b[1].touched);
    for (const [digest, entry] of found) {
      this.index.set(digest, entry);
      this.total += entry.size;
    }
    return removed;
  }

  // pathOf is where a verified blob lives.
  pathOf(digest: string): string {
    const hex = digest.slice(7);
    return path.join(this.root, 'sha256', hex.slice(0, 2), hex);
  }

  // size is a cached blob's size, or null when it is not cached.
  size(digest: string): number | null {
    return this.index.get(digest)?.size ?? null;
  }

  // present is a cached blob's size after checking that its file is still there: one removed by hand is forgotten.
  present(digest: string): number | null {
    const entry = this.index.get(digest);
    if (!entry) return null;
    if (fs.existsSync(this.pathOf(digest))) return entry.size;
    this.forget(digest);
    return null;
  }

  // intact hashes a cached blob's file again and tells whether it still holds the blob (false when it is gone).
  async intact(digest: string): Promise<boolean> {
    const hash = crypto.createHash('sha256');
    try {
      await pipeline(fs.createReadStream(this.pathOf(digest), { highWaterMark: 1 << 20 }), hash);
    } catch {
      return false;
    }
    return `sha256:${hash.digest('hex')}` === digest;
  }

  // usage is the cache's total size and blob count.
  usage(): { bytes: number; blobs: number } {
    return { bytes: this.total, blobs: this.index.size };
  }

  // open reads [start, end] of a cached blob, or returns null when it is not (or no longer) on disk.
  open(digest: string, start = 0, end?: number): BlobBody | null {
    const entry = this.index.get(digest);
    if (!entry) return null;
    let fd: number;
    try {
      fd = fs.openSync(this.pathOf(digest), 'r');
    } catch {
      this.forget(digest);
      return null;
    }
    this.touch(digest, entry);
    return fileBody(fd, start, end ?? entry.size - 1);
  }

  // readAll returns a small cached blob's bytes, or null.
  async readAll(digest: string): Promise<Buffer | null> {
    if (!this.index.has(digest)) return null;
    try {
      return await fsp.readFile(this.pathOf(digest));
    } catch {
      this.forget(digest);
      return null;
    }
  }

  // createWriter starts writing a blob that must hash to digest; it becomes visible only on a matching commit.
  createWriter(digest: string, expectedSize: number | null): BlobWriter {
    const tmp = path.join(this.tmpDir, `${digest.slice(7, 19)}-${crypto.randomBytes(8).toString('hex')}`);
    return new BlobWriter(this, digest, expectedSize, tmp);
  }

  // put stores a small blob whose bytes are in memory, after checking its digest.
  async put(digest: string, bytes: Buffer): Promise<void> {
    const w = this.createWriter(digest, bytes.length);
    await new Promise<void>((resolve, reject) => {
      w.on('error', reject);
      w.end(bytes, () => resolve());
    });
    await w.commit();
  }

  // remove deletes a blob from the cache.
  async remove(digest: string): Promise<void> {
    if (!this.index.has(digest)) return;
    this.forget(digest);
    await fsp.rm(this.pathOf(digest), { force: true });
  }

  // adopt is called by a writer whose temp file was renamed into place. A blob larger than the whole cache is not kept:
  // evicting every other blob to make room for it would still leave the cache over its limit.
  adopt(digest: string, size: number): void {
    const old = this.index.get(digest);
    if (old) this.total -= old.size;
    this.index.delete(digest);
    if (size > this.maxBytes) {
      fs.rm(this.pathOf(digest), { force: true }, () => {});
      this.onEvict(digest, size);
      return;
    }
    this.index.set(digest, { size, touched: Date.now() });
    this.total += size;
    this.evict();
  }

  private touch(digest: string, entry: Entry): void {
    const t = Date.now();
    this.index.delete(digest);
    this.index.set(digest, { size: entry.size, touched: t });
    if (t - entry.touched > TOUCH_PERSIST_MS) {
      const when = new Date(t);
      fs.utimes(this.pathOf(digest), when, when, () => {});
    }
  }

  private forget(digest: string): void {
    const entry = this.index.get(digest);
    if (!entry) return;
    this.total -= entry.size;
    this.index.delete(digest);
  }

  private evict(): void {
    for (const [digest, entry] of this.index) {
      if (this.total <= this.maxBytes) break;
      this.forget(digest);
      fs.rm(this.pathOf(digest), { force: true }, () => {});
      this.onEvict(digest, entry.size);
    }
  }
}

// BlobWriter hashes bytes as they are written to a temp file and tells listeners how far the file has grown.
// Events: 'progress' (bytes written so far), 'committed', 'aborted' (Error).
export class BlobWriter extends Writable {
  readonly digest: string;
  readonly tmpPath: string;
  readonly expectedSize: number | null;
  readonly progress = new EventEmitter();
  written = 0;
  state: 'writing' | 'committed' | 'aborted' = 'writing';
  // verified is set once every byte arrived and hashed to the digest, before the file is made durable and renamed.
  verified = false;
  failure: Error | null = null;
  private readonly store: BlobStore;
  private readonly hash = crypto.createHash('sha256');
  private fd: number | null = null;
  private writing = false;
  private closeError: Error | null = null;

  constructor(store: BlobStore, digest: string, expectedSize: number | null, tmpPath: string) {
    super({ highWaterMark: WRITE_BUFFER, autoDestroy: false });
    this.store = store;
    this.digest = digest;
    this.expectedSize = expectedSize;
    this.tmpPath = tmpPath;
    this.fd = fs.openSync(tmpPath, 'wx', 0o600);
    this.progress.setMaxListeners(0);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.writeChunks([chunk], done);
  }

  override _writev(chunks: { chunk: Buffer }[], done: (err?: Error | null) => void): void {
    this.writeChunks(
      chunks.map((c) => c.chunk),
      done,
    );
  }

  private writeChunks(chunks: Buffer[], done: (err?: Error | null) => void): void {
    if (this.fd === null) return done(new Error('blob writer is closed'));
    let len = 0;
    for (const c of chunks) len += c.length;
    if (this.expectedSize !== null && this.written + len > this.expectedSize) {
      return done(new Error(`blob ${this.digest} is larger than the ${this.expectedSize} bytes announced`));
    }
    for (const c of chunks) this.hash.update(c);
    this.writing = true;
    fs.writev(this.fd, chunks, this.written, (err, n) => {
      this.writing = false;
      if (this.state === 'aborted') {
        this.closeFd();
        return done(err ?? this.failure);
      }
      if (err) return done(err);
      // A regular file is written short only when space runs out (a full disk, a quota); the missing bytes must not be counted as written.
      if (n !== len) return done(new Error(`writing blob ${this.digest}: ${n} of ${len} bytes written (no space left on the device?)`));
      this.written += len;
      this.progress.emit('progress', this.written);
      done();
    });
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.state !== 'writing') return cb(err);
    this.abort(err ?? new Error(`writing blob ${this.digest} was cancelled`)).then(
      () => cb(err),
      (e: Error) => cb(e),
    );
  }

  // finalPath is where the blob lives once committed.
  finalPath(): string {
    return this.store.pathOf(this.digest);
  }

  // commit checks size and digest and renames the temp file into place; on a mismatch the blob is discarded.
  async commit(): Promise<void> {
    if (this.state !== 'writing') throw this.failure ?? new Error('blob writer already committed');
    const actual = `sha256:${this.hash.digest('hex')}`;
    if (this.expectedSize !== null && this.written !== this.expectedSize) {
      throw await this.abort(new Error(`blob ${this.digest}: received ${this.written} of ${this.expectedSize} bytes`));
    }
    if (actual !== this.digest) {
      throw await this.abort(new DigestMismatchError(this.digest, actual));
    }
    // The bytes are the blob: readers may have the last one now, while the file is made durable. Renamed before its
    // data reached the disk, a power loss could leave a short file under the digest.
    this.verified = true;
    this.progress.emit('progress', this.written);
    await this.sync();
    if (this.state !== 'writing') throw this.failure ?? new Error(`writing blob ${this.digest} was cancelled`);
    this.closeFd();
    if (this.closeError) throw await this.abort(new Error(`writing blob ${this.digest}: ${this.closeError.message}`));
    const dest = this.store.pathOf(this.digest);
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    await fsp.rename(this.tmpPath, dest);
    this.state = 'committed';
    this.store.adopt(this.digest, this.written);
    this.progress.emit('committed');
  }

  // sync flushes the temp file to the disk; a failure (EIO, a late ENOSPC) is kept for the commit to refuse the blob.
  private async sync(): Promise<void> {
    const fd = this.fd;
    if (fd === null) return;
    this.writing = true;
    await new Promise<void>((resolve) =>
      fs.fsync(fd, (err) => {
        this.writing = false;
        if (err) this.closeError = err;
        if (this.state === 'aborted') this.closeFd();
        resolve();
      }),
    );
  }

  // abort discards the temp file; readers following it see the error. Returns the error for throwing.
  async abort(err: Error): Promise<Error> {
    if (this.state === 'aborted') return this.failure ?? err;
    this.state = 'aborted';
    this.failure = err;
    this.closeFd();
    await fsp.rm(this.tmpPath, { force: true });
    this.progress.emit('aborted', err);
    if (!this.destroyed) this.destroy();
    return err;
  }

  // closeFd closes the temp file, unless a write to it is under way: that write closes it when it completes. A
  // descriptor closed under a queued write could be reused by the next file opened, which the write would then corrupt.
  // A close that fails (EIO, or a late ENOSPC on network storage) is kept, not thrown: the commit then refuses the blob.
  private closeFd(): void {
    if (this.fd === null || this.writing) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fs.closeSync(fd);
    } catch (err) {
      this.closeError = err as Error;
    }
  }
}

// DigestMismatchError says the bytes received do not hash to the digest asked for.
export class DigestMismatchError extends Error {
  readonly expected: string;
  readonly actual: string;

  constructor(expected: string, actual: string) {
    super(`digest mismatch: expected ${expected}, received bytes hash to ${actual}`);
    this.name = 'DigestMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}
