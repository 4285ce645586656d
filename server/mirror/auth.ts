// Upstream authentication: parsing WWW-Authenticate challenges and caching bearer tokens per scope until they expire.

// Challenge is one parsed WWW-Authenticate challenge.
export interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

// parseChallenge reads the first Bearer or Basic challenge of a WWW-Authenticate header.
export function parseChallenge(header: string | string[] | undefined): Challenge | null {
  if (header === undefined) return null;
  const value = Array.isArray(header) ? header.join(', ') : header;
  const m = /^\s*(Bearer|Basic)\b\s*(.*)$/i.exec(value);
  if (!m) return null;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2])) !== null) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  return { scheme: m[1].toLowerCase() as Challenge['scheme'], params };
}

// TOKEN_MARGIN_MS is how long before expiry a cached token is no longer used.
const TOKEN_MARGIN_MS = 10000;

// TokenCache keeps bearer tokens per scope until shortly before they expire.
export class TokenCache {
  private readonly tokens = new Map<string, { token: string; expires: number }>();
  private readonly clock: () => number;

  constructor(clock: () => number = Date.now) {
    this.clock = clock;
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
    this.tokens.set(scope, { token, expires: start + expiresIn * 1000 });
    return token;
  }
}
