// Summaries of V8 CPU profiles (`node --cpu-prof`): self time per function, summed over every node of the call tree.
import fs from 'node:fs';
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** SelfTime is one function's share of the samples. */
export interface SelfTime {
  function: string;
  location: string;
  samples: number;
  percent: number;
  ms: number;
}

/** ProfileSummary is the top of a profile by self time. */
export interface ProfileSummary {
  file: string;
  label: string;
  /** totalSamples counts the busy samples; idleSamples the ones V8 spent waiting for events. */
  totalSamples: number;
  idleSamples: number;
  /** durationMs is the profiled time after the skipped start-up. */
  durationMs: number;
  skippedMs: number;
  top: SelfTime[];
}

function shortLocation(url: string, line: number, root: string): string {
  if (url === '') return '';
  let u = url.startsWith('file://') ? url.slice('file://'.length) : url;
  if (u.startsWith(root)) u = path.relative(root, u);
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) u = u.slice(nm);
  return `${u}:${line + 1}`;
}

// hitsAfter counts samples per node id, leaving out those taken in the first skipMs of the profile.
function hitsAfter(profile: CpuProfile, skipMs: number): Map<number, number> {
  const hits = new Map<number, number>();
  const samples = profile.samples;
  const deltas = profile.timeDeltas;
  if (samples === undefined || deltas === undefined || samples.length !== deltas.length) {
    for (const node of profile.nodes) hits.set(node.id, node.hitCount ?? 0);
    return hits;
  }
  let t = profile.startTime;
  const cutoff = profile.startTime + skipMs * 1000;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    const id = samples[i];
    if (t < cutoff || id === undefined) continue;
    hits.set(id, (hits.get(id) ?? 0) + 1);
  }
  return hits;
}

/** summariseProfile sums samples by function name and script after the first skipMs (the start-up) and returns the
 * top n by share of the busy samples. */
export function summariseProfile(file: string, label: string, root: string, n = 15, skipMs = 0): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const hitsById = hitsAfter(profile, skipMs);
  const bySite = new Map<string, SelfTime>();
  let total = 0;
  let idle = 0;
  for (const node of profile.nodes) {
    const hits = hitsById.get(node.id) ?? 0;
    if (hits === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idle += hits;
      continue;
    }
    total += hits;
    const name = functionName === '' ? '(anonymous)' : functionName;
    const location = shortLocation(url, lineNumber, root);
    const key = `${name}\u0000${location}`;
    const entry = bySite.get(key) ?? { function: name, location, samples: 0, percent: 0, ms: 0 };
    entry.samples += hits;
    bySite.set(key, entry);
  }
  const durationMs = Math.max(0, (profile.endTime - profile.startTime) / 1000 - skipMs);
  const perSample = total + idle > 0 ? durationMs / (total + idle) : 0;
  const top = [...bySite.values()]
    .sort((a, b) => b.samples - a.samples)
    .slice(0, n)
    .map((e) => ({ ...e, percent: total > 0 ? (100 * e.samples) / total : 0, ms: e.samples * perSample }));
  return { file, label, totalSamples: total, idleSamples: idle, durationMs, skippedMs: skipMs, top };
}

/** profileMarkdown renders a summary as a small Markdown table. */
export function profileMarkdown(s: ProfileSummary): string {
  const lines = [
    `#### CPU profile: ${s.label}`,
    '',
    `${s.totalSamples} busy samples (${s.idleSamples} idle ones left out) over ${(s.durationMs / 1000).toFixed(1)} s, after leaving out the first ${(s.skippedMs / 1000).toFixed(1)} s (start-up); self time by function; \`${path.basename(s.file)}\``,
    '',
    '| self % | self ms | function | where |',
    '|---:|---:|---|---|',
    ...s.top.map((e) => `| ${e.percent.toFixed(1)} | ${e.ms.toFixed(0)} | \`${e.function}\` | ${e.location === '' ? '' : `\`${e.location}\``} |`),
  ];
  return lines.join('\n');
}
