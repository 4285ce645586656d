// api-docs renders docs/api.md from the OpenAPI document a running airlock serves (npm run docs:api).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestAirlock } from '../test/harness/airlock.js';

interface Operation {
  summary?: string;
  description?: string;
  tags?: string[];
  'x-airlock-role'?: string;
  parameters?: { name: string; in: string; required?: boolean; schema?: Schema; description?: string }[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
  responses?: Record<string, { description?: string }>;
}
interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  enum?: unknown[];
  pattern?: string;
  maxLength?: number;
  items?: Schema;
  description?: string;
}

function typeOf(s: Schema | undefined): string {
  if (!s) return '';
  if (s.enum) return s.enum.map((e) => `\`${String(e)}\``).join(' \\| ');
  const t = Array.isArray(s.type) ? s.type.join(' \\| ') : s.type ?? 'object';
  return t === 'array' ? `${typeOf(s.items)}[]` : t;
}

// renderApi turns an OpenAPI document into the Markdown reference.
export function renderApi(doc: { info: { title: string; version: string }; paths: Record<string, Record<string, Operation>> }): string {
  const out: string[] = [
    '# Admin API reference',
    '',
    `Generated from the OpenAPI document airlock serves at \`GET /api/v1/openapi.json\` (${doc.info.title} ${doc.info.version}) by \`npm run docs:api\`; do not edit by hand.`,
    '',
    'Every call goes over the same mutual-TLS listener as the registry. The role comes from the client certificate: `pull` < `audit` < `admin`. A wrong role answers 403 and a body that fails its schema (a value of the wrong JSON type included: `"days": "5"` is not converted to 5), or an id in the path not written in decimal digits (`0x1`, `1e0`, `01`), answers 400 naming the field, both as `{"error":{"code","message"}}`.',
    '',
    '| method | path | role | summary |',
    '|---|---|---|---|',
  ];
  const ops: [string, string, Operation][] = [];
  for (const [p, methods] of Object.entries(doc.paths)) for (const [m, op] of Object.entries(methods)) ops.push([m.toUpperCase(), p, op]);
  for (const [m, p, op] of ops) out.push(`| ${m} | \`${p}\` | ${op['x-airlock-role'] ?? ''} | ${op.summary ?? ''} |`);
  for (const [m, p, op] of ops) {
    out.push('', `## ${m} \`${p}\``, '', `Role: \`${op['x-airlock-role'] ?? 'admin'}\`. ${op.summary ?? ''}`.trim());
    if (op.description) out.push('', op.description);
    const params = op.parameters ?? [];
    if (params.length > 0) {
      out.push('', '| parameter | in | type | required |', '|---|---|---|---|');
      for (const q of params) out.push(`| \`${q.name}\` | ${q.in} | ${typeOf(q.schema)} | ${q.required ? 'yes' : 'no'} |`);
    }
    const body = op.requestBody?.content?.['application/json']?.schema;
    if (body?.properties) {
      out.push('', '| body field | type | required |', '|---|---|---|');
      for (const [k, v] of Object.entries(body.properties)) out.push(`| \`${k}\` | ${typeOf(v)} | ${body.required?.includes(k) ? 'yes' : 'no'} |`);
      if (op.requestBody?.required === false) out.push('', 'The body may be left out.');
    }
    const responses = Object.entries(op.responses ?? {});
    if (responses.length > 0) out.push('', `Responses: ${responses.map(([code, r]) => `${code}${r.description ? ` (${r.description})` : ''}`).join(', ')}.`);
  }
  return `${out.join('\n')}\n`;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-apidocs-'));
  const t = await startTestAirlock({ dir, upstreams: [{ name: 'docker.io', url: 'https://127.0.0.1:1' }] });
  try {
    const r = await t.request('audit', '/api/v1/openapi.json');
    if (r.status !== 200) throw new Error(`openapi.json answered ${r.status}`);
    const target = path.resolve('docs/api.md');
    fs.writeFileSync(target, renderApi(JSON.parse(r.body.toString())));
    console.log(`wrote ${target}`);
  } finally {
    await t.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  main().catch((err: Error) => {
    console.error(`api-docs: ${err.message}`);
    process.exitCode = 1;
  });
}
