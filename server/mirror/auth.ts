// Upstream authentication: parsing WWW-Authenticate challenges and caching bearer tokens per scope until they expire.

// Challenge is one parsed WWW-Authenticate challenge.
export interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

// CHALLENGE_PART is one token of a WWW-Authenticate value: a name, with a value (quoted or not) when it is a parameter,
// without one when it starts a challenge (RFC 9110 §11.6.1).
const CHALLENGE_PART = /([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*)))?/g;

// parseChallenge reads the challenge to answer from WWW-Authenticate: Bearer when offered (a registry may offer Basic
// too, in one header or several), else Basic. Each challenge keeps its own parameters.
export function parseChallenge(header: string | string[] | undefined): Challenge | null {
  if (header === undefined) return null;
  const challenges: { scheme: string; params: Record<string, string> }[] = [];
  for (const line of Array.isArray(header) ? header : [header]) {
    let current: { scheme: string; params: Record<string, string> } | null = null;
    for (const m of line.matchAll(CHALLENGE_PART)) {
      if (m[2] === undefined && m[3] === undefined) {
        current = { scheme: m[1].toLowerCase(), params: {} };
        challenges.push(current);
      } else if (current) {
        current.params[m[1].toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3];
      }
    }
  }
  const chosen = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
  return chosen ? { scheme: chosen.scheme as Challenge['scheme'], params: chosen.params } : null;
}

// schemeAllowed tells whether a registry may point a client at URL u (a redirect, a token service): https, or http
// when the registry itself is reached over plain http. An https registry must not lead requests, or credentials, into
// plain text.
export function schemeAllowed(u: URL, plainHttp: boolean): boolean {
  return u.protocol === 'https:' || (u.protocol === 'http:' && plainHttp);
}

// TOKEN_MARGIN_MS is how long before expiry a cached token is no longer used.
const TOKEN_MARGIN_MS = 10000;

// MAX_TOKENS bounds the tokens kept: one per repository asked for, and clients choose the repositories.
const MAX_TOKENS = 10000;

// TokenCache keeps bearer tokens per scope until shortly before they expire, at most MAX_TOKENS of them: past that,
// expired ones are dropped, and if none had expired, all of them (each is fetched again when next needed).
export class TokenCache {
  private readonly tokens = new Map<string, { token: string; expires: number }>();
  private readonly clock: () => number;

  constructor(clock: () => number = Date.now) {
    this.clock = clock;
  }

  get size(): number {
    return this.tokens.size;
  }

  get(scope: string): string | null {
    const t = this.tokens.get(scope);
    if (!t) return null;
    if (t.expires - TOKEN_MARGIN_MS <= this.clock()) {
      this.tokens.delete(scope);
      return null;
    }
    return t.token;
  }

  // put stores a token response ({token|access_token, expires_in, issued_at}); returns the token or null if the body has none.
  put(scope: string, body: unknown): string | null {
    if (!body || typeof body !== 'object') return null;
    const b = body as Record<string, unknown>;
    const token = typeof b.token === 'string' && b.token ? b.token : typeof b.access_token === 'string' ? b.access_token : null;
    if (!token) return null;
    const expiresIn = typeof b.expires_in === 'number' && b.expires_in >= 60 ? b.expires_in : 60;
    const issued = typeof b.issued_at === 'string' ? Date.parse(b.issued_at) : NaN;
    const start = Number.isFinite(issued) && issued <= this.clock() ? issued : this.clock();
    if (this.tokens.size >= MAX_TOKENS && !this.tokens.has(scope)) {
      const now = this.clock();
      for (const [k, t] of this.tokens) if (t.expires - TOKEN_MARGIN_MS <= now) this.tokens.delete(k);
      if (this.tokens.size >= MAX_TOKENS) this.tokens.clear();
    }
    this.tokens.set(scope, { token, expires: start + expiresIn * 1000 });
    return token;
  }
}
