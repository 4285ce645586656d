// Blob bodies read in whole chunks into recycled buffers.
//
// Serving blobs reads 256 KiB at a time. With 64 KiB reads through Node's streams TLS throughput is bound by per-chunk
// overhead, not AES. Against 1 MiB, measured with both builds in both orders (docs/performance.md), one client got 4 %
// more with 1 MiB and eight clients 6 % more with 256 KiB, both within this machine's spread; 256 KiB hands the socket
// its first bytes sooner, as Node encrypts a chunk whole before sending any of it. A fresh buffer per read, though, is
// external memory to V8, and every 64 MiB of it starts a full mark-compact of the heap: measured on a warm 256 MiB
// download, a third of the server's CPU went to the garbage collector. Bodies therefore read into buffers from one
// pool, and the sender hands each buffer back once the socket has consumed it.
import fs from 'node:fs';

// CHUNK_SIZE is the read size for serving blobs and the size of every pooled buffer.
export const CHUNK_SIZE = 256 << 10;

// MAX_FREE bounds the idle buffers kept for reuse (32 MiB); more are allocated when needed and left to the GC.
const MAX_FREE = 128;

// ChunkPool recycles CHUNK_SIZE buffers. A buffer must be given back only when nothing reads or writes it any more:
// a buffer handed out twice would mix one download's bytes into another's.
export class ChunkPool {
  private readonly free: Buffer[] = [];
  private readonly size: number;
  private readonly maxFree: number;

  constructor(size = CHUNK_SIZE, maxFree = MAX_FREE) {
    this.size = size;
    this.maxFree = maxFree;
  }

  // take returns a buffer of the pool's size, holding whatever bytes it last held.
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  // give returns a buffer taken from this pool.
  give(buf: Buffer): void {
    if (buf.length !== this.size) throw new Error('ChunkPool.give: not a buffer of this pool');
    if (this.free.includes(buf)) throw new Error('ChunkPool.give: buffer given back twice');
    if (this.free.length < this.maxFree) this.free.push(buf);
  }

  // idle is how many buffers wait for reuse.
  get idle(): number {
    return this.free.length;
  }
}

// chunkPool is the process's one pool of blob read buffers.
export const chunkPool = new ChunkPool();

// BlobBody is a blob's bytes (or a range of them), read front to back.
export interface BlobBody {
  // read fills the front of buf with the next bytes and resolves how many; 0 at the end. It rejects when the bytes
  // cannot be had (an upstream download failed); a body must not be read again before the last read settled.
  read(buf: Buffer): Promise<number>;
  // close releases the body's file; a read under way still settles before its buffer may be reused.
  close(): void;
}

// fileBody reads bytes [start, end] of an open file and closes it when closed.
export function fileBody(fd: number, start: number, end: number): BlobBody {
  let position = start;
  let closed = false;
  let reading = false;
  const release = (): void => {
    if (closed && !reading) fs.close(fd, () => {});
  };
  return {
    read(buf) {
      if (closed) return Promise.reject(new Error('blob body is closed'));
      const length = Math.min(buf.length, end + 1 - position);
      if (length <= 0) return Promise.resolve(0);
      reading = true;
      return new Promise((resolve, reject) => {
        fs.read(fd, buf, 0, length, position, (err, n) => {
          reading = false;
          release();
          if (err) return reject(err);
          if (n === 0) return reject(new Error('blob file ended early'));
          position += n;
          resolve(n);
        });
      });
    },
    close() {
      if (closed) return;
      closed = true;
      release();
    },
  };
}

// bufferBody reads bytes already in memory (blobs airlock made itself).
export function bufferBody(bytes: Buffer): BlobBody {
  let position = 0;
  return {
    read(buf) {
      const n = bytes.copy(buf, 0, position);
      position += n;
      return Promise.resolve(n);
    },
    close() {},
  };
}
