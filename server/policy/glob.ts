// Repository globs for publisher rules: `*` matches within one path component, `**` across components.

// globToRegExp compiles a glob on canonical names (e.g. ghcr.io/acme/*) into an anchored regular expression.
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
      } else {
        re += '[^/]*';
      }
    } else {
      re += c.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

// matchGlob tells whether a canonical repository name matches a glob.
export function matchGlob(glob: string, repository: string): boolean {
  return globToRegExp(glob).test(repository);
}

// specificity ranks a glob: more literal characters first, then fewer wildcards (an exact name ranks highest).
export function specificity(glob: string): number {
  const wild = (glob.match(/\*/g) ?? []).length;
  const literal = glob.replace(/\*/g, '').length;
  return literal * 16 - wild;
}

// bestMatch is the most specific of globs that matches repository, or null.
export function bestMatch(globs: readonly string[], repository: string): { glob: string; score: number } | null {
  let best: { glob: string; score: number } | null = null;
  for (const g of globs) {
    if (!matchGlob(g, repository)) continue;
    const score = specificity(g);
    if (!best || score > best.score) best = { glob: g, score };
  }
  return best;
}
