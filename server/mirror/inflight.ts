// Single-flight blob downloads: one upstream GET per digest, written to a temp file while any number of
// clients read it as it grows (each at its own pace), detached from any one client's connection.
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { READ_CHUNK, type BlobWriter } from '../../storage/blobs.js';
import { RegistryError } from '../errors.js';

// Download is one upstream blob transfer in progress.
export interface Download {
  digest: string;
  size: number | null;
  writer: BlobWriter;
  done: Promise<void>;
}

// Inflight de-duplicates downloads by digest; the entry is removed when the download ends, in finally.
export class Inflight {
  private readonly downloads = new Map<string, Promise<Download>>();

  // join returns the download under way for digest, or starts one with start().
  join(digest: string, start: () => Promise<Download>): { download: Promise<Download>; joined: boolean } {
    const existing = this.downloads.get(digest);
    if (existing) return { download: existing, joined: true };
    const p = start();
    this.downloads.set(digest, p);
    p.then(
      (d) => d.done.catch(() => {}).finally(() => this.forget(digest, p)),
      () => this.forget(digest, p),
    );
    return { download: p, joined: false };
  }

  // size is how many downloads are under way.
  get size(): number {
    return this.downloads.size;
  }

  // settle waits for every download under way to end (used at shutdown).
  async settle(): Promise<void> {
    const all = [...this.downloads.values()];
    await Promise.allSettled(all.map((p) => p.then((d) => d.done)));
  }

  private forget(digest: string, p: Promise<Download>): void {
    if (this.downloads.get(digest) === p) this.downloads.delete(digest);
  }
}

// followWriter streams bytes [start, end] of a blob that is still being written, waiting for the writer as needed.
// It fails when the writer aborts (a cut upstream or a digest mismatch), so the client's connection is aborted too.
export function followWriter(writer: BlobWriter, start: number, end: number | null): Readable {
  let fd: number | null = null;
  let position = start;
  let waiting = false;
  let reading = false;
  const stream = new Readable({
    highWaterMark: READ_CHUNK,
    read() {
      pump();
    },
    destroy(err, cb) {
      writer.progress.off('progress', wake);
      writer.progress.off('committed', wake);
      writer.progress.off('aborted', wake);
      if (fd !== null) fs.close(fd, () => cb(err));
      else cb(err);
    },
  });

  function wake(): void {
    if (!waiting) return;
    waiting = false;
    writer.progress.off('progress', wake);
    writer.progress.off('committed', wake);
    writer.progress.off('aborted', wake);
    pump();
  }

  function pump(): void {
    if (stream.destroyed || waiting || reading) return;
    if (writer.state === 'aborted') {
      // Before the first byte this becomes a 503 for the client; after it, the connection is aborted.
      const why = writer.failure?.message ?? 'the download failed';
      stream.destroy(new RegistryError('UNAVAILABLE', `blob ${writer.digest} could not be fetched from the upstream (${why}); nothing was cached`));
      return;
    }
    // Until the whole blob is verified, the last byte asked for is held back: with a Content-Length sent, a client that
    // received every byte would take the response as complete, so a digest mismatch must leave it one byte short.
    const verified = writer.state === 'committed';
    const last = end !== null ? end : writer.expectedSize !== null ? writer.expectedSize - 1 : null;
    const available = verified || last === null ? writer.written : Math.min(writer.written, last);
    const finished = last !== null ? position > last : false;
    // Reads wait for a whole chunk while the download runs: chasing the writer 64 KiB at a time costs a read, a push
    // and a TLS write per sliver, several times the cost of the bytes themselves.
    const wanted = last === null ? READ_CHUNK : Math.min(READ_CHUNK, last + 1 - position);
    const short = !verified && available - position < wanted;
    if (finished || position >= available || short) {
      if (writer.state === 'committed') {
        stream.push(null);
        return;
      }
      waiting = true;
      writer.progress.on('progress', wake);
      writer.progress.on('committed', wake);
      writer.progress.on('aborted', wake);
      return;
    }
    if (fd === null) {
      try {
        fd = fs.openSync(writer.tmpPath, 'r');
      } catch (err) {
        if (writer.state === 'committed') {
          try {
            fd = fs.openSync(writer.finalPath(), 'r');
          } catch (e) {
            stream.destroy(e as Error);
            return;
          }
        } else {
          stream.destroy(err as Error);
          return;
        }
      }
    }
    const limit = end === null ? available : Math.min(available, end + 1);
    const length = Math.min(READ_CHUNK, limit - position);
    const buf = Buffer.allocUnsafe(length);
    reading = true;
    fs.read(fd, buf, 0, length, position, (err, n) => {
      reading = false;
      if (err) return stream.destroy(err);
      if (n === 0) return stream.destroy(new Error('blob file ended early'));
      position += n;
      if (stream.push(n === length ? buf : buf.subarray(0, n))) pump();
    });
  }

  return stream;
}
