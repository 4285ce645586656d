// Requests Node's HTTP parser refuses after a good mutual-TLS handshake (headers over the limit, a control character in
// a header, a byte of 0x80 or above in the path, a garbled request line, an unknown method), sent as raw bytes on real
// TLS connections: each is answered in airlock's error body and closes its connection, and is logged, counted and,
// under /v2, audited once, like any other request; the server goes on serving. And a connection pipelining more than
// eight requests is closed with every request on it recorded.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import type { AuditEvent } from '../server/audit/chain.js';
import { type Bundle, startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { readRequestLog, type RequestLine } from './harness/clients.js';
import { waitFor } from './harness/proc.js';

let tmp: string;
let t: TestAirlock;
let pull: Bundle;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-parser-refusals-'));
  t = await startTestAirlock({ dir: path.join(tmp, 'airlock') });
  pull = t.bundle('pull');
});

after(async () => {
  await t?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// Answer is one HTTP response as it came off the wire.
interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

// exchange opens a TLS connection with the pull certificate, has send write to it, and returns all the server sent
// until it closed the connection.
function exchange(send: (s: tls.TLSSocket) => void): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect(
      {
        host: '127.0.0.1',
        port: t.airlock.port,
        ca: fs.readFileSync(t.caPath),
        cert: fs.readFileSync(pull.endpoint.clientCertPath ?? ''),
        key: fs.readFileSync(pull.endpoint.clientKeyPath ?? ''),
        servername: 'localhost',
      },
      () => send(s),
    );
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('error', () => {});
    s.setTimeout(10_000, () => s.destroy(new Error('the server did not close the connection')));
    s.on('close', () => resolve(text));
  });
}

// exchangeBytes writes bytes in one go.
function exchangeBytes(bytes: Buffer | string): Promise<string> {
  return exchange((s) => s.write(bytes));
}

// answers splits what a connection received into responses (each with a content-length).
function answers(text: string): Answer[] {
  const out: Answer[] = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    assert.ok(end > 0, `an HTTP head in ${JSON.stringify(rest.slice(0, 200))}`);
    const [first, ...lines] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
    const length = Number(headers['content-length']);
    out.push({ status: Number(first?.split(' ')[1]), headers, body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

// requestsCounted reads airlock_requests_total for one route, method and status.
async function requestsCounted(route: string, method: string, status: number | 'aborted'): Promise<number> {
  const text = await t.airlock.services.metrics.registry.getSingleMetricAsString('airlock_requests_total');
  const line = text.split('\n').find((l) => l.includes(`route="${route}"`) && l.includes(`method="${method}"`) && l.includes(`status="${status}"`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

// Recorded is what the log and the audit log gained since a mark.
interface Recorded {
  lines: RequestLine[];
  events: AuditEvent[];
}

// mark notes the log and the audit log now; recordedSince returns what they gained, once it holds n log lines.
function mark(): { lines: number; seq: number } {
  return { lines: readRequestLog(t.logPath).length, seq: t.airlock.services.audit.head().seq };
}

async function recordedSince(m: { lines: number; seq: number }, n: number): Promise<Recorded> {
  await waitFor(() => readRequestLog(t.logPath).length >= m.lines + n, { timeoutMs: 5000, what: `${n} request log lines` });
  await t.airlock.services.audit.stored();
  const events = [...t.airlock.services.auditStore.range('', '9999', Number.MAX_SAFE_INTEGER)].filter((e) => e.seq > m.seq);
  return { lines: readRequestLog(t.logPath).slice(m.lines), events };
}

// stillServes asks for /v2/ with the pull certificate, as a registry client would after a refusal.
async function stillServes(): Promise<void> {
  const r = await t.request('pull', '/v2/');
  assert.equal(r.status, 200, 'the server goes on serving good requests');
}

// Kind is a request the parser refuses: its bytes, and how airlock answers and records it.
interface Kind {
  what: string;
  bytes: Buffer | string;
  method: string;
  path: string;
  route: string;
  code: string;
}

const V2_KINDS: Kind[] = [
  { what: 'a control character in a header', bytes: 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: a\x01b\r\n\r\n', method: 'GET', path: '/v2/', route: 'v2', code: 'UNSUPPORTED' },
  {
    what: 'a byte of 0x80 or above in the path',
    bytes: Buffer.concat([Buffer.from('GET /v2/library/alpine/manifests/'), Buffer.from([0xff]), Buffer.from(' HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')]),
    method: 'GET',
    path: '/v2/library/alpine/manifests/\u00ff',
    route: 'v2_manifests',
    code: 'NAME_INVALID',
  },
  { what: 'a garbled request line', bytes: 'GET /v2/library/alpine/tags/list HTXP/1.1\r\nHost: 127.0.0.1\r\n\r\n', method: 'GET', path: '/v2/library/alpine/tags/list', route: 'v2_tags', code: 'UNSUPPORTED' },
  { what: 'an unknown method', bytes: 'BREW /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', method: '_OTHER', path: '/v2/', route: 'v2', code: 'UNSUPPORTED' },
];

describe('requests the HTTP parser refuses', () => {
  for (const k of V2_KINDS) {
    test(`a /v2 request with ${k.what} is answered 400 with the OCI error body, logged once, counted and audited once`, async () => {
      const m = mark();
      const counted = await requestsCounted(k.route, k.method, 400);
      const [a, ...more] = answers(await exchangeBytes(k.bytes));
      assert.equal(more.length, 0);
      assert.equal(a?.status, 400);
      assert.equal(a.headers.connection, 'close');
      assert.equal(a.headers['docker-distribution-api-version'], 'registry/2.0');
      assert.equal(a.headers['content-type'], 'application/json');
      const body = JSON.parse(a.body) as { errors: { code: string; message: string; detail: unknown }[] };
      assert.equal(body.errors.length, 1);
      assert.equal(body.errors[0]?.code, k.code);
      assert.match(body.errors[0]?.message ?? '', /^malformed request: /);

      await recordedSince(m, 1);
      await stillServes();
      const r = await recordedSince(m, 2);
      assert.equal(r.lines.length, 2, 'one line for the refused request, one for the good one');
      const [line] = r.lines;
      assert.equal(line?.status, 400);
      assert.equal(line.method, k.method);
      assert.equal(line.path, k.path);
      assert.equal(line.serial, pull.serial);
      assert.equal(line.decision, 'deny');
      assert.match(line.reason ?? '', /^malformed request: /);
      const refused = r.events.filter((e) => e.status === 400);
      assert.equal(refused.length, 1, 'one audit event');
      assert.equal(refused[0]?.action, `${k.route}.${k.method.toLowerCase()}`);
      assert.equal(refused[0].actorSerial, pull.serial);
      assert.equal(refused[0].decision, 'deny');
      assert.equal(r.events.length, 2, 'and one for the good request');
      assert.equal(await requestsCounted(k.route, k.method, 400), counted + 1);
    });
  }

  test('an /api request with a control character in a header is answered 400 with the API error body and logged, not audited', async () => {
    const m = mark();
    const counted = await requestsCounted('api', 'POST', 400);
    const [a] = answers(await exchangeBytes('POST /api/v1/pins HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: a\x7fb\r\nContent-Length: 0\r\n\r\n'));
    assert.equal(a?.status, 400);
    assert.equal(a.headers.connection, 'close');
    assert.equal(a.headers['docker-distribution-api-version'], undefined);
    assert.equal(a.headers['cache-control'], 'no-store');
    const body = JSON.parse(a.body) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'BAD_REQUEST');
    assert.match(body.error.message, /^malformed request: /);
    const r = await recordedSince(m, 1);
    assert.equal(r.lines.length, 1);
    assert.equal(r.lines[0]?.path, '/api/v1/pins');
    assert.equal(r.lines[0].status, 400);
    assert.deepEqual(r.events, [], 'a refused API read or change that reached no route is no audit event');
    assert.equal(await requestsCounted('api', 'POST', 400), counted + 1);
    await stillServes();
  });

  test('a credential in a header never reaches the log, even when the request is cut by a TLS record inside it', async () => {
    const m = mark();
    // Two writes, two TLS records: the refused bytes begin with the rest of the Authorization header.
    const text = await exchange((s) => {
      s.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ');
      s.write('BEARER /s3cr3t-t0ken\x01\r\n\r\n');
    });
    assert.equal(answers(text)[0]?.status, 400);
    const r = await recordedSince(m, 1);
    assert.equal(r.lines.length, 1);
    assert.equal(r.lines[0]?.path, '', 'the request line was in the first record: the path is unknown');
    assert.ok(!fs.readFileSync(t.logPath, 'utf8').includes('s3cr3t'), 'the credential is nowhere in the log');
  });

  test('headers over 16 KiB are answered 431 and logged once, their path unknown: the request line came in an earlier TLS record', async () => {
    const m = mark();
    const counted = await requestsCounted('other', '_OTHER', 431);
    const [a, ...more] = answers(await exchangeBytes(`GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ${'a'.repeat(20_000)}\r\n\r\n`));
    assert.equal(more.length, 0);
    assert.equal(a?.status, 431);
    assert.equal(a.headers.connection, 'close');
    assert.deepEqual(JSON.parse(a.body), { error: { code: 'BAD_REQUEST', message: 'request headers too large' } });
    await recordedSince(m, 1);
    await stillServes();
    const r = await recordedSince(m, 2);
    assert.equal(r.lines.length, 2);
    assert.equal(r.lines[0]?.status, 431);
    assert.equal(r.lines[0].method, '_OTHER');
    assert.equal(r.lines[0].path, '');
    assert.equal(r.lines[0].serial, pull.serial);
    assert.equal(r.lines[0].reason, 'request headers too large');
    assert.equal(r.events.length, 1, 'only the good request is audited: nothing says the refused one was a registry request');
    assert.equal(await requestsCounted('other', '_OTHER', 431), counted + 1);
  });

  test('headers that do not arrive within the headers timeout are answered 408 and logged once, their path unknown', async () => {
    const server = t.airlock.app.server;
    const headersTimeout = server.headersTimeout;
    // 15 s in production; Node checks it every second (connectionsCheckingInterval).
    server.headersTimeout = 500;
    try {
      const m = mark();
      const counted = await requestsCounted('other', '_OTHER', 408);
      const [a] = answers(await exchangeBytes('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: '));
      assert.equal(a?.status, 408);
      assert.equal(a.headers.connection, 'close');
      assert.deepEqual(JSON.parse(a.body), { error: { code: 'BAD_REQUEST', message: 'request not received in time' } });
      const r = await recordedSince(m, 1);
      assert.deepEqual(
        r.lines.map((l) => [l.method, l.path, l.status, l.reason, l.serial]),
        [['_OTHER', '', 408, 'request not received in time', pull.serial]],
      );
      assert.equal(await requestsCounted('other', '_OTHER', 408), counted + 1);
    } finally {
      server.headersTimeout = headersTimeout;
    }
    await stillServes();
  });

  test('a refused request pipelined after a good one is answered after it, in order, and both are recorded', async () => {
    const m = mark();
    const all = answers(await exchangeBytes('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nBREW /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
    assert.deepEqual(
      all.map((a) => a.status),
      [200, 400],
    );
    const r = await recordedSince(m, 2);
    assert.deepEqual(
      r.lines.map((l) => [l.method, l.path, l.status]),
      [
        ['GET', '/v2/', 200],
        ['_OTHER', '/v2/', 400],
      ],
    );
    assert.deepEqual(
      r.events.map((e) => [e.action, e.status]),
      [
        ['registry.ping', 200],
        ['v2._other', 400],
      ],
    );
  });

  test('a malformed body of a request already routed is recorded once, as that request', async () => {
    const m = mark();
    await exchangeBytes('POST /api/v1/pins HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
    await stillServes();
    const r = await recordedSince(m, 2);
    assert.deepEqual(
      r.lines.map((l) => [l.method, l.path]),
      [
        ['POST', '/api/v1/pins'],
        ['GET', '/v2/'],
      ],
    );
  });

  test('a connection error that is no request (a reset), or one on a closed connection, is neither answered nor recorded', async () => {
    const m = mark();
    const closed = new net.Socket();
    closed.destroy();
    const server = t.airlock.app.server;
    assert.doesNotThrow(() => server.emit('clientError', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), closed));
    assert.doesNotThrow(() => server.emit('clientError', Object.assign(new Error('Parse Error: Invalid method encountered'), { code: 'HPE_INVALID_METHOD', rawPacket: Buffer.from('BREW /v2/ HTTP/1.1\r\n\r\n'), bytesParsed: 1 }), closed));
    await stillServes();
    const r = await recordedSince(m, 1);
    assert.deepEqual(
      r.lines.map((l) => [l.method, l.path, l.status]),
      [['GET', '/v2/', 200]],
    );
  });
});

describe('pipelining', () => {
  test('a connection with more than 8 pipelined requests is closed, and every request on it is logged and audited', async () => {
    const m = mark();
    const counted = await requestsCounted('v2', 'GET', 'aborted');
    const sent = 12;
    await exchangeBytes('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.repeat(sent));
    const r = await recordedSince(m, sent);
    assert.equal(r.lines.length, sent, 'one line per request');
    assert.ok(
      r.lines.every((l) => l.path === '/v2/' && l.serial === pull.serial),
      JSON.stringify(r.lines),
    );
    assert.equal(r.lines.filter((l) => l.reason === 'more than 8 requests at once on one connection').length, sent - 8, 'those past the eighth say why they were cut off');
    assert.equal(r.events.filter((e) => e.action === 'registry.ping' || e.action === 'v2.get').length, sent, 'one audit event per request');
    assert.ok((await requestsCounted('v2', 'GET', 'aborted')) >= counted + sent - 8);
    await stillServes();
  });
});
