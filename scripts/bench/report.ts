// The benchmark's raw results, the targets airlock is held to, and the Markdown table that puts each airlock figure
// next to its references.
import type { ThreadCpu } from './procs.js';
import type { RequestsResult } from './load.js';
import { type ProfileSummary, profileMarkdown } from './profile.js';

/** Machine describes where the benchmark ran. */
export interface Machine {
  nproc: number;
  cpu: string;
  memoryGiB: number;
  node: string;
  kernel: string;
  nginx: string;
  registry: string;
  date: string;
  /** loadAverage is the 1-minute load average when the benchmark started. */
  loadAverage: number;
  /** otherCpus is how many CPUs other processes (not the benchmark's) kept busy on average while it ran. */
  otherCpus: number;
}

/** Settings are the options a run used. */
export interface Settings {
  quick: boolean;
  runs: number;
  blobBytes: number;
  manifestBytes: number;
  manifestSeconds: number;
  connections: number;
  airlockCommand: string;
  loadGenerator: string;
  tls: string;
}

/** Results holds every raw figure, one array entry per run. */
export interface Results {
  machine: Machine;
  settings: Settings;
  /** warm is MB/s (10^6 bytes/s) per server, for 1 client and 8 clients in aggregate. */
  warm: Record<'airlock' | 'nginx' | 'registry', { c1: number[]; c8: number[] }>;
  /** manifests is one load result per run for each series. */
  manifests: Record<'airlockDigest' | 'airlockTag' | 'registryDigest' | 'registryTag' | 'bare', RequestsResult[]>;
  /** cold is seconds for one client to fetch an uncached blob. */
  cold: Record<'airlock' | 'direct' | 'registryProxy', number[]>;
  /** coldCpu is the CPU time (ms) the server process used during each cold run: airlock's main thread and its other
   * threads, and the registry in proxy mode (all of its threads, counted as "other"). */
  coldCpu: Record<'airlock' | 'registryProxy', ThreadCpu[]>;
  /** coldMachineCpu is the CPU time (ms) the whole machine (upstream, server, client and the rest) was busy during
   * each cold run, until the client had the last byte. */
  coldMachineCpu: Record<'airlock' | 'direct' | 'registryProxy', number[]>;
  /** fanIn is 8 concurrent cold pulls of one blob: total seconds and GETs of that blob that reached the upstream
   * (through the registry in proxy mode only in the first runs). */
  fanIn: Record<'airlock' | 'registryProxy', { seconds: number[]; upstreamGets: number[] }>;
  /** memory is airlock's peak RSS in bytes during each 8-client run (warm and fan-in). */
  memory: { peakBytes: number[]; method: string; processPeakBytes: number };
  profiles: ProfileSummary[];
  /** interference records, per measurement, the CPUs other processes used and how many attempts it took. */
  interference: { what: string; otherCpus: number; attempts: number }[];
  notes: string[];
}

/** emptyResults is a run's Results before any figure is in. */
export function emptyResults(machine: Machine, settings: Settings, notes: string[] = []): Results {
  return {
    machine,
    settings,
    warm: { airlock: { c1: [], c8: [] }, nginx: { c1: [], c8: [] }, registry: { c1: [], c8: [] } },
    manifests: { airlockDigest: [], airlockTag: [], registryDigest: [], registryTag: [], bare: [] },
    cold: { airlock: [], direct: [], registryProxy: [] },
    coldCpu: { airlock: [], registryProxy: [] },
    coldMachineCpu: { airlock: [], direct: [], registryProxy: [] },
    fanIn: { airlock: { seconds: [], upstreamGets: [] }, registryProxy: { seconds: [], upstreamGets: [] } },
    memory: { peakBytes: [], method: '', processPeakBytes: 0 },
    profiles: [],
    interference: [],
    notes,
  };
}

// coldCpuNote says where the CPU of the cold runs went (medians), for airlock by thread and for the registry proxy.
function coldCpuNote(c: Results['coldCpu']): string {
  const ms = (xs: number[]): string => median(xs).toFixed(0);
  const a = c.airlock;
  const p = c.registryProxy;
  const total = (x: ThreadCpu): number => x.mainUser + x.mainSys + x.otherUser + x.otherSys;
  return (
    `CPU used during the cold runs (medians): airlock ${ms(a.map(total))} ms, of it ${ms(a.map((x) => x.mainUser))} ms user and ${ms(a.map((x) => x.mainSys))} ms system on its ` +
    `main thread and ${ms(a.map((x) => x.otherUser))} ms user and ${ms(a.map((x) => x.otherSys))} ms system on its other threads (libuv's pool writing and reading the cache file, V8's ` +
    `garbage-collection helpers, the audit writer); the registry in proxy mode ${ms(p.map(total))} ms over all its threads, its cache fill after the client had the blob included.`
  );
}

// coldFloorNote says how much CPU the whole machine spent on a cold pull each way (medians), and the shortest time
// that CPU allows on the machine's cores.
function coldFloorNote(c: Results['coldMachineCpu'], cores: number, directSeconds: number): string {
  const a = median(c.airlock);
  const floor = a / cores / 1000;
  return (
    `CPU the whole machine used during the cold runs (medians; upstream, server and client together): ${median(c.direct).toFixed(0)} ms for a direct GET, ` +
    `${a.toFixed(0)} ms through airlock, ${median(c.registryProxy).toFixed(0)} ms through the registry proxy until its client had the blob. ` +
    `On ${cores} cores, ${a.toFixed(0)} ms of CPU takes at least ${floor.toFixed(2)} s, ${(floor / directSeconds).toFixed(2)}× the direct GET's median time.`
  );
}

/** Verdict is whether a target was met. */
export type Verdict = 'PASS' | 'MISS';

/** Check is one target and its outcome. */
export interface Check {
  name: string;
  target: string;
  value: number;
  verdict: Verdict;
}

/** median is the middle value (the mean of the two middle values for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? Number.NaN) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

function med(rs: readonly RequestsResult[], key: 'rps' | 'p50Ms' | 'p99Ms'): number {
  return median(rs.map((r) => r[key]));
}

function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}×` : 'n/a';
}

interface Row {
  measurement: string;
  airlock: string;
  nginx: string;
  registry: string;
  bare: string;
  direct: string;
  ratios: string;
  target: string;
  result: string;
}

/** Evaluated is the table rows and the checks behind their verdicts. */
export interface Evaluated {
  checks: Check[];
  markdown: string;
}

/** evaluate computes medians, ratios and verdicts and renders the Markdown table. */
export function evaluate(r: Results): Evaluated {
  const checks: Check[] = [];
  const check = (name: string, target: string, value: number, pass: boolean): Verdict => {
    const verdict: Verdict = pass ? 'PASS' : 'MISS';
    checks.push({ name, target, value, verdict });
    return verdict;
  };
  const rows: Row[] = [];
  const mib = (r.settings.blobBytes / 2 ** 20).toFixed(0);

  // A partial run (--only) has no figures for what it left out, and no rows or verdicts for them.
  const ran = {
    warm: r.warm.airlock.c1.length > 0,
    manifests: r.manifests.airlockDigest.length > 0,
    cold: r.cold.airlock.length > 0,
    fanIn: r.fanIn.airlock.seconds.length > 0,
    memory: r.memory.peakBytes.length > 0,
  };
  for (const [key, label] of ran.warm
    ? ([
        ['c1', '1 client'],
        ['c8', '8 clients, aggregate'],
      ] as const)
    : []) {
    const a = median(r.warm.airlock[key]);
    const n = median(r.warm.nginx[key]);
    const g = median(r.warm.registry[key]);
    const need = key === 'c1' ? 1.0 : 0.9;
    const v1 = check(`warm ${label}: airlock/nginx`, `≥ ${need.toFixed(1)}× nginx`, a / n, a / n >= need);
    const v2 = check(`warm ${label}: airlock/registry`, '≥ 1.0× registry', a / g, a / g >= 1.0);
    rows.push({
      measurement: `warm ${mib} MiB blob, ${label} (MB/s)`,
      airlock: fmt(a),
      nginx: fmt(n),
      registry: fmt(g),
      bare: '',
      direct: '',
      ratios: `${ratio(a / n)} nginx, ${ratio(a / g)} registry`,
      target: `≥ ${need.toFixed(1)}× nginx; ≥ 1.0× registry`,
      result: `${v1}, ${v2}`,
    });
  }

  for (const [label, mine, theirs] of ran.manifests
    ? ([
        ['by digest', r.manifests.airlockDigest, r.manifests.registryDigest],
        ['by pinned tag', r.manifests.airlockTag, r.manifests.registryTag],
      ] as const)
    : []) {
    const a = med(mine, 'rps');
    const g = med(theirs, 'rps');
    const b = med(r.manifests.bare, 'rps');
    const p99 = med(mine, 'p99Ms');
    const v1 = check(`manifest ${label}: airlock/registry req/s`, '≥ 8× registry', a / g, a / g >= 8);
    const v2 = check(`manifest ${label}: airlock/bare req/s`, '≥ 0.7× bare', a / b, a / b >= 0.7);
    const v3 = check(`manifest ${label}: airlock p99`, 'p99 ≤ 25 ms', p99, p99 <= 25);
    rows.push({
      measurement: `manifest ${label}, ${r.settings.connections} connections (req/s)`,
      airlock: fmt(a),
      nginx: '',
      registry: fmt(g),
      bare: fmt(b),
      direct: '',
      ratios: `${ratio(a / g)} registry, ${ratio(a / b)} bare`,
      target: '≥ 8× registry; ≥ 0.7× bare',
      result: `${v1}, ${v2}`,
    });
    rows.push({
      measurement: `manifest ${label}: p50 / p99 latency (ms)`,
      airlock: `${fmt(med(mine, 'p50Ms'), 1)} / ${fmt(p99, 1)}`,
      nginx: '',
      registry: `${fmt(med(theirs, 'p50Ms'), 1)} / ${fmt(med(theirs, 'p99Ms'), 1)}`,
      bare: `${fmt(med(r.manifests.bare, 'p50Ms'), 1)} / ${fmt(med(r.manifests.bare, 'p99Ms'), 1)}`,
      direct: '',
      ratios: '',
      target: 'p99 ≤ 25 ms',
      result: v3,
    });
  }

  const ca = median(r.cold.airlock);
  const cd = median(r.cold.direct);
  const cp = median(r.cold.registryProxy);
  if (ran.cold) rows.push({
    measurement: `cold ${mib} MiB pull-through, 1 client (s)`,
    airlock: fmt(ca, 2),
    nginx: '',
    registry: `${fmt(cp, 2)} (proxy mode)`,
    bare: '',
    direct: fmt(cd, 2),
    ratios: `${ratio(ca / cd)} direct, ${ratio(ca / cp)} registry proxy`,
    target: '≤ 1.15× direct',
    result: check('cold pull: airlock/direct time', '≤ 1.15× direct', ca / cd, ca / cd <= 1.15),
  });

  const gets = Math.max(...r.fanIn.airlock.upstreamGets);
  if (ran.fanIn) rows.push({
    measurement: `fan-in: 8 concurrent cold pulls of one ${mib} MiB blob: upstream GETs (worst run)`,
    airlock: fmt(gets),
    nginx: '',
    registry: `${fmt(Math.max(...r.fanIn.registryProxy.upstreamGets))} (proxy mode, ${r.fanIn.registryProxy.upstreamGets.length} runs)`,
    bare: '',
    direct: '',
    ratios: '',
    target: '1 GET',
    result: check('fan-in: upstream GETs (worst run)', '1 GET', gets, gets === 1),
  });
  if (ran.fanIn) rows.push({
    measurement: 'fan-in: time until all 8 have the blob (s)',
    airlock: fmt(median(r.fanIn.airlock.seconds), 2),
    nginx: '',
    registry: `${fmt(median(r.fanIn.registryProxy.seconds), 2)} (proxy mode)`,
    bare: '',
    direct: fmt(cd, 2),
    ratios: `${ratio(median(r.fanIn.airlock.seconds) / cd)} one direct GET`,
    target: '',
    result: '',
  });

  const peak = Math.max(...r.memory.peakBytes) / 2 ** 20;
  if (ran.memory) rows.push({
    measurement: 'airlock peak RSS during the 8-client runs (MiB)',
    airlock: fmt(peak),
    nginx: '',
    registry: '',
    bare: '',
    direct: '',
    ratios: '',
    target: '≤ 250 MiB',
    result: check('peak RSS during 8-client runs', '≤ 250 MiB', peak, peak <= 250),
  });

  const head = '| measurement | airlock | nginx | CNCF registry | bare Fastify | direct upstream | airlock ratios | target | result |';
  const sep = '|---|---:|---:|---:|---:|---:|---|---|---|';
  const body = rows.map((x) => `| ${x.measurement} | ${x.airlock} | ${x.nginx} | ${x.registry} | ${x.bare} | ${x.direct} | ${x.ratios} | ${x.target} | ${x.result} |`);
  const m = r.machine;
  const s = r.settings;
  const passed = checks.filter((c) => c.verdict === 'PASS').length;
  const parts = [
    `### airlock benchmark, ${m.date}`,
    '',
    `Machine: ${m.nproc} CPUs (${m.cpu}), ${m.memoryGiB.toFixed(1)} GiB memory, Linux ${m.kernel}, Node ${m.node}, ${m.nginx}, docker-registry ${m.registry}; ` +
      `load average ${m.loadAverage.toFixed(2)} at the start; other processes kept ${m.otherCpus.toFixed(2)} CPUs busy on average during the run.`,
    `Medians of ${s.runs} runs${s.quick ? ' (--quick: smaller sizes and shorter runs; a smoke test, not a measurement)' : ''}. ` +
      `Everything on 127.0.0.1, ${s.tls}; the client is ${s.loadGenerator}, in its own process. MB = 10^6 bytes. ` +
      `Manifest runs: ${s.manifestSeconds} s per series per run, the five series taking turns in 1 s slices, ${s.connections} keep-alive connections per series, a ${s.manifestBytes}-byte OCI manifest, airlock auditing every request. ` +
      `airlock ran as \`${s.airlockCommand}\`.`,
    '',
    head,
    sep,
    ...body,
    '',
    `${passed} of ${checks.length} targets met.`,
  ];
  const notes = [...r.notes];
  if (r.coldCpu.airlock.length > 0) notes.push(coldCpuNote(r.coldCpu));
  if (r.coldMachineCpu.airlock.length > 0) notes.push(coldFloorNote(r.coldMachineCpu, r.machine.nproc, median(r.cold.direct)));
  if (notes.length > 0) parts.push('', ...notes.map((n) => `- ${n}`));
  for (const p of r.profiles) parts.push('', profileMarkdown(p));
  return { checks, markdown: parts.join('\n') };
}
