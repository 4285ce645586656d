// Where an upstream may send airlock besides itself: a redirect or a token service on another origin is reached only
// at addresses that are not this host's or the link's, unless the upstream itself is on this host. A registry on the
// internet that redirects a blob GET to http://169.254.169.254/... (a cloud's metadata service) or names a token service
// on 127.0.0.1 would otherwise have airlock make requests, with the upstream's credentials for a token service, to
// services only the airlock host can reach.
import dns from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';

// AddressKind sorts an IP address by where it leads: this host (loopback), the link (link-local: cloud metadata services
// answer at 169.254.169.254), a cloud's metadata service elsewhere (AWS's IPv6 one, Alibaba's), nowhere (unspecified),
// or anywhere else (private networks included).
export type AddressKind = 'loopback' | 'link-local' | 'metadata' | 'unspecified' | 'other';

// METADATA are metadata service addresses outside the link-local ranges.
const METADATA = new Set(['100.100.100.200', 'fd00:ec2:0:0:0:0:0:254']);

// addressKind classifies an IPv4 or IPv6 address (an IPv4 address mapped into IPv6 as the IPv4 one); not an IP address
// is 'other'.
export function addressKind(address: string): AddressKind {
  let a = address.toLowerCase().replace(/^\[|\]$/g, '');
  const mapped = /^(?:0{0,4}:){0,5}(?:0{0,4}:)?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a) ?? /^::(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) a = mapped[1];
  if (isIP(a) === 4) {
    const [x, y] = a.split('.').map(Number);
    if (x === 127) return 'loopback';
    if (x === 169 && y === 254) return 'link-local';
    if (x === 0) return 'unspecified';
    return METADATA.has(a) ? 'metadata' : 'other';
  }
  if (isIP(a) === 6) {
    const groups = expandIPv6(a);
    if (groups.every((g) => g === 0)) return 'unspecified';
    if (groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1) return 'loopback';
    if ((groups[0] & 0xffc0) === 0xfe80) return 'link-local';
    // An IPv4-mapped hexadecimal form (::ffff:7f00:1).
    if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return addressKind(`${groups[6] >> 8}.${groups[6] & 255}.${groups[7] >> 8}.${groups[7] & 255}`);
    return METADATA.has(groups.map((g) => g.toString(16)).join(':')) ? 'metadata' : 'other';
  }
  return 'other';
}

// expandIPv6 is an IPv6 address's eight 16-bit groups.
function expandIPv6(a: string): number[] {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, null];
  const part = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const h = part(head);
  if (tail === null) return h;
  const t = part(tail);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

// foreignTargetProblem says why airlock must not connect to address (an IP) for an upstream, or null. localUpstream is
// whether the upstream itself is on this host (then a redirect to another port of this host is its own business).
export function foreignTargetProblem(address: string, localUpstream: boolean): string | null {
  const kind = addressKind(address);
  if (kind === 'other' || (kind === 'loopback' && localUpstream)) return null;
  return `${address.replace(/^\[|\]$/g, '')}, a ${kind === 'metadata' ? 'cloud metadata' : kind} address`;
}

// isLocalHost tells whether a URL's host is spelled as this host: localhost (or a name under .localhost), or a loopback
// IP. An upstream named otherwise may still resolve to this host (upstreamIsLocal).
export function isLocalHost(u: URL): boolean {
  const host = u.hostname.toLowerCase().replace(/\.$/, '');
  return host === 'localhost' || host.endsWith('.localhost') || addressKind(host) === 'loopback';
}

// upstreamIsLocal tells whether an upstream URL's host is this host: spelled so, or a name whose every address is a
// loopback one (Debian maps the machine's own name to 127.0.1.1).
export async function upstreamIsLocal(u: URL): Promise<boolean> {
  if (isLocalHost(u)) return true;
  if (isIP(u.hostname.replace(/^\[|\]$/g, '')) !== 0) return false;
  try {
    const list = await dns.promises.lookup(u.hostname, { all: true });
    return list.length > 0 && list.every((a) => addressKind(a.address) === 'loopback');
  } catch {
    return false;
  }
}

// guardedLookup is dns.lookup for connections to another origin than the upstream's: a name that resolves to an
// address foreignTargetProblem refuses fails with ERR_UPSTREAM_TARGET, before any connection is made. localUpstream is
// asked only when a name resolves to a loopback address.
export function guardedLookup(localUpstream: () => Promise<boolean>): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, options, (err, address, family) => {
      if (err) return callback(err, address as string, family);
      const list = Array.isArray(address) ? address : [{ address, family }];
      const refuse = (problem: string): void =>
        callback(Object.assign(new Error(`${hostname} resolves to ${problem}`), { code: 'ERR_UPSTREAM_TARGET' }) as NodeJS.ErrnoException, '', 0);
      const hard = list.map((a) => foreignTargetProblem(a.address, true)).find((p) => p !== null);
      if (hard) return refuse(hard);
      const loopback = list.find((a) => addressKind(a.address) === 'loopback');
      if (!loopback) return callback(null, address as string, family);
      localUpstream().then(
        (local) => (local ? callback(null, address as string, family) : refuse(foreignTargetProblem(loopback.address, false) as string)),
        () => refuse(foreignTargetProblem(loopback.address, false) as string),
      );
    });
  };
}
