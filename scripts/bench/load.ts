// load is the benchmark's load generator, run as its own process so it never shares an event loop with a server.
// It speaks HTTP/1.1 over TLS 1.3 (AES-128-GCM, what Go clients pick) with undici's low-level dispatch API: bodies are
// counted as they arrive and never buffered. It prints one JSON result line per job.
// Usage: node --import tsx scripts/bench/load.ts '<LoadJob as JSON>'   (one job)
//        node --import tsx scripts/bench/load.ts --stdin              (one job per input line, until stdin ends)
import fs from 'node:fs';
import readline from 'node:readline';
import { performance } from 'node:perf_hooks';
import { Client, type Dispatcher, Pool } from 'undici';

/** LoadTls names the PEM files of the server's CA and the client pair. */
export interface LoadTls {
  ca: string;
  cert?: string;
  key?: string;
}

/** BlobJob downloads one URL with `clients` connections at once, after a warm-up request on each connection; each
 * connection downloads it `rounds` times, one after another. */
export interface BlobJob {
  mode: 'blob';
  origin: string;
  path: string;
  tls: LoadTls;
  clients: number;
  rounds: number;
  /** expectBytes is the body size every download must have. */
  expectBytes: number;
  /** warmPath is requested once per connection before the clock starts (any status), so handshakes are not timed. */
  warmPath: string;
  timeoutMs: number;
}

/** RequestsJob sends GETs over `connections` keep-alive connections for a fixed time and records latencies. */
export interface RequestsJob {
  mode: 'requests';
  origin: string;
  path: string;
  tls: LoadTls;
  connections: number;
  warmupMs: number;
  durationMs: number;
  headers: Record<string, string>;
  /** expectBytes, when set, is the body size every response must have. */
  expectBytes?: number;
}

/** InterleaveJob sends GETs to several series in turn, each over its own pool of keep-alive connections opened before
 * the clock starts: the series take turns in slices of sliceMs (after a warm-up of warmupMs each turn that is not
 * counted), `slices` turns each, always in the order given, so each series always follows the same one. This machine
 * runs faster or slower for seconds at a time; short turns spread such phases over every series alike instead of onto
 * whichever ran then. */
export interface InterleaveJob {
  mode: 'interleave';
  series: { name: string; origin: string; path: string }[];
  tls: LoadTls;
  connections: number;
  warmupMs: number;
  sliceMs: number;
  slices: number;
  headers: Record<string, string>;
  /** expectBytes, when set, is the body size every response must have. */
  expectBytes?: number;
}

/** LoadJob is what the load generator is asked to do. */
export type LoadJob = BlobJob | RequestsJob | InterleaveJob;

/** BlobResult is the outcome of a BlobJob. */
export interface BlobResult {
  mode: 'blob';
  clients: number;
  rounds: number;
  bytes: number;
  seconds: number;
  /** mbPerSec is the aggregate throughput in 10^6 bytes per second. */
  mbPerSec: number;
  clientSeconds: number[];
}

/** RequestsResult is the outcome of a RequestsJob. */
export interface RequestsResult {
  mode: 'requests';
  connections: number;
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  /** statuses counts responses by HTTP status in the measured window. */
  statuses: Record<string, number>;
}

/** InterleaveResult is the outcome of an InterleaveJob: one RequestsResult per series, over its measured slices. */
export interface InterleaveResult {
  mode: 'interleave';
  series: Record<string, RequestsResult>;
}

/** LoadResult is one line of the load generator's output. */
export type LoadResult = BlobResult | RequestsResult | InterleaveResult;

interface Fetched {
  status: number;
  bytes: number;
}

function connectOptions(tls: LoadTls): Record<string, unknown> {
  return {
    ca: fs.readFileSync(tls.ca),
    cert: tls.cert === undefined ? undefined : fs.readFileSync(tls.cert),
    key: tls.key === undefined ? undefined : fs.readFileSync(tls.key),
    minVersion: 'TLSv1.3',
    ciphers: 'TLS_AES_128_GCM_SHA256',
  };
}

// fetchOnce sends one request and counts the body bytes as they arrive, without keeping them.
function fetchOnce(d: Dispatcher, path: string, headers: Record<string, string> = {}): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    let status = 0;
    let bytes = 0;
    d.dispatch(
      { path, method: 'GET', headers },
      {
        // undici treats a handler as the new (controller) kind only when it has onRequestStart.
        onRequestStart() {},
        onResponseStart(_c, code) {
          status = code;
        },
        onResponseData(_c, chunk) {
          bytes += chunk.length;
        },
        onResponseEnd() {
          resolve({ status, bytes });
        },
        onResponseError(_c, err) {
          reject(err);
        },
      },
    );
  });
}

async function runBlob(job: BlobJob): Promise<BlobResult> {
  const clients = Array.from(
    { length: job.clients },
    () => new Client(job.origin, { connect: connectOptions(job.tls), pipelining: 1, headersTimeout: job.timeoutMs, bodyTimeout: job.timeoutMs }),
  );
  try {
    await Promise.all(clients.map((c) => fetchOnce(c, job.warmPath)));
    const start = performance.now();
    const seconds = await Promise.all(
      clients.map(async (c) => {
        for (let i = 0; i < job.rounds; i++) {
          const r = await fetchOnce(c, job.path);
          if (r.status !== 200) throw new Error(`GET ${job.path}: status ${r.status}`);
          if (r.bytes !== job.expectBytes) throw new Error(`GET ${job.path}: ${r.bytes} bytes, expected ${job.expectBytes}`);
        }
        return (performance.now() - start) / 1000;
      }),
    );
    const total = Math.max(...seconds);
    const bytes = job.expectBytes * job.clients * job.rounds;
    return { mode: 'blob', clients: job.clients, rounds: job.rounds, bytes, seconds: total, mbPerSec: bytes / 1e6 / total, clientSeconds: seconds };
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? 0;
}

// Tally gathers one series' responses over the windows it is measured in.
interface Tally {
  latencies: number[];
  statuses: Record<string, number>;
  errors: number;
  measuredMs: number;
}

function newTally(): Tally {
  return { latencies: [], statuses: {}, errors: 0, measuredMs: 0 };
}

// openPool makes a pool whose every connection has completed one request (its handshake).
async function openPool(origin: string, path: string, tls: LoadTls, connections: number, headers: Record<string, string>): Promise<Pool> {
  const pool = new Pool(origin, { connections, pipelining: 1, connect: connectOptions(tls), headersTimeout: 30_000, bodyTimeout: 30_000 });
  await Promise.all(Array.from({ length: connections }, () => fetchOnce(pool, path, headers)));
  return pool;
}

// drive keeps `connections` requests in flight for warmupMs + durationMs and tallies those that end in the second part.
async function drive(pool: Pool, job: { path: string; connections: number; headers: Record<string, string>; expectBytes?: number }, warmupMs: number, durationMs: number, t: Tally): Promise<void> {
  const measureStart = performance.now() + warmupMs;
  const measureEnd = measureStart + durationMs;
  const worker = async (): Promise<void> => {
    for (;;) {
      const begin = performance.now();
      if (begin >= measureEnd) return;
      let status = -1;
      try {
        const r = await fetchOnce(pool, job.path, job.headers);
        status = r.status;
        if (r.status === 200 && job.expectBytes !== undefined && r.bytes !== job.expectBytes) status = -2;
      } catch {
        status = -1;
      }
      const end = performance.now();
      if (end >= measureStart && end < measureEnd) {
        if (status === 200) t.latencies.push(end - begin);
        else t.errors++;
        t.statuses[String(status)] = (t.statuses[String(status)] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: job.connections }, () => worker()));
  t.measuredMs += durationMs;
}

function summarise(t: Tally, connections: number): RequestsResult {
  const sorted = Float64Array.from(t.latencies).sort();
  const seconds = t.measuredMs / 1000;
  return {
    mode: 'requests',
    connections,
    requests: t.latencies.length,
    seconds,
    rps: t.latencies.length / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted.length > 0 ? (sorted[sorted.length - 1] ?? 0) : 0,
    errors: t.errors,
    statuses: t.statuses,
  };
}

async function runRequests(job: RequestsJob): Promise<RequestsResult> {
  const pool = await openPool(job.origin, job.path, job.tls, job.connections, job.headers);
  const t = newTally();
  try {
    await drive(pool, job, job.warmupMs, job.durationMs, t);
  } finally {
    await pool.close();
  }
  return summarise(t, job.connections);
}

async function runInterleave(job: InterleaveJob): Promise<InterleaveResult> {
  const pools: Pool[] = [];
  try {
    for (const s of job.series) pools.push(await openPool(s.origin, s.path, job.tls, job.connections, job.headers));
    const tallies = job.series.map(() => newTally());
    for (let round = 0; round < job.slices; round++) {
      for (let i = 0; i < job.series.length; i++) {
        const s = job.series[i];
        const pool = pools[i];
        const t = tallies[i];
        if (s === undefined || pool === undefined || t === undefined) throw new Error('interleave: series out of range');
        await drive(pool, { ...job, path: s.path }, job.warmupMs, job.sliceMs, t);
      }
    }
    const series: Record<string, RequestsResult> = {};
    job.series.forEach((s, i) => {
      series[s.name] = summarise(tallies[i] ?? newTally(), job.connections);
    });
    return { mode: 'interleave', series };
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
}

/** LoadFailure is the output line for a job that failed. */
export interface LoadFailure {
  mode: 'error';
  error: string;
}

function runJob(job: LoadJob): Promise<LoadResult> {
  if (job.mode === 'blob') return runBlob(job);
  return job.mode === 'requests' ? runRequests(job) : runInterleave(job);
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (arg === undefined) throw new Error("usage: load.ts '<job json>' | --stdin");
  if (arg !== '--stdin') {
    process.stdout.write(`${JSON.stringify(await runJob(JSON.parse(arg) as LoadJob))}\n`);
    return;
  }
  // Jobs run one after another, so a worker started once serves a whole benchmark without start-up costs per job.
  for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.trim() === '') continue;
    let out: LoadResult | LoadFailure;
    try {
      out = await runJob(JSON.parse(line) as LoadJob);
    } catch (err) {
      out = { mode: 'error', error: (err as Error).message };
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
}

main().catch((err: Error) => {
  process.stderr.write(`load: ${err.message}\n`);
  process.exit(1);
});
