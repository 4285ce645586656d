// Sending a blob body to the client in whole pooled chunks, reading the next chunk while the socket sends this one;
// the headers that describe a manifest; and whether a conditional request already holds what would be sent.
import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';
import { type BlobBody, chunkPool } from '../../storage/chunks.js';

type ReadResult = { n: number; err?: undefined } | { n: 0; err: unknown };

// readInto starts a read whose promise never rejects, so it can be awaited after waiting for something else.
function readInto(body: BlobBody, buf: Buffer): Promise<ReadResult> {
  return body.read(buf).then(
    (n) => ({ n }),
    (err: unknown) => ({ n: 0, err }),
  );
}

// drained resolves when the response can take more bytes, or has closed.
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

// sendBody answers with the reply's status and headers and the body's bytes. The first chunk is read before anything
// is sent, so a body that fails at once (an upstream that is down) still becomes an error response through the
// normal error handler; a failure after that aborts the connection, leaving the client short of the Content-Length.
export async function sendBody(reply: FastifyReply, body: BlobBody): Promise<void> {
  const first = chunkPool.take();
  const r = await readInto(body, first);
  if (r.err !== undefined) {
    chunkPool.give(first);
    body.close();
    throw r.err;
  }
  // From here on the bytes go straight to the socket: Fastify's stream path would take each chunk as a fresh buffer.
  reply.hijack();
  const res = reply.raw;
  try {
    for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) res.setHeader(name, value);
    res.writeHead(reply.statusCode);
  } catch (err) {
    // A header Node refuses to send: nothing answers the client now, so the connection ends, and the file with it.
    chunkPool.give(first);
    body.close();
    res.destroy(err as Error);
    throw err;
  }
  // A client that goes away also ends a read waiting for an upstream download.
  res.once('close', () => body.close());
  const sent = reply.request.airlock;
  sent.bytes = 0;
  pump(res, body, first, r.n, sent).catch((err: Error) => res.destroy(err));
}

async function pump(res: ServerResponse, body: BlobBody, first: Buffer, firstLength: number, sent: { bytes: number | null }): Promise<void> {
  let buf = first;
  let n = firstLength;
  try {
    while (n > 0) {
      const chunk = buf;
      const length = n;
      // The write callback runs once the socket has taken the bytes (or failed): only then is the buffer free again,
      // and only then are the bytes counted as sent.
      const more = res.write(n === chunk.length ? chunk : chunk.subarray(0, n), (err) => {
        if (!err) sent.bytes = (sent.bytes ?? 0) + length;
        chunkPool.give(chunk);
      });
      const next = chunkPool.take();
      const reading = readInto(body, next);
      if (!more && !res.destroyed) await drained(res);
      const r = await reading;
      if (res.destroyed) {
        chunkPool.give(next);
        return;
      }
      if (r.err !== undefined) {
        chunkPool.give(next);
        res.destroy(r.err instanceof Error ? r.err : new Error(String(r.err)));
        return;
      }
      buf = next;
      n = r.n;
    }
    chunkPool.give(buf);
    res.end();
  } finally {
    body.close();
  }
}

// REGISTRY_HEADERS go on every /v2 response. Blobs and manifests are bytes someone upstream chose, sent with the media
// type their manifest declares (SPEC §4), text/html or image/svg+xml included: a browser holding an admin certificate
// must never run them as a page of this origin, where they could call the admin API. nosniff keeps a browser from
// guessing a type, and the sandbox policy runs anything it renders without scripts, in an origin of its own.
export const REGISTRY_HEADERS: Readonly<Record<string, string>> = {
  'docker-distribution-api-version': 'registry/2.0',
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'; sandbox",
};

// manifestHeaders are the headers that describe a manifest in a response, a 304 included.
export function manifestHeaders(digest: string, mediaType: string): Record<string, string> {
  return { 'content-type': mediaType, 'docker-content-digest': digest, etag: `"${digest}"` };
}

// notModified tells whether If-None-Match names the content's ETag ("<digest>"): in a list, weak or strong, or as "*";
// the bare digest counts too, as distribution accepts it.
export function notModified(header: string | undefined, digest: string): boolean {
  if (header === undefined) return false;
  for (const part of header.split(',')) {
    const tag = part.trim().replace(/^W\//, '');
    if (tag === '*' || tag === digest || tag === `"${digest}"`) return true;
  }
  return false;
}
