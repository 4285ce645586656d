// Child processes of the benchmark: servers whose output goes straight to a log file, and the load generator worker
// that takes one job per line. Every child is stopped by its PID, and killed if the benchmark exits first.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import type { LoadFailure, LoadJob, LoadResult } from './load.js';

/** NODE_FLAGS are the node options airlock's documented command lines pass (docs/operator-guide.md, "Node's heap"):
 * a 64 MiB initial old generation, without which V8 ran a full mark-compact every 20-40 MB a TLS socket received. The
 * benchmark runs every Node process with them (airlock, the bare server, the load generator), so all run alike. */
export const NODE_FLAGS = ['--initial-old-space-size=64'];

/** SpawnOptions configures spawnLogged. */
export interface SpawnOptions {
  logPath: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/** Child is a spawned process whose output goes to a file. */
export interface Child {
  readonly pid: number;
  readonly exited: Promise<number | null>;
  running(): boolean;
  stop(timeoutMs?: number): Promise<void>;
}

const live = new Map<number, ChildProcess>();

// Anything still running when the benchmark exits is killed by its PID.
process.on('exit', () => {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

/** stopEverything stops every child this module started and that still runs. */
export async function stopEverything(): Promise<void> {
  const pids = [...live.keys()];
  await Promise.all(pids.map((pid) => stopPid(pid, 5000)));
}

async function stopPid(pid: number, timeoutMs: number): Promise<void> {
  const child = live.get(pid);
  if (child === undefined) return;
  const gone = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('close', () => resolve());
  });
  signal(pid, 'SIGTERM');
  const first = await Promise.race([gone.then(() => 'exited' as const), delay(timeoutMs, 'timeout' as const)]);
  if (first === 'timeout') {
    signal(pid, 'SIGKILL');
    await gone;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // It exited between the check and the signal.
  }
}

/** spawnLogged starts a long-running command with stdout and stderr appended to logPath. */
export function spawnLogged(cmd: string, args: readonly string[], opts: SpawnOptions): Child {
  fs.mkdirSync(path.dirname(opts.logPath), { recursive: true });
  const fd = fs.openSync(opts.logPath, 'a');
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const pid = child.pid ?? -1;
  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', (err) => {
      fs.appendFileSync(opts.logPath, `spawn ${cmd}: ${err.message}\n`);
      done = true;
      resolve(null);
    });
    child.once('close', (code) => {
      done = true;
      live.delete(pid);
      resolve(code);
    });
  });
  if (pid > 0) live.set(pid, child);
  return {
    pid,
    exited,
    running: () => !done,
    stop: async (timeoutMs = 10_000) => {
      if (done || pid <= 0) {
        await exited;
        return;
      }
      await stopPid(pid, timeoutMs);
      await exited;
    },
  };
}


/** LoadWorker is the load generator, started once as its own process, running the jobs it is sent one at a time. */
export class LoadWorker {
  private child: ChildProcess | null = null;
  private lines: AsyncIterator<string> | null = null;

  constructor(
    private readonly script: string,
    private readonly cwd: string,
    private readonly logPath: string,
  ) {}

  private start(): { child: ChildProcess; lines: AsyncIterator<string> } {
    if (this.child !== null && this.lines !== null && this.child.exitCode === null && this.child.signalCode === null) {
      return { child: this.child, lines: this.lines };
    }
    fs.mkdirSync(path.dirname(this.logPath), { recursive: true });
    const fd = fs.openSync(this.logPath, 'a');
    const child = spawn(process.execPath, [...NODE_FLAGS, '--import', 'tsx', this.script, '--stdin'], { cwd: this.cwd, stdio: ['pipe', 'pipe', fd] });
    fs.closeSync(fd);
    const pid = child.pid ?? -1;
    if (pid > 0) live.set(pid, child);
    child.once('close', () => live.delete(pid));
    if (child.stdout === null) throw new Error('load worker has no stdout');
    const lines = readline.createInterface({ input: child.stdout, crlfDelay: Infinity })[Symbol.asyncIterator]();
    this.child = child;
    this.lines = lines;
    return { child, lines };
  }

  /** run sends one job and waits for its result line; on a timeout the worker is killed and restarted next time. */
  async run<T extends LoadResult>(job: LoadJob, timeoutMs: number): Promise<T> {
    const { child, lines } = this.start();
    const what = job.mode === 'interleave' ? `interleave ${job.series.map((x) => x.name).join(', ')}` : `${job.mode} ${job.origin}${job.path}`;
    child.stdin?.write(`${JSON.stringify(job)}\n`);
    const cancel = new AbortController();
    const next = lines.next();
    const outcome = await Promise.race([next, delay(timeoutMs, 'timeout' as const, { signal: cancel.signal }).catch(() => 'cancelled' as const)]);
    cancel.abort();
    if (outcome === 'timeout' || outcome === 'cancelled') {
      await this.stop();
      throw new Error(`load generator (${what}) timed out after ${timeoutMs} ms`);
    }
    if (outcome.done === true) {
      this.child = null;
      throw new Error(`load generator exited (${what}); see ${this.logPath}`);
    }
    const parsed = JSON.parse(outcome.value) as LoadResult | LoadFailure;
    if (parsed.mode === 'error') throw new Error(`load generator (${what}) failed: ${parsed.error}`);
    return parsed as T;
  }

  /** stop ends the worker by its PID. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    this.lines = null;
    if (child?.pid !== undefined) {
      child.stdin?.end();
      await stopPid(child.pid, 5000);
    }
  }
}

/** systemBusyTicks is the CPU time (clock ticks) the machine has been busy since boot, from /proc/stat: everything
 * but idle and I/O wait. Interrupt time counts too: without IRQ time accounting (this kernel's case) the kernel also
 * charges it to the process that was running, so a process tree's own ticks include its share. */
export function systemBusyTicks(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // Columns: user nice system idle iowait irq softirq steal.
  return (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
}

// statFields reads a /proc stat file's fields after the command name (so field 14 of proc(5), utime, is [11]), or
// null when the process or thread is gone.
function statFields(file: string): number[] | null {
  try {
    const stat = fs.readFileSync(file, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  } catch {
    return null;
  }
}

// tasksOf lists a process's thread ids, none when it is gone.
function tasksOf(pid: number): string[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
}

// treeTicks is the CPU time (clock ticks) of a process and all its descendants, including descendants already
// reaped (their time is in their parent's cutime and cstime).
function treeTicks(root: number): number {
  let total = 0;
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() ?? 0;
    const f = statFields(`/proc/${pid}/stat`);
    if (f === null) continue;
    total += (f[11] ?? 0) + (f[12] ?? 0) + (f[13] ?? 0) + (f[14] ?? 0);
    for (const tid of tasksOf(pid)) {
      try {
        for (const c of fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) {
          if (c !== '') stack.push(Number(c));
        }
      } catch {
        // The thread ended meanwhile.
      }
    }
  }
  return total;
}

/** waitQuiet waits until the processes together use at most maxBusyMs of CPU over a windowMs window, or timeoutMs
 * passes; it returns how long it waited and whether they went quiet. A server may go on working after its client has
 * every byte (the CNCF registry in proxy mode fills its cache from a second upstream GET of its own), and that work
 * must not land in the next measurement. */
export async function waitQuiet(pids: number[], o: { windowMs?: number; maxBusyMs?: number; timeoutMs?: number } = {}): Promise<{ ms: number; quiet: boolean }> {
  const windowMs = o.windowMs ?? 300;
  const maxBusyMs = o.maxBusyMs ?? 20;
  const timeoutMs = o.timeoutMs ?? 30_000;
  const t0 = Date.now();
  const busy = (): number => pids.reduce((sum, pid) => sum + treeTicks(pid) * 10, 0);
  for (;;) {
    const before = busy();
    await delay(windowMs);
    if (busy() - before <= maxBusyMs) return { ms: Date.now() - t0, quiet: true };
    if (Date.now() - t0 >= timeoutMs) return { ms: Date.now() - t0, quiet: false };
  }
}

/** CpuWatch measures how many CPUs processes outside the benchmark's own process tree kept busy since it was made. */
export class CpuWatch {
  private readonly t0 = Date.now();
  private readonly busy0 = systemBusyTicks();
  private readonly own0 = treeTicks(process.pid);

  /** machineCpuMs is the CPU time (ms) the whole machine was busy since the watch was made, every process included. */
  machineCpuMs(): number {
    return (systemBusyTicks() - this.busy0) * 10;
  }

  /** otherCpus is the average number of CPUs other processes used since the watch was made. */
  otherCpus(): number {
    const seconds = (Date.now() - this.t0) / 1000;
    if (seconds <= 0) return 0;
    const other = systemBusyTicks() - this.busy0 - (treeTicks(process.pid) - this.own0);
    return Math.max(0, other / 100 / seconds);
  }
}

/** ThreadCpu is a process's CPU time in ms, its main thread apart from its other threads, user and system apart. */
export interface ThreadCpu {
  mainUser: number;
  mainSys: number;
  otherUser: number;
  otherSys: number;
}

/** threadCpu reads /proc/<pid>/task/<tid>/stat for every thread of a process; zeros when it is gone. */
export function threadCpu(pid: number): ThreadCpu {
  const out: ThreadCpu = { mainUser: 0, mainSys: 0, otherUser: 0, otherSys: 0 };
  const msPerTick = 1000 / 100;
  for (const tid of tasksOf(pid)) {
    const f = statFields(`/proc/${pid}/task/${tid}/stat`);
    if (f === null) continue;
    const user = (f[11] ?? 0) * msPerTick;
    const sys = (f[12] ?? 0) * msPerTick;
    if (Number(tid) === pid) {
      out.mainUser += user;
      out.mainSys += sys;
    } else {
      out.otherUser += user;
      out.otherSys += sys;
    }
  }
  return out;
}

/** cpuSince is the CPU a process used since an earlier threadCpu reading. */
export function cpuSince(pid: number, before: ThreadCpu): ThreadCpu {
  const now = threadCpu(pid);
  return { mainUser: now.mainUser - before.mainUser, mainSys: now.mainSys - before.mainSys, otherUser: now.otherUser - before.otherUser, otherSys: now.otherSys - before.otherSys };
}
