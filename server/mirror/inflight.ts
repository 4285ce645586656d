// Single-flight blob downloads: one upstream GET per blob, written to a temp file while any number of
// clients read it as it grows (each at its own pace), detached from any one client's connection.
import fs from 'node:fs';
import type { BlobWriter } from '../../storage/blobs.js';
import type { BlobBody } from '../../storage/chunks.js';
import { RegistryError } from '../errors.js';

// Download is one upstream blob transfer in progress.
export interface Download {
  digest: string;
  size: number | null;
  writer: BlobWriter;
  done: Promise<void>;
}

// Inflight de-duplicates downloads by digest, whichever repository asked first; source says which one that was (a
// client of another repository whose joined download failed before it began asks its own). The entry is removed when
// the download ends, in finally.
export class Inflight {
  private readonly downloads = new Map<string, { source: string; download: Promise<Download> }>();

  // join returns the download of digest under way, and the source it was started for, or starts one for source.
  join(source: string, digest: string, start: () => Promise<Download>): { download: Promise<Download>; source: string } {
    const existing = this.downloads.get(digest);
    if (existing) return existing;
    const p = start();
    this.downloads.set(digest, { source, download: p });
    p.then(
      (d) => d.done.catch(() => {}).finally(() => this.forget(digest, p)),
      () => this.forget(digest, p),
    );
    return { download: p, source };
  }

  // ended resolves once the download of digest under way has ended, whatever its outcome; null when none is.
  ended(digest: string): Promise<void> | null {
    const p = this.downloads.get(digest)?.download;
    if (!p) return null;
    return p.then((d) => d.done).then(
      () => {},
      () => {},
    );
  }

  // size is how many downloads are under way.
  get size(): number {
    return this.downloads.size;
  }

  // settle waits for every download under way to end (used at shutdown).
  async settle(): Promise<void> {
    const all = [...this.downloads.values()];
    await Promise.allSettled(all.map((e) => e.download.then((d) => d.done)));
  }

  private forget(digest: string, p: Promise<Download>): void {
    if (this.downloads.get(digest)?.download === p) this.downloads.delete(digest);
  }
}

// followWriter reads bytes [start, end] of a blob that is still being written, waiting for the writer as needed.
// A read rejects when the writer aborts (a cut upstream or a digest mismatch), so the client's response fails too.
export function followWriter(writer: BlobWriter, start: number, end: number | null): BlobBody {
  let fd: number | null = null;
  let position = start;
  let closed = false;
  let reading = false;
  let waiter: (() => void) | null = null;

  const wake = (): void => {
    const w = waiter;
    waiter = null;
    writer.progress.off('progress', wake);
    writer.progress.off('committed', wake);
    writer.progress.off('aborted', wake);
    w?.();
  };
  const closeFile = (): void => {
    if (fd !== null && !reading) {
      fs.close(fd, () => {});
      fd = null;
    }
  };
  const waitForWriter = (): Promise<void> =>
    new Promise((resolve) => {
      waiter = resolve;
      writer.progress.on('progress', wake);
      writer.progress.on('committed', wake);
      writer.progress.on('aborted', wake);
    });

  const readAt = (buf: Buffer, length: number): Promise<number> => {
    if (fd === null) {
      try {
        fd = fs.openSync(writer.tmpPath, 'r');
      } catch (err) {
        // Committed meanwhile, or being committed (the rename done, its completion not yet seen): the temp file is in
        // place under its digest, which only ever holds verified bytes.
        try {
          fd = fs.openSync(writer.finalPath(), 'r');
        } catch {
          throw err;
        }
      }
    }
    const file = fd;
    reading = true;
    return new Promise((resolve, reject) => {
      fs.read(file, buf, 0, length, position, (err, n) => {
        reading = false;
        if (closed) closeFile();
        if (err) return reject(err);
        if (n === 0) return reject(new Error('blob file ended early'));
        position += n;
        resolve(n);
      });
    });
  };

  return {
    async read(buf) {
      for (;;) {
        if (closed) throw new Error('blob body is closed');
        if (writer.state === 'aborted') {
          // Before the first byte this becomes a 503 for the client; after it, the connection is aborted.
          const why = writer.failure?.message ?? 'the download failed';
          throw new RegistryError('UNAVAILABLE', `blob ${writer.digest} could not be fetched from the upstream (${why}); nothing was cached`);
        }
        // Until the whole blob is verified, the last byte asked for is held back: with a Content-Length sent, a client
        // that received every byte would take the response as complete, so a digest mismatch must leave it one byte short.
        const verified = writer.verified;
        const last = end ?? (writer.expectedSize !== null ? writer.expectedSize - 1 : null);
        if (last !== null && position > last) return 0;
        const available = verified || last === null ? writer.written : Math.min(writer.written, last);
        if (verified && position >= available) return 0;
        // Reads wait for a whole chunk while the download runs: chasing the writer 64 KiB at a time costs a read and a
        // TLS write per sliver, several times the cost of the bytes themselves.
        const wanted = last === null ? buf.length : Math.min(buf.length, last + 1 - position);
        if (available - position >= wanted) return readAt(buf, wanted);
        if (verified) return readAt(buf, available - position);
        await waitForWriter();
      }
    },
    close() {
      if (closed) return;
      closed = true;
      // A read waiting for the writer holds no I/O, so it may end now; one reading the file ends when the read does.
      wake();
      closeFile();
    },
  };
}
