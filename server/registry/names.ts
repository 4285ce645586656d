// Names, references and digests of the OCI distribution grammar, and the routing of a request name to an upstream.
import { RegistryError } from '../errors.js';

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;
const SHA256_HEX_RE = /^[a-f0-9]{64}$/;

// MAX_NAME_LENGTH bounds a repository name, as clients bound host plus name.
export const MAX_NAME_LENGTH = 255;

// isValidName tells whether a repository path follows the OCI name grammar.
export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

// isTag tells whether a reference is a syntactically valid tag.
export function isTag(ref: string): boolean {
  return TAG_RE.test(ref);
}

// isDigestLike tells whether a reference has the shape of a digest (algorithm:encoded), valid or not.
export function isDigestLike(ref: string): boolean {
  return ref.includes(':');
}

// parseDigest checks a digest string and returns it; only sha256 is supported, as every registry serves it.
export function parseDigest(value: string): string {
  const m = DIGEST_RE.exec(value);
  if (!m) throw new RegistryError('DIGEST_INVALID', `invalid digest "${truncate(value)}"`);
  if (m[1] !== 'sha256') throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm "${truncate(m[1])}": only sha256 is supported`);
  if (!SHA256_HEX_RE.test(m[2])) throw new RegistryError('DIGEST_INVALID', `invalid sha256 digest "${truncate(value)}": expected 64 lowercase hex characters`);
  return value;
}

// isSha256Digest tells whether a string is a well-formed sha256 digest.
export function isSha256Digest(value: string): boolean {
  return value.startsWith('sha256:') && SHA256_HEX_RE.test(value.slice(7));
}

// Route is where a request name leads: the upstream, the path there and the canonical name policy uses.
export interface Route {
  upstream: string;
  path: string;
  repository: string;
}

// RoutingTable is what routing needs to know of the configuration.
export interface RoutingTable {
  upstreams: readonly string[];
  defaultUpstream: string | null;
}

// routeName applies SPEC §3: the ns parameter, else an upstream-name prefix, else the default upstream.
export function routeName(name: string, ns: string | undefined, table: RoutingTable): Route {
  if (name.length > MAX_NAME_LENGTH) throw new RegistryError('NAME_INVALID', `repository name is longer than ${MAX_NAME_LENGTH} characters`);
  let upstream: string;
  let path: string;
  if (ns !== undefined) {
    upstream = normalizeHost(ns);
    if (!table.upstreams.includes(upstream)) {
      throw new RegistryError('NAME_UNKNOWN', `ns "${truncate(ns)}" names no configured upstream; configured: ${table.upstreams.join(', ') || 'none'}`);
    }
    path = name;
  } else {
    const slash = name.indexOf('/');
    const host = slash > 0 ? name.slice(0, slash) : '';
    const first = normalizeHost(host);
    if (first && table.upstreams.includes(first)) {
      // A host is case-insensitive, but as the first component of a name it falls under the OCI grammar: lowercase.
      if (host !== host.toLowerCase()) throw new RegistryError('NAME_INVALID', `invalid repository name "${truncate(name)}": the OCI name grammar allows no uppercase letters`);
      upstream = first;
      path = name.slice(slash + 1);
    } else {
      if (table.defaultUpstream === null) {
        throw new RegistryError('NAME_UNKNOWN', `"${truncate(name)}" names no configured upstream and no defaultUpstream is set; configured: ${table.upstreams.join(', ') || 'none'}`);
      }
      upstream = table.defaultUpstream;
      path = name;
    }
  }
  if (!isValidName(path)) throw new RegistryError('NAME_INVALID', `invalid repository name "${truncate(path)}"`);
  if (upstream === 'docker.io' && !path.includes('/')) path = `library/${path}`;
  const repository = `${upstream}/${path}`;
  // The reference grammar bounds the whole name, host included: distribution answers a longer one with a 500.
  if (repository.length > MAX_NAME_LENGTH) throw new RegistryError('NAME_INVALID', `repository name "${truncate(repository)}" is longer than ${MAX_NAME_LENGTH} characters`);
  return { upstream, path, repository };
}

// normalizeHost folds Docker Hub's spellings into docker.io. Only ASCII letters are folded: toLowerCase would also fold
// other characters into ASCII (the Kelvin sign into k), letting a name that is no host name match a configured one.
export function normalizeHost(host: string): string {
  const h = host.replace(/[A-Z]+/g, (c) => c.toLowerCase());
  return h === 'index.docker.io' || h === 'registry-1.docker.io' ? 'docker.io' : h;
}

// CanonicalReference is a parsed UPSTREAM/PATH[:tag][@digest] reference, as pins and payloads spell them.
export interface CanonicalReference {
  repository: string;
  tag: string | null;
  digest: string | null;
}

// parseCanonicalReference parses UPSTREAM/PATH[:tag][@digest], folding Docker Hub spellings; throws Error with a reason.
export function parseCanonicalReference(ref: string): CanonicalReference {
  let rest = ref;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isSha256Digest(digest)) throw new Error(`"${truncate(digest)}" is not a sha256 digest`);
  }
  let tag: string | null = null;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isTag(tag)) throw new Error(`"${truncate(tag)}" is not a valid tag`);
  }
  const repository = canonicalRepository(rest);
  return { repository, tag, digest };
}

// canonicalRepository folds UPSTREAM/PATH into its canonical spelling (docker.io and library/); throws Error when malformed.
export function canonicalRepository(name: string): string {
  const slash = name.indexOf('/');
  if (slash <= 0) throw new Error(`"${truncate(name)}" must start with an upstream name, like docker.io/library/alpine`);
  const host = normalizeHost(name.slice(0, slash));
  let path = name.slice(slash + 1);
  if (!/^[a-z0-9.-]+(?::[0-9]+)?$/.test(host)) throw new Error(`"${truncate(host)}" is not a registry host name`);
  if (!isValidName(path)) throw new Error(`"${truncate(path)}" is not a valid repository path`);
  if (host === 'docker.io' && !path.includes('/')) path = `library/${path}`;
  if (host.length + 1 + path.length > MAX_NAME_LENGTH) throw new Error(`"${truncate(name)}" is longer than ${MAX_NAME_LENGTH} characters`);
  return `${host}/${path}`;
}

// sameRepository compares two references' repositories with Docker Hub spellings folded.
export function sameRepository(a: string, b: string): boolean {
  try {
    return canonicalRepository(a) === canonicalRepository(b);
  } catch {
    return false;
  }
}

// truncate keeps user-supplied text in messages short.
export function truncate(value: string, max = 80): string {
  return value.length > max ? `${value.slice(0, max)}…` : value;
}
