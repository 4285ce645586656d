import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

/** Stoppable is anything the harness can shut down at the end of a test file. */
export interface Stoppable {
  stop(): Promise<void>;
}

/** Proc is a child process started by the harness, with its combined output kept in memory. */
export interface Proc extends Stoppable {
  readonly name: string;
  readonly pid: number;
  /** exited resolves with the exit code (null when killed by a signal or never started). */
  readonly exited: Promise<number | null>;
  output(): string;
  running(): boolean;
}

/** StartOptions configures startProcess. */
export interface StartOptions {
  name: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** logDir, when given, also receives the output in `<logDir>/<name>.log`. */
  logDir?: string;
  /** stopTimeoutMs is how long stop() waits after SIGTERM before SIGKILL (default 5000). */
  stopTimeoutMs?: number;
}

/** RunResult is the outcome of a finished command. */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** RunOptions configures run and runOk. */
export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** timeoutMs kills the command (SIGKILL) when it runs longer (default 120000). */
  timeoutMs?: number;
  input?: string | Buffer;
}

/** WaitOptions configures waitFor. */
export interface WaitOptions {
  timeoutMs: number;
  what: string;
  /** intervalMs is the first polling interval; it doubles up to 250 ms (default 20). */
  intervalMs?: number;
}

const OUTPUT_LIMIT = 1024 * 1024;
const live = new Set<Stoppable>();
const livePids = new Set<number>();

// Anything still running when the test process exits is killed by PID, so a crashed test
// leaves no registry or daemon behind.
process.on('exit', () => {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

/** track adds a stoppable (a process, an in-process server) to the set stopAll shuts down. */
export function track<T extends Stoppable>(item: T): T {
  live.add(item);
  return item;
}

/** untrack removes a stoppable from the set stopAll shuts down. */
export function untrack(item: Stoppable): void {
  live.delete(item);
}

/** stopAll stops everything the harness started and still tracks, newest first. */
export async function stopAll(): Promise<void> {
  const items = [...live].reverse();
  live.clear();
  const errors: unknown[] = [];
  for (const item of items) {
    try {
      await item.stop();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) {
    throw new AggregateError(errors, `stopAll: ${errors.length} item(s) failed to stop`);
  }
}

/** toolMissingMessage explains how to get a tool that could not be executed. */
export function toolMissingMessage(cmd: string): string {
  return `${cmd} is not installed or not executable; run scripts/test-deps.sh (as root) to install the test tools`;
}

/** requireTool returns the path when it is an executable file, else throws naming the tool. */
export function requireTool(toolPath: string): string {
  try {
    fs.accessSync(toolPath, fs.constants.X_OK);
  } catch {
    throw new Error(toolMissingMessage(toolPath));
  }
  return toolPath;
}

/** startProcess spawns a long-running command and keeps its output; stop() ends it by PID. */
export function startProcess(cmd: string, args: readonly string[], opts: StartOptions): Proc {
  const child: ChildProcess = spawn(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let buffer = '';
  let log: fs.WriteStream | undefined;
  if (opts.logDir !== undefined) {
    fs.mkdirSync(opts.logDir, { recursive: true });
    log = fs.createWriteStream(path.join(opts.logDir, `${opts.name}.log`), { flags: 'a' });
  }
  const append = (chunk: Buffer | string): void => {
    const text = chunk.toString();
    buffer += text;
    if (buffer.length > OUTPUT_LIMIT) {
      buffer = buffer.slice(buffer.length - OUTPUT_LIMIT);
    }
    log?.write(text);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);

  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      append(err.code === 'ENOENT' || err.code === 'EACCES' ? `${toolMissingMessage(cmd)}\n` : `${err.message}\n`);
      if (!done) {
        done = true;
        resolve(null);
      }
    });
    child.once('close', (code) => {
      if (!done) {
        done = true;
        resolve(code);
      }
    });
  }).then((code) => {
    if (child.pid !== undefined) {
      livePids.delete(child.pid);
    }
    log?.end();
    return code;
  });

  const pid = child.pid ?? -1;
  if (pid > 0) {
    livePids.add(pid);
  }
  const stopTimeoutMs = opts.stopTimeoutMs ?? 5000;

  const proc: Proc = {
    name: opts.name,
    pid,
    exited,
    output: () => buffer,
    running: () => !done,
    async stop(): Promise<void> {
      untrack(proc);
      if (done || pid <= 0) {
        await exited;
        return;
      }
      signal(pid, 'SIGTERM');
      const cancel = new AbortController();
      const timer = delay(stopTimeoutMs, 'timeout' as const, { signal: cancel.signal }).catch(() => 'cancelled' as const);
      const first = await Promise.race([exited.then(() => 'exited' as const), timer]);
      cancel.abort();
      if (first === 'timeout') {
        signal(pid, 'SIGKILL');
        await exited;
      }
    },
  };
  return track(proc);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // The process exited between the check and the signal.
  }
}

/** run executes a command to completion with a timeout and returns its code and output. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    if (child.pid !== undefined) {
      livePids.add(child.pid);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) {
        signal(child.pid, 'SIGKILL');
      }
    }, opts.timeoutMs ?? 120_000);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (child.pid !== undefined) {
        livePids.delete(child.pid);
      }
      reject(e.code === 'ENOENT' || e.code === 'EACCES' ? new Error(toolMissingMessage(cmd)) : e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (child.pid !== undefined) {
        livePids.delete(child.pid);
      }
      resolve({
        code,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        timedOut,
      });
    });
    if (opts.input !== undefined && child.stdin !== null) {
      child.stdin.end(opts.input);
    }
  });
}

/** runOk is run that throws, with the command line and its stderr, unless the exit code is 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const result = await run(cmd, args, opts);
  if (result.code !== 0) {
    const why = result.timedOut ? `timed out after ${opts.timeoutMs ?? 120_000} ms` : `exited with ${result.code}`;
    throw new Error(`${cmd} ${args.join(' ')} ${why}:\n${result.stderr.trim() || result.stdout.trim()}`);
  }
  return result;
}

/** freePort asks the kernel for a currently free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') {
          resolve(address.port);
        } else {
          reject(new Error('freePort: no address'));
        }
      });
    });
  });
}

/** StopWaiting, thrown by a waitFor predicate, ends the wait at once with that error. */
export class StopWaiting extends Error {}

/** waitFor polls a predicate until it returns true, failing after the deadline with the last error. */
export async function waitFor(fn: () => Promise<boolean> | boolean, opts: WaitOptions): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let interval = opts.intervalMs ?? 20;
  let lastError: unknown;
  for (;;) {
    try {
      if (await fn()) {
        return;
      }
    } catch (err) {
      if (err instanceof StopWaiting) {
        throw err;
      }
      lastError = err;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${detail}`);
    }
    await delay(Math.min(interval, left));
    interval = Math.min(interval * 2, 250);
  }
}
