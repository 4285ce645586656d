// The request log's destination: lines leave in order, gathered for a few milliseconds into one write, flush() waits
// for them, a destination that falls behind costs dropped lines (counted in the log) rather than memory, and secrets
// stay out.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createLogger, LineWriter, type RequestLine, requestLog } from '../server/logging.js';
import { waitFor } from './harness/proc.js';

let tmp: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-logging-'));
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function lines(file: string): Record<string, unknown>[] {
  return fs
    .readFileSync(file, 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

// openWriter opens a fresh log file under tmp and a LineWriter on it.
function openWriter(name: string, maxPending?: number): { file: string; fd: number; w: LineWriter } {
  const file = path.join(tmp, name);
  const fd = fs.openSync(file, 'a');
  return { file, fd, w: new LineWriter(fd, maxPending) };
}

// flushed resolves once everything the writer has queued is written.
function flushed(w: LineWriter): Promise<void> {
  return new Promise((resolve) => w.flush(() => resolve()));
}

test('lines written in one turn reach the file in order, and flush() calls back once they are written', async () => {
  const { file, fd, w } = openWriter('order.log');
  for (let i = 0; i < 1000; i++) w.write(`${JSON.stringify({ i })}\n`);
  assert.equal(fs.statSync(file).size, 0, 'nothing is written synchronously');
  await flushed(w);
  assert.deepEqual(
    lines(file).map((l) => l.i),
    Array.from({ length: 1000 }, (_, i) => i),
  );
  fs.closeSync(fd);
});

test('lines written over several turns reach the file on their own, in order, without a flush', async () => {
  const { file, fd, w } = openWriter('turns.log');
  for (let i = 0; i < 50; i++) {
    w.write(`${JSON.stringify({ i })}\n`);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await waitFor(() => fs.readFileSync(file, 'utf8').split('\n').length > 50, {
    timeoutMs: 5000,
    what: 'the 50 lines in the file',
  });
  assert.deepEqual(
    lines(file).map((l) => l.i),
    Array.from({ length: 50 }, (_, i) => i),
  );
  fs.closeSync(fd);
});

test('lines in any script, of any length, reach the file byte for byte', async () => {
  const { file, fd, w } = openWriter('scripts.log');
  const sent: string[] = [];
  // Lines of 1- to 4-byte characters, about 1 MB of them, and two lines of 400 and 100 KB.
  for (let i = 0; i < 4000; i++) {
    const pad = ['a', 'é', '€', '😀'][i % 4]!.repeat(40 + (i % 97));
    sent.push(`${JSON.stringify({ i, pad })}\n`);
  }
  sent.splice(1234, 0, `${JSON.stringify({ long: 'ü'.repeat(200_000) })}\n`, `${JSON.stringify({ long: 'x'.repeat(100_000) })}\n`);
  for (const line of sent) w.write(line);
  await flushed(w);
  assert.ok(fs.readFileSync(file).equals(Buffer.from(sent.join(''), 'utf8')));
  fs.closeSync(fd);
});

test('batches of lines written turn after turn share one output buffer and still reach the file byte for byte', async () => {
  const { file, fd, w } = openWriter('reuse.log');
  const sent: string[] = [];
  // Each turn's batch fits the reused buffer; the pauses let a write be under way while the next batch gathers.
  for (let turn = 0; turn < 40; turn++) {
    for (let i = 0; i < 150; i++) {
      const line = `${JSON.stringify({ turn, i, pad: ['a', 'é', '€', '😀'][(turn + i) % 4]!.repeat(20 + ((turn * 7 + i) % 150)) })}\n`;
      sent.push(line);
      w.write(line);
    }
    await new Promise((resolve) => setTimeout(resolve, turn % 3));
  }
  await flushed(w);
  assert.ok(fs.readFileSync(file).equals(Buffer.from(sent.join(''), 'utf8')));
  fs.closeSync(fd);
});

test('a destination that cannot keep up drops lines beyond the limit and says how many', async () => {
  const { file, fd, w } = openWriter('drops.log', 1000);
  const line = `${JSON.stringify({ pad: 'x'.repeat(90) })}\n`;
  for (let i = 0; i < 30; i++) w.write(line);
  assert.equal(w.dropped, 21, 'nine lines of 101 bytes fit in 1000 bytes');
  await flushed(w);
  const out = lines(file);
  assert.equal(out.length, 10);
  assert.equal(out[9]?.dropped, 21);
  assert.match(String(out[9]?.msg), /dropped/);
  assert.equal(w.dropped, 0);
  fs.closeSync(fd);
});

test('flushSync writes what is queued at once, for the exit path', () => {
  const { file, fd, w } = openWriter('sync.log');
  w.write('{"a":1}\n');
  w.write('{"a":2}\n');
  w.flushSync();
  assert.deepEqual(lines(file), [{ a: 1 }, { a: 2 }]);
  fs.closeSync(fd);
});

test('the logger redacts secrets on the way to its destination', async () => {
  const { file, fd, w } = openWriter('redact.log');
  const logger = createLogger('info', w);
  logger.info({ password: 'hunter2', token: 'abc', req: { headers: { authorization: 'Bearer xyz' } }, repo: 'docker.io/library/a' }, 'request');
  await new Promise<void>((resolve) => logger.flush(() => resolve()));
  const text = fs.readFileSync(file, 'utf8');
  for (const secret of ['hunter2', 'abc', 'Bearer xyz']) assert.ok(!text.includes(secret), `${secret} is not logged`);
  assert.equal(lines(file)[0]?.repo, 'docker.io/library/a');
  fs.closeSync(fd);
});

test('the request line is the line pino writes for the same fields, at info and at warn, escapes included', () => {
  const out: string[] = [];
  const logger = createLogger('info', { write: (line: string) => out.push(line) });
  const line: RequestLine = {
    actor: 'ci "runner"\\1',
    serial: '0a1b',
    role: 'pull',
    method: 'GET',
    path: '/v2/library/é/manifests/1.0?ns=\u0001\u2028',
    repo: 'docker.io/library/é',
    ref: '1.0',
    digest: null,
    decision: 'deny',
    reason: null,
    source: null,
    status: 'aborted',
    bytes: null,
    ms: 0.1,
  };
  const log = requestLog(logger);
  logger.info(line, 'request');
  log(false, line);
  logger.warn({ ...line, status: 503 }, 'request');
  log(true, { ...line, status: 503 });
  const withoutTime = (l: string | undefined): string => (l ?? '').replace(/"time":\d+,/, '');
  assert.equal(out.length, 4);
  assert.equal(withoutTime(out[1]), withoutTime(out[0]));
  assert.equal(withoutTime(out[3]), withoutTime(out[2]));
  assert.equal(JSON.parse(out[1] ?? '').level, 30);
  assert.equal(JSON.parse(out[3] ?? '').level, 40);
  assert.equal(JSON.parse(out[1] ?? '').actor, 'ci "runner"\\1');

  const quiet = createLogger('warn', { write: (l: string) => out.push(l) });
  requestLog(quiet)(false, line);
  assert.equal(out.length, 4, 'below the level nothing is written');
});
