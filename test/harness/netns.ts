// A private network namespace joined to the host by a veth pair with a /30 (10.250.X.0/30), for clients that must
// dial a registry that is not on 127.0.0.0/8 (dockerd treats loopback registries as insecure and sends no client
// certificate). Everything it creates is removed again by cleanup().
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import { requireTool, run, type RunResult } from './proc.js';

const IP = '/usr/sbin/ip';
const NSENTER = '/usr/bin/nsenter';
const UMOUNT = '/bin/umount';
const NETNS_DIR = '/run/netns';

/** Netns is a network namespace with one veth pair: hostAddr on the host side, nsAddr inside. */
export interface Netns {
  name: string;
  /** path is the namespace's bind mount, `/run/netns/<name>`. */
  path: string;
  hostIf: string;
  nsIf: string;
  /** hostAddr is the host-side address (10.250.X.1), reachable from inside the namespace. */
  hostAddr: string;
  /** nsAddr is the namespace-side address (10.250.X.2), reachable from the host. */
  nsAddr: string;
  /** wrap prefixes a command so it runs in the namespace's network (only; the mount namespace stays the host's). */
  wrap(cmd: string, args: readonly string[]): { cmd: string; args: string[] };
  /** cleanup deletes the veth pair and the namespace, and /run/netns when this harness created it and it is empty now;
   *  it returns what it could not remove. */
  cleanup(): Promise<string[]>;
}

function describe(cmd: string, args: readonly string[], r: RunResult): string {
  return `\`${cmd} ${args.join(' ')}\` exited with ${String(r.code)}${r.timedOut ? ' (timed out)' : ''}: ${(r.stderr || r.stdout).trim()}`;
}

async function ip(args: readonly string[]): Promise<RunResult> {
  return run(IP, args, { timeoutMs: 10_000 });
}

async function ipOk(args: readonly string[]): Promise<string> {
  const r = await ip(args);
  if (r.code !== 0) throw new Error(describe(IP, args, r));
  return r.stdout;
}

function isMountPoint(dir: string): boolean {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === dir);
}

// freeSubnet picks X in 10.250.X.0/30 that no host address or route already uses.
async function freeSubnet(): Promise<number> {
  const used = `${await ipOk(['-4', '-o', 'addr', 'show'])}\n${await ipOk(['-4', 'route', 'show', 'table', 'all'])}`;
  const taken = new Set<number>();
  for (const m of used.matchAll(/\b10\.250\.(\d{1,3})\./g)) taken.add(Number(m[1]));
  const free = Array.from({ length: 256 }, (_, i) => i).filter((x) => !taken.has(x));
  const pick = free[randomInt(free.length)];
  if (pick === undefined) throw new Error('netns: every 10.250.X.0/30 is in use');
  return pick;
}

/** createNetns adds `airlock-t<random>`, a veth pair (host 10.250.X.1/30, namespace 10.250.X.2/30) and brings lo up inside. */
export async function createNetns(): Promise<Netns> {
  requireTool(IP);
  requireTool(NSENTER);
  const suffix = randomBytes(4).toString('hex');
  const name = `airlock-t${suffix}`;
  const hostIf = `alh${suffix}`;
  const nsIf = `aln${suffix}`;
  const createdNetnsDir = !fs.existsSync(NETNS_DIR);
  const x = await freeSubnet();
  const hostAddr = `10.250.${String(x)}.1`;
  const nsAddr = `10.250.${String(x)}.2`;
  let added = false;
  let linked = false;

  const cleanup = async (): Promise<string[]> => {
    const left: string[] = [];
    if (linked) {
      const shown = await ip(['link', 'show', 'dev', hostIf]);
      if (shown.code === 0) {
        const del = await ip(['link', 'del', 'dev', hostIf]);
        if (del.code !== 0) left.push(`veth ${hostIf}: ${describe(IP, ['link', 'del', 'dev', hostIf], del)}`);
      }
      linked = false;
    }
    if (added) {
      const del = await ip(['netns', 'del', name]);
      if (del.code !== 0 && fs.existsSync(`${NETNS_DIR}/${name}`)) left.push(`netns ${name}: ${describe(IP, ['netns', 'del', name], del)}`);
      added = false;
    }
    if (createdNetnsDir && fs.existsSync(NETNS_DIR) && fs.readdirSync(NETNS_DIR).length === 0) {
      // `ip netns add` made /run/netns a (shared) mount point of itself; undo that before removing the folder.
      for (let i = 0; i < 4 && isMountPoint(NETNS_DIR); i++) await run(UMOUNT, [NETNS_DIR], { timeoutMs: 10_000 });
      try {
        fs.rmdirSync(NETNS_DIR);
      } catch (err) {
        left.push(`${NETNS_DIR}: ${(err as Error).message}`);
      }
    }
    return left;
  };

  try {
    const add = await ip(['netns', 'add', name]);
    if (add.code !== 0) {
      throw new Error(`cannot create a network namespace for the dockerd mTLS test: ${describe(IP, ['netns', 'add', name], add)}`);
    }
    added = true;
    await ipOk(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    linked = true;
    await ipOk(['link', 'set', nsIf, 'netns', name]);
    await ipOk(['addr', 'add', `${hostAddr}/30`, 'dev', hostIf]);
    await ipOk(['link', 'set', hostIf, 'up']);
    await ipOk(['-n', name, 'addr', 'add', `${nsAddr}/30`, 'dev', nsIf]);
    await ipOk(['-n', name, 'link', 'set', nsIf, 'up']);
    await ipOk(['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    const left = await cleanup();
    if (left.length > 0) throw new Error(`${(err as Error).message}\n(cleanup also left: ${left.join('; ')})`);
    throw err;
  }

  const nsPath = `${NETNS_DIR}/${name}`;
  return {
    name,
    path: nsPath,
    hostIf,
    nsIf,
    hostAddr,
    nsAddr,
    wrap: (cmd, args) => ({ cmd: NSENTER, args: [`--net=${nsPath}`, '--', cmd, ...args] }),
    cleanup,
  };
}
