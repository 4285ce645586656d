// The admin console at /ui/: static assets (one page, plain ES modules) for certificates with the audit or admin role,
// a refusal page for pull certificates, and /ui/whoami so the page knows which controls to draw.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic, { type SetHeadersResponse } from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { allows } from './api/roles.js';
import { refusedAsAdmin } from './record.js';
import type { Services } from './services.js';

// CONSOLE_PREFIX is where the console is served.
export const CONSOLE_PREFIX = '/ui/';

// CONSOLE_DIR holds the console's static files: server/console next to this file from a checkout (tsx), and
// dist/server/console next to the compiled file (copied there by scripts/copy-assets.mjs).
export const CONSOLE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'console');

// The console loads only its own files and talks only to this origin; nothing may frame it.
const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

// The refusal page carries its few styles inline, since the console's stylesheet is refused too.
const REFUSAL_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

// escapeHtml makes text safe to place in HTML element content and quoted attribute values.
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// refusalPage is the HTML a certificate without the audit or admin role gets for every console page and asset.
export function refusalPage(cn: string, serial: string, role: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>airlock console: access refused</title>
<style>
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933; background: #f5f7fa; margin: 0; }
main { max-width: 40rem; margin: 12vh auto; background: #fff; border: 1px solid #d9e2ec; border-left: 4px solid #c53030; border-radius: 6px; padding: 1.5rem 2rem; }
h1 { font-size: 1.3rem; margin: 0 0 .75rem; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f0f4f8; padding: 0 .25em; border-radius: 3px; }
.who { color: #52606d; font-size: .9rem; }
</style>
</head>
<body>
<main>
<h1>airlock console: access refused (403)</h1>
<p>Your certificate has the ${escapeHtml(role)} role; the console needs audit or admin.</p>
<p class="who">Certificate <code>${escapeHtml(cn)}</code>, serial <code>${escapeHtml(serial)}</code>.</p>
<p>A certificate with the pull role may pull images through the registry only. Ask an airlock admin for an audit
certificate (<code>airlock cert issue --role audit</code>) and import its <code>client.p12</code> into your browser.</p>
</main>
</body>
</html>
`;
}

function setConsoleHeaders(res: SetHeadersResponse): void {
  res.setHeader('content-security-policy', CONSOLE_CSP);
  res.setHeader('x-content-type-options', 'nosniff');
  res.setHeader('referrer-policy', 'no-referrer');
  res.setHeader('cache-control', 'no-cache');
}

// consoleRoutes registers the console on an encapsulated scope of the app.
export async function consoleRoutes(app: FastifyInstance, s: Services): Promise<void> {
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const identity = req.airlock.identity;
    if (!identity || allows(identity.role, 'audit')) return undefined;
    refusedAsAdmin(req.airlock, req.method, req.url, `the console needs role audit, certificate has ${identity.role ?? 'none'}`);
    s.logger.debug({ actor: identity.cn, path: req.url }, 'console refused');
    return reply
      .code(403)
      .header('content-security-policy', REFUSAL_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-store')
      .type('text/html; charset=utf-8')
      .send(refusalPage(identity.cn, identity.serial, identity.role ?? 'no'));
  });

  app.get('/ui', async (_req, reply) => reply.redirect(CONSOLE_PREFIX, 302));

  app.get('/ui/whoami', async (req, reply) => {
    const identity = req.airlock.identity;
    reply.header('cache-control', 'no-store');
    return { cn: identity?.cn ?? null, role: identity?.role ?? null, serial: identity?.serial ?? null };
  });

  await app.register(fastifyStatic, {
    root: CONSOLE_DIR,
    prefix: CONSOLE_PREFIX,
    index: 'index.html',
    decorateReply: false,
    wildcard: true,
    list: false,
    dotfiles: 'deny',
    cacheControl: false,
    setHeaders: setConsoleHeaders,
  });
}
