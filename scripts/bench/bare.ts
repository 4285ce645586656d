// bare is the benchmark's floor for small responses: Fastify 5 over HTTPS with mutual TLS, answering every GET with
// the same bytes and headers a registry sends for a manifest, and doing nothing else (no routing, policy or audit).
// Usage: node --import tsx scripts/bench/bare.ts SPEC.json  (port, cert, key, clientCa, bodyPath, headers)
import fs from 'node:fs';
import Fastify from 'fastify';

/** BareSpec is the JSON file bare.ts reads its settings from. */
export interface BareSpec {
  port: number;
  cert: string;
  key: string;
  clientCa: string;
  bodyPath: string;
  headers: Record<string, string>;
}

async function main(): Promise<void> {
  const specPath = process.argv[2];
  if (specPath === undefined) throw new Error('usage: bare.ts SPEC.json');
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8')) as BareSpec;
  const body = fs.readFileSync(spec.bodyPath);
  const app = Fastify({
    logger: false,
    https: {
      key: fs.readFileSync(spec.key),
      cert: fs.readFileSync(spec.cert),
      ca: fs.readFileSync(spec.clientCa),
      requestCert: true,
      rejectUnauthorized: true,
    },
    keepAliveTimeout: 65000,
  });
  app.get('/*', (_req, reply) => {
    reply.headers(spec.headers).header('content-length', body.length).send(body);
  });
  await app.listen({ host: '127.0.0.1', port: spec.port });
  console.log(`bare listening on https://127.0.0.1:${spec.port}`);
  const stop = (): void => {
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: Error) => {
  console.error(`bare: ${err.message}`);
  process.exit(1);
});
