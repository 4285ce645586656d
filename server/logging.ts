// The pino logger and the destination its lines go to.
import fs from 'node:fs';
import pino, { type Logger } from 'pino';

// REDACT lists log paths that may carry secrets; they never reach the log.
// Explicit paths only: wildcard paths make pino walk every logged object, which costs more than the request itself.
// err.rawPacket is the raw bytes of a request Node could not parse, headers and all: runtime.ts answers such requests
// and never logs it, and it stays redacted should anything log one.
export const REDACT = ['req.headers.authorization', 'headers.authorization', 'password', 'token', 'key', 'privateKey', 'err.password', 'err.token', 'err.rawPacket'];

// MAX_PENDING bounds the log bytes waiting for a slow destination (a stalled pipe); beyond it lines are dropped and
// counted, so logging never holds up serving nor grows without limit.
const MAX_PENDING = 16 << 20;

// COALESCE_MS is how long lines gather before they leave in one write. Writing again as soon as the last write
// completed meant 150-190 writes a second at 9,000 requests a second, and the calls took 2-3 % of the request thread's
// time; gathered for 10 ms, 30-50 writes and under 1 %, and a line normally reaches the log within 10 ms.
const COALESCE_MS = 10;

// OUT_BYTES is the size of the buffer the lines of one write are encoded into, reused from write to write (a larger
// write gets a buffer of its own). Joining the lines into one string first and encoding that made a string of over
// 128 KiB at 15,000 requests a second, which V8 places in its large-object space, and allocating and filling that cost
// 2 % of the request thread's time (docs/performance.md).
const OUT_BYTES = 1 << 20;

// LineWriter is the destination of the request log: the lines of the last few milliseconds leave in one write, off the
// main thread. pino's own asynchronous destination measures the UTF-8 length of its whole pending buffer on every
// line, which at a few thousand requests a second cost more than building the line.
export class LineWriter {
  private readonly fd: number;
  private readonly maxPending: number;
  private parts: string[] = [];
  private pending = 0;
  private readonly out = Buffer.allocUnsafeSlow(OUT_BYTES);
  private writing = false;
  private timer: NodeJS.Timeout | null = null;
  private waiters: (() => void)[] = [];
  dropped = 0;

  constructor(fd: number, maxPending = MAX_PENDING) {
    this.fd = fd;
    this.maxPending = maxPending;
  }

  // write queues one line (pino's destination interface).
  write(line: string): boolean {
    if (this.pending + line.length > this.maxPending) {
      this.dropped++;
      return false;
    }
    this.parts.push(line);
    this.pending += line.length;
    this.schedule();
    return true;
  }

  // schedule arranges the next write, COALESCE_MS from now, unless one is under way (it schedules when it completes).
  private schedule(): void {
    if (this.writing || this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.drain();
    }, COALESCE_MS);
  }

  // flush calls back once every line queued so far has been written (pino's logger.flush).
  flush(cb?: (err?: Error) => void): void {
    if (!this.writing && this.parts.length === 0) {
      cb?.();
      return;
    }
    if (cb) this.waiters.push(() => cb());
    if (!this.writing) this.drain();
  }

  // flushSync writes what is queued before the process exits.
  flushSync(): void {
    if (this.writing) return;
    const data = this.take();
    if (data) writeAllSync(this.fd, data);
  }

  // take encodes the queued lines into the output buffer and returns them; callers take only while no write is under way.
  private take(): Buffer | null {
    if (this.dropped > 0) {
      const line = `${JSON.stringify({ level: 40, time: Date.now(), service: 'airlock', dropped: this.dropped, msg: 'log lines dropped: the log destination is too slow' })}\n`;
      this.parts.push(line);
      this.pending += line.length;
      this.dropped = 0;
    }
    if (this.parts.length === 0) return null;
    // UTF-8 takes at most 3 bytes for a UTF-16 code unit.
    const most = this.pending * 3;
    const out = most <= this.out.length ? this.out : Buffer.allocUnsafeSlow(most);
    let n = 0;
    for (const part of this.parts) n += out.write(part, n, 'utf8');
    this.parts = [];
    this.pending = 0;
    return out.subarray(0, n);
  }

  private drain(): void {
    // One write at a time, in order; the one under way drains again when it completes.
    if (this.writing) return;
    const data = this.take();
    if (data === null) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w();
      return;
    }
    this.writing = true;
    writeAll(this.fd, data, () => {
      this.writing = false;
      // Someone waiting in flush() gets the rest now; otherwise the lines queued meanwhile wait COALESCE_MS.
      if (this.waiters.length > 0 || this.parts.length === 0) this.drain();
      else this.schedule();
    });
  }
}

// writeAll writes every byte, retrying short writes and a non-blocking destination that is momentarily full; a
// destination that fails otherwise (closed stdout) loses the lines rather than the server.
function writeAll(fd: number, data: Buffer, done: () => void, offset = 0): void {
  fs.write(fd, data, offset, data.length - offset, null, (err, n) => {
    if (err) {
      if (err.code === 'EAGAIN') setTimeout(() => writeAll(fd, data, done, offset), 10);
      else done();
      return;
    }
    if (offset + n < data.length) writeAll(fd, data, done, offset + n);
    else done();
  });
}

function writeAllSync(fd: number, data: Buffer): void {
  let offset = 0;
  for (let attempts = 0; offset < data.length && attempts < 1000; attempts++) {
    try {
      offset += fs.writeSync(fd, data, offset, data.length - offset);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
    }
  }
}

// createLogger makes the pino logger with secrets redacted at creation, writing to stdout through a LineWriter unless
// given another destination. startAirlock's close() flushes it.
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  let out = destination;
  if (!out) {
    const stdout = new LineWriter(1);
    // Lines of the last turn before an exit that skipped close() (a crash) still reach the log.
    process.once('exit', () => stdout.flushSync());
    out = stdout;
  }
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: { service: 'airlock' } }, out);
}

// RequestLine is what the one log line per request says (SPEC §8), in the order of the line.
export interface RequestLine {
  actor: string | null;
  serial: string | null;
  role: string | null;
  method: string;
  path: string;
  repo: string | null;
  ref: string | null;
  digest: string | null;
  decision: string | null;
  reason: string | null;
  source: string | null;
  status: number | 'aborted';
  bytes: number | null;
  ms: number;
}

// requestLog returns the writer of the request lines: the line pino would write for logger.info(line, 'request') (or
// warn), with the logger's level, time and bindings, built by one JSON.stringify. pino builds a line field by field, by
// string concatenation; for this line, written with every request, that was 2.4 µs against 1.4 µs, and its pieces were
// copied together again when the line was written. The fields are fixed and hold no secrets, so nothing is redacted.
export function requestLog(logger: Logger): (warn: boolean, line: RequestLine) => void {
  const internals = logger as unknown as Record<symbol, unknown>;
  const stream = internals[pino.symbols.streamSym] as pino.DestinationStream;
  const time = internals[pino.symbols.timeSym] as () => string;
  const bindings = internals[pino.symbols.chindingsSym] as string;
  const { info, warn } = logger.levels.values;
  return (isWarn, line) => {
    if (!logger.isLevelEnabled(isWarn ? 'warn' : 'info')) return;
    const fields = JSON.stringify(line);
    stream.write(`{"level":${isWarn ? warn : info}${time()}${bindings},${fields.slice(1, -1)},"msg":"request"}\n`);
  };
}
