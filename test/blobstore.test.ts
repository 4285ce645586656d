// The blob store's crash safety and size limit: a blob becomes visible only when complete and verified, an
// interrupted write (cancelled or killed with SIGKILL) leaves only a temp file that the next start removes, and
// the least recently used blobs go first when the cache is over its limit.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { BlobStore, type BlobWriter, DigestMismatchError } from '../storage/blobs.js';
import { type BlobBody, ChunkPool } from '../storage/chunks.js';
import { startProcess, stopAll, waitFor } from './harness/proc.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HALF_WRITER = path.join(REPO, 'test', 'fixtures', 'half-blob-writer.ts');
const BIG = 1 << 30;

const sha = (b: Buffer): string => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;

let tmp: string;
let n = 0;

// freshDir is a new, empty data directory for one test.
function freshDir(): string {
  n += 1;
  return path.join(tmp, `store-${n}`);
}

function tmpFiles(dir: string): string[] {
  const t = path.join(dir, 'blobs', 'tmp');
  return fs.existsSync(t) ? fs.readdirSync(t) : [];
}

function writeChunk(w: BlobWriter, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => w.write(chunk, (err) => (err ? reject(err) : resolve())));
}

// readBody reads a whole body, a chunk at a time, and closes it.
async function readBody(body: BlobBody): Promise<Buffer> {
  const parts: Buffer[] = [];
  const buf = Buffer.alloc(1 << 20);
  try {
    for (let n = await body.read(buf); n > 0; n = await body.read(buf)) parts.push(Buffer.from(buf.subarray(0, n)));
  } finally {
    body.close();
  }
  return Buffer.concat(parts);
}

async function readOut(store: BlobStore, digest: string, start?: number, end?: number): Promise<Buffer | null> {
  const body = store.open(digest, start, end);
  return body === null ? null : readBody(body);
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-blobs-'));
});

after(async () => {
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('writing blobs', () => {
  test('a committed blob is stored under its digest and reads back exactly, whole and by range', async () => {
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    assert.equal(store.init(), 0);
    const bytes = crypto.randomBytes(3 * 1024 * 1024 + 17);
    const digest = sha(bytes);
    const w = store.createWriter(digest, bytes.length);
    let lastProgress = 0;
    w.progress.on('progress', (written: number) => (lastProgress = written));
    for (let off = 0; off < bytes.length; off += 1 << 20) await writeChunk(w, bytes.subarray(off, off + (1 << 20)));
    assert.equal(fs.existsSync(store.pathOf(digest)), false, 'nothing is visible before commit');
    await new Promise<void>((resolve) => w.end(resolve));
    await w.commit();
    assert.equal(lastProgress, bytes.length);
    assert.equal(w.state, 'committed');
    assert.equal(store.pathOf(digest), path.join(dir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7)));
    assert.deepEqual(fs.readFileSync(store.pathOf(digest)), bytes);
    assert.equal(store.size(digest), bytes.length);
    assert.deepEqual(store.usage(), { bytes: bytes.length, blobs: 1 });
    assert.deepEqual(await readOut(store, digest), bytes);
    assert.deepEqual(await readOut(store, digest, 10, 19), bytes.subarray(10, 20));
    assert.deepEqual(tmpFiles(dir), []);
  });

  test('a writer destroyed after half the bytes leaves no blob and no temp file', async () => {
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    store.init();
    const bytes = crypto.randomBytes(256 * 1024);
    const digest = sha(bytes);
    const w = store.createWriter(digest, bytes.length);
    await writeChunk(w, bytes.subarray(0, bytes.length / 2));
    assert.equal(fs.statSync(w.tmpPath).size, bytes.length / 2, 'the first half is in the temp file');
    const aborted = once(w.progress, 'aborted');
    const errored = new Promise<Error>((resolve) => w.once('error', resolve));
    const closed = new Promise<void>((resolve) => w.once('close', () => resolve()));
    w.destroy(new Error('client went away'));
    const [why] = (await aborted) as [Error];
    assert.match(why.message, /client went away/);
    assert.match((await errored).message, /client went away/);
    await closed;
    assert.equal(w.state, 'aborted');
    assert.equal(fs.existsSync(store.pathOf(digest)), false);
    assert.equal(fs.existsSync(w.tmpPath), false);
    assert.equal(store.size(digest), null);
    assert.equal(store.open(digest), null);
    await assert.rejects(w.commit(), /client went away/);
    assert.equal(fs.existsSync(store.pathOf(digest)), false, 'a commit after the abort does not publish anything');
    assert.equal(new BlobStore(dir, BIG).init(), 0, 'the cancelled write already cleaned up after itself');
  });

  test('a writer destroyed while a write is under way does not close its file under that write', async () => {
    // A descriptor closed while a write to it waits in libuv's pool is the next file's descriptor by the time the write
    // runs: the next blob's file would get the first one's bytes while its digest, taken from the stream, still matches.
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    store.init();
    const junk = crypto.randomBytes(8 << 20);
    for (let i = 0; i < 20; i++) {
      const first = store.createWriter(sha(junk), junk.length);
      first.on('error', () => {});
      first.write(junk);
      first.destroy(new Error('upstream cut'));
      const bytes = crypto.randomBytes(1000 + i);
      await store.put(sha(bytes), bytes);
      assert.deepEqual(fs.readFileSync(store.pathOf(sha(bytes))), bytes, `round ${i}: the next blob's file holds exactly its bytes`);
    }
    await waitFor(() => tmpFiles(dir).length === 0, { timeoutMs: 5000, what: 'the destroyed writers to clean up' });
  });

  test('a process killed with SIGKILL mid-write leaves only a temp file, which the next start removes and counts', async () => {
    const dir = freshDir();
    const size = 512 * 1024;
    const proc = startProcess(process.execPath, ['--import', 'tsx', HALF_WRITER, dir, String(size)], { name: 'half-blob-writer', cwd: REPO });
    let info: { digest: string; tmpPath: string; written: number } | undefined;
    await waitFor(
      () => {
        const line = proc.output().split('\n').find((l) => l.startsWith('{'));
        if (line !== undefined) info = JSON.parse(line) as { digest: string; tmpPath: string; written: number };
        if (!proc.running()) throw new Error(`the writer exited early:\n${proc.output()}`);
        return info !== undefined;
      },
      { timeoutMs: 20_000, what: 'the child to write half a blob' },
    );
    assert.ok(info);
    assert.equal(info.written, size / 2);
    process.kill(proc.pid, 'SIGKILL');
    assert.equal(await proc.exited, null, 'the writer died from the signal');

    assert.equal(fs.statSync(info.tmpPath).size, size / 2, 'the half-written temp file is left behind');
    assert.equal(path.dirname(info.tmpPath), path.join(dir, 'blobs', 'tmp'));
    const store = new BlobStore(dir, BIG);
    assert.equal(fs.existsSync(store.pathOf(info.digest)), false, 'no blob appears under blobs/sha256 for the digest');
    assert.equal(store.init(), 1);
    assert.deepEqual(tmpFiles(dir), []);
    assert.equal(store.size(info.digest), null);
    assert.equal(store.open(info.digest), null);
    assert.deepEqual(store.usage(), { bytes: 0, blobs: 0 });
  });

  test('a digest mismatch on commit throws DigestMismatchError and leaves nothing', async () => {
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    store.init();
    const bytes = crypto.randomBytes(4096);
    const claimed = sha(Buffer.from('something else'));
    const err = await store.put(claimed, bytes).then(
      () => assert.fail('put accepted bytes that do not match the digest'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof DigestMismatchError);
    assert.equal(err.expected, claimed);
    assert.equal(err.actual, sha(bytes));
    assert.equal(fs.existsSync(store.pathOf(claimed)), false);
    assert.equal(fs.existsSync(store.pathOf(sha(bytes))), false);
    assert.deepEqual(tmpFiles(dir), []);
    assert.deepEqual(store.usage(), { bytes: 0, blobs: 0 });
  });

  test('more bytes than announced fail the write, and fewer fail the commit, leaving nothing', async () => {
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    store.init();
    const bytes = crypto.randomBytes(1000);

    const long = store.createWriter(sha(bytes), 999);
    await assert.rejects(pipeline(Readable.from([bytes]), long), /larger than the 999 bytes announced/);
    assert.equal(long.state, 'aborted');
    await waitFor(() => !fs.existsSync(long.tmpPath), { timeoutMs: 2000, what: 'the temp file of the refused write to be removed' });

    const short = store.createWriter(sha(bytes), 1001);
    await writeChunk(short, bytes);
    await assert.rejects(short.commit(), /received 1000 of 1001 bytes/);

    assert.equal(fs.existsSync(store.pathOf(sha(bytes))), false);
    assert.deepEqual(tmpFiles(dir), []);
  });

  test('a fresh store indexes the blobs already on disk', async () => {
    const dir = freshDir();
    const a = new BlobStore(dir, BIG);
    a.init();
    const x = crypto.randomBytes(100);
    const y = crypto.randomBytes(200);
    await a.put(sha(x), x);
    await a.put(sha(y), y);
    fs.writeFileSync(path.join(dir, 'blobs', 'sha256', 'README'), 'not a blob');
    const b = new BlobStore(dir, BIG);
    assert.equal(b.init(), 0);
    assert.deepEqual(b.usage(), { bytes: 300, blobs: 2 });
    assert.deepEqual(await b.readAll(sha(y)), y);
  });
});

describe('the size limit', () => {
  // limitedStore is a new store of maxBytes that lists the digests it evicts.
  function limitedStore(maxBytes: number): { store: BlobStore; evicted: string[] } {
    const store = new BlobStore(freshDir(), maxBytes);
    store.init();
    const evicted: string[] = [];
    store.onEvict = (digest) => evicted.push(digest);
    return { store, evicted };
  }

  test('evicts the least recently used blob first, and open() of an evicted blob returns null', async () => {
    const { store, evicted } = limitedStore(100);
    const a = crypto.randomBytes(40);
    const b = crypto.randomBytes(40);
    const c = crypto.randomBytes(40);
    await store.put(sha(a), a);
    await store.put(sha(b), b);
    assert.deepEqual(await readOut(store, sha(a)), a, 'reading a makes b the least recently used');
    await store.put(sha(c), c);

    assert.deepEqual(evicted, [sha(b)]);
    assert.equal(store.size(sha(b)), null);
    assert.equal(store.open(sha(b)), null);
    assert.equal(await store.readAll(sha(b)), null);
    await waitFor(() => !fs.existsSync(store.pathOf(sha(b))), { timeoutMs: 2000, what: 'the evicted file to be deleted' });
    assert.deepEqual(store.usage(), { bytes: 80, blobs: 2 });
    assert.deepEqual(await readOut(store, sha(a)), a);
    assert.deepEqual(await readOut(store, sha(c)), c);

    const d = crypto.randomBytes(40);
    await store.put(sha(d), d);
    assert.deepEqual(evicted, [sha(b), sha(a)], 'a was read before c, so a goes next');
    assert.equal(store.open(sha(a)), null);
  });

  test('a blob whose file vanished from disk reads as not cached', async () => {
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    store.init();
    const x = crypto.randomBytes(64);
    await store.put(sha(x), x);
    fs.rmSync(store.pathOf(sha(x)));
    assert.equal(store.open(sha(x)), null);
    assert.equal(store.size(sha(x)), null);
    assert.deepEqual(store.usage(), { bytes: 0, blobs: 0 });
  });

  test('a blob larger than the whole limit is not kept, and evicts nothing else', async () => {
    const { store, evicted } = limitedStore(100);
    const small = [crypto.randomBytes(30), crypto.randomBytes(30)];
    for (const b of small) await store.put(sha(b), b);
    const huge = crypto.randomBytes(150);
    await store.put(sha(huge), huge);
    assert.deepEqual(evicted, [sha(huge)]);
    assert.equal(store.size(sha(huge)), null);
    await waitFor(() => !fs.existsSync(store.pathOf(sha(huge))), { timeoutMs: 2000, what: 'the oversized file to be deleted' });
    assert.deepEqual(store.usage(), { bytes: 60, blobs: 2 }, 'the blobs that fit are all still cached');
    for (const b of small) assert.deepEqual(await readOut(store, sha(b)), b);
  });

  test('start-up clears a stray folder under tmp/ too', () => {
    const dir = freshDir();
    new BlobStore(dir, BIG).init();
    fs.mkdirSync(path.join(dir, 'blobs', 'tmp', 'stray', 'deeper'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'blobs', 'tmp', 'stray', 'deeper', 'file'), 'x');
    assert.equal(new BlobStore(dir, BIG).init(), 1);
    assert.deepEqual(tmpFiles(dir), []);
  });

  test('intact hashes a cached file again: true while it holds the blob, false once it was cut or is gone', async () => {
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    store.init();
    const x = crypto.randomBytes(3 << 20);
    await store.put(sha(x), x);
    assert.equal(await store.intact(sha(x)), true);
    fs.truncateSync(store.pathOf(sha(x)), 1000);
    assert.equal(await store.intact(sha(x)), false);
    fs.rmSync(store.pathOf(sha(x)));
    assert.equal(await store.intact(sha(x)), false);
  });

  test('remove deletes a blob and its file', async () => {
    const dir = freshDir();
    const store = new BlobStore(dir, BIG);
    store.init();
    const x = crypto.randomBytes(64);
    await store.put(sha(x), x);
    await store.remove(sha(x));
    assert.equal(fs.existsSync(store.pathOf(sha(x))), false);
    assert.equal(store.open(sha(x)), null);
  });
});

describe('the read buffer pool', () => {
  test('the chunk pool reuses buffers and refuses one given back twice or from elsewhere', () => {
    const pool = new ChunkPool(1024, 2);
    const a = pool.take();
    const b = pool.take();
    pool.give(a);
    assert.throws(() => pool.give(a), /given back twice/);
    assert.throws(() => pool.give(Buffer.alloc(10)), /not a buffer of this pool/);
    assert.equal(pool.take(), a, 'a buffer given back is handed out again');
    pool.give(a);
    pool.give(b);
    pool.give(Buffer.alloc(1024));
    assert.equal(pool.idle, 2, 'at most maxFree idle buffers are kept');
  });
});
