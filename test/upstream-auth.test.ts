// The upstream client against faults no real registry produces on purpose, from in-process servers: whose challenge
// it answers (never one from a host a redirect led to), which of several challenges, where credentials may travel
// (never into plain http from an https upstream), how much of a token answer it reads, and that close() cuts off a
// download an upstream drips out too slowly for any read timeout.
import assert from 'node:assert/strict';
import dns from 'node:dns';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { RegistryError } from '../server/errors.js';
import { parseChallenge, TokenCache } from '../server/mirror/auth.js';
import { addressKind, foreignTargetProblem, guardedLookup, isLocalHost, upstreamIsLocal } from '../server/mirror/egress.js';
import { retryAfterSeconds, Upstream } from '../server/mirror/upstream.js';
import { createCa, issueServerCert } from '../server/pki/ca.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

// Server is an in-process HTTP or HTTPS server whose handler a test sets, with every request it got.
interface Server {
  url: string;
  seen: { url: string; authorization: string | undefined }[];
  handle: Handler;
  close(): Promise<void>;
}

let tmp: string;
let caFile: string;
let tlsFiles: { key: string; cert: string };
const servers: Server[] = [];

async function serve(tls = false): Promise<Server> {
  const s: Server = { url: '', seen: [], handle: (_req, res) => res.end(), close: async () => {} };
  const listener: Handler = (req, res) => {
    s.seen.push({ url: req.url ?? '', authorization: req.headers.authorization });
    s.handle(req, res);
  };
  const server = tls ? https.createServer(tlsFiles, listener) : http.createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  s.url = `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  s.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  servers.push(s);
  return s;
}

function upstreamFor(url: string, opts: { insecure?: boolean; readTimeoutMs?: number } = {}): Upstream {
  return new Upstream(
    { name: 'up', url, username: 'mirror', password: 'SECRET', ca: url.startsWith('https:') ? caFile : null, insecure: opts.insecure ?? url.startsWith('http:'), connectTimeoutMs: 2000, readTimeoutMs: opts.readTimeoutMs ?? 2000 },
    { exchange() {}, breaker() {} },
  );
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-upstream-auth-'));
  const ca = createCa('upstream test CA');
  const server = issueServerCert(ca, ['127.0.0.1']);
  caFile = path.join(tmp, 'ca.crt');
  fs.writeFileSync(caFile, ca.certPem);
  tlsFiles = { key: server.keyPem, cert: server.certPem };
});

after(async () => {
  for (const s of servers) await s.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('a 401 from the storage host a blob GET was redirected to is a refusal: its token service never sees the credentials', async () => {
  const storage = await serve();
  storage.handle = (req, res) => {
    if (req.url?.startsWith('/token')) return void res.end(JSON.stringify({ token: 'STOLEN' }));
    res.writeHead(401, { 'www-authenticate': `Bearer realm="${storage.url}/token"` });
    res.end();
  };
  const registry = await serve();
  registry.handle = (_req, res) => {
    res.writeHead(307, { location: `${storage.url}/blob?sig=1` });
    res.end();
  };
  const up = upstreamFor(registry.url);
  try {
    const res = await up.fetch('GET', '/v2/acme/app/blobs/sha256:00', 'acme/app');
    res.body.resume();
    assert.equal(res.status, 401);
    assert.deepEqual(storage.seen.map((r) => r.url), ['/blob?sig=1'], 'the storage host was asked for the blob only, never for a token');
    assert.equal(storage.seen[0].authorization, undefined, 'and got no credentials');
    assert.match(String(registry.seen[0].authorization), /^Basic /, 'the registry itself got them');
  } finally {
    await up.close();
  }
});

test('of several challenges, in one header or two, the Bearer one is answered with its own realm', async () => {
  for (const challenges of [
    (url: string) => [`Bearer realm="${url}/token",service="svc"`, 'Basic realm="Registry Realm"'],
    (url: string) => [`Basic realm="Registry Realm", Bearer realm="${url}/token",service="svc"`],
  ]) {
    const registry = await serve();
    registry.handle = (req, res) => {
      if (req.url?.startsWith('/token')) return void res.end(JSON.stringify({ token: 'fresh', expires_in: 300 }));
      if (req.headers.authorization === 'Bearer fresh') return void res.end('{}');
      res.writeHead(401, { 'www-authenticate': challenges(registry.url) });
      res.end();
    };
    const up = upstreamFor(registry.url);
    try {
      const res = await up.fetch('GET', '/v2/acme/app/manifests/v1', 'acme/app');
      res.body.resume();
      assert.equal(res.status, 200, JSON.stringify(challenges('X')));
      const token = registry.seen.find((r) => r.url.startsWith('/token'));
      assert.ok(token, 'the token service of the Bearer challenge was asked');
      assert.match(token.url, /service=svc/);
      assert.match(token.url, /scope=repository%3Aacme%2Fapp%3Apull/);
    } finally {
      await up.close();
    }
  }
  assert.deepEqual(parseChallenge('Basic realm="r"'), { scheme: 'basic', params: { realm: 'r' } });
  assert.deepEqual(parseChallenge('Bearer realm="https://a/t",scope="repository:x:pull,push"')?.params, { realm: 'https://a/t', scope: 'repository:x:pull,push' });
  assert.equal(parseChallenge('Negotiate'), null);
});

test('an https upstream may not send its credentials to a plain-http token service, nor redirect into plain http', async () => {
  const plain = await serve();
  plain.handle = (_req, res) => res.end(JSON.stringify({ token: 'over-plain-http' }));
  const registry = await serve(true);
  let redirect = false;
  registry.handle = (_req, res) => {
    if (redirect) res.writeHead(307, { location: `${plain.url}/blob` });
    else res.writeHead(401, { 'www-authenticate': `Bearer realm="${plain.url}/token",service="svc"` });
    res.end();
  };
  const up = upstreamFor(registry.url);
  try {
    await assert.rejects(up.fetch('GET', '/v2/acme/app/manifests/v1', 'acme/app'), (err: unknown) => err instanceof RegistryError && /plain-http URL/.test(err.message));
    redirect = true;
    await assert.rejects(up.fetch('GET', '/v2/acme/app/blobs/sha256:00', 'acme/app'), (err: unknown) => err instanceof RegistryError && /redirected to a plain-http URL/.test(err.message));
    assert.deepEqual(plain.seen, [], 'nothing reached the plain-http host');
  } finally {
    await up.close();
  }
});

test('a redirect or a token service on a link-local or unspecified address is refused before any connection, and the breaker stays closed', async () => {
  const registry = await serve(true);
  let where = '';
  registry.handle = (req, res) => {
    if (req.url?.includes('/blobs/')) res.writeHead(307, { location: where });
    else res.writeHead(401, { 'www-authenticate': `Bearer realm="${where}",service="svc"` });
    res.end();
  };
  const up = upstreamFor(registry.url);
  try {
    for (const target of ['https://169.254.169.254/latest/meta-data/iam/security-credentials/', 'https://[fe80::1]/x', 'https://0.0.0.0/x', 'https://[::ffff:169.254.169.254]/x', 'https://[fd00:ec2::254]/latest/meta-data/']) {
      where = target;
      const host = new URL(target).host;
      await assert.rejects(up.fetch('GET', '/v2/acme/app/blobs/sha256:00', 'acme/app'), (err: unknown) => err instanceof RegistryError && err.message.includes(`redirected to ${host}, which is `) && /; refused$/.test(err.message), target);
      await assert.rejects(up.fetch('GET', '/v2/acme/app/manifests/v1', 'acme/app'), (err: unknown) => err instanceof RegistryError && err.message.includes(`names a token service at ${host}, which is `), target);
    }
    assert.equal(up.breaker.allow(), true, 'a refused target does not count as the upstream being down');
  } finally {
    await up.close();
  }
});

test('a redirect to a URL that does not parse is refused without naming it, and the breaker stays closed', async () => {
  const registry = await serve(true);
  registry.handle = (_req, res) => {
    res.writeHead(307, { location: 'https://[bad/storage?X-Amz-Signature=secret' });
    res.end();
  };
  const up = upstreamFor(registry.url);
  try {
    for (let i = 0; i < 6; i++) {
      await assert.rejects(up.fetch('GET', '/v2/acme/app/blobs/sha256:00', 'acme/app'), (err: unknown) => err instanceof RegistryError && err.message === 'upstream up redirected to a URL that does not parse');
    }
    assert.equal(up.breaker.allow(), true, 'an upstream that answers is not down');
  } finally {
    await up.close();
  }
});

test('a local upstream may redirect to another port of this host, by name or address', async () => {
  const storage = await serve();
  storage.handle = (_req, res) => res.end('blob bytes');
  const registry = await serve();
  registry.handle = (_req, res) => {
    res.writeHead(307, { location: `${storage.url.replace('127.0.0.1', 'localhost')}/storage` });
    res.end();
  };
  const up = upstreamFor(registry.url);
  try {
    const r = await up.fetch('GET', '/v2/acme/app/blobs/sha256:00', 'acme/app');
    assert.equal(r.status, 200);
    assert.equal(Buffer.concat(await r.body.toArray()).toString(), 'blob bytes');
    assert.equal(storage.seen[0]?.authorization, undefined, 'without the credentials');
  } finally {
    await up.close();
  }
});

test('addresses are sorted by where they lead, and a name is refused by what it resolves to', async () => {
  const kinds: [string, string][] = [
    ['127.0.0.1', 'loopback'], ['127.9.9.9', 'loopback'], ['::1', 'loopback'], ['[::1]', 'loopback'], ['::ffff:127.0.0.1', 'loopback'], ['::ffff:7f00:1', 'loopback'],
    ['169.254.169.254', 'link-local'], ['fe80::1', 'link-local'], ['FE80::abcd', 'link-local'], ['::ffff:169.254.0.1', 'link-local'],
    ['fd00:ec2::254', 'metadata'], ['100.100.100.200', 'metadata'],
    ['0.0.0.0', 'unspecified'], ['::', 'unspecified'],
    ['10.0.0.5', 'other'], ['192.168.1.1', 'other'], ['8.8.8.8', 'other'], ['2001:db8::1', 'other'], ['fd00::1', 'other'], ['registry.example', 'other'],
  ];
  for (const [address, kind] of kinds) assert.equal(addressKind(address), kind, address);
  assert.equal(foreignTargetProblem('127.0.0.1', false), '127.0.0.1, a loopback address');
  assert.equal(foreignTargetProblem('127.0.0.1', true), null);
  assert.equal(foreignTargetProblem('169.254.169.254', true), '169.254.169.254, a link-local address');
  assert.equal(foreignTargetProblem('[fd00:ec2::254]', true), 'fd00:ec2::254, a cloud metadata address');
  assert.equal(foreignTargetProblem('10.1.2.3', false), null, 'private networks are where private upstreams keep their blobs');
  for (const u of ['https://localhost:5000', 'https://localhost.:5000', 'http://127.0.0.1', 'https://[::1]:443', 'https://registry.localhost']) assert.ok(isLocalHost(new URL(u)), u);
  for (const u of ['https://registry-1.docker.io', 'https://10.0.0.5']) assert.ok(!isLocalHost(new URL(u)), u);
  // An upstream named otherwise is local when every address of its name is a loopback one (Debian maps the machine's
  // own name to one).
  assert.equal(await upstreamIsLocal(new URL('https://localhost:5000')), true);
  assert.equal(await upstreamIsLocal(new URL('https://10.0.0.5')), false);
  const own = await dns.promises.lookup(os.hostname(), { all: true }).catch(() => []);
  assert.equal(await upstreamIsLocal(new URL(`https://${os.hostname()}:5000`)), own.length > 0 && own.every((a) => a.address.startsWith('127.') || a.address === '::1'));
  const lookup = (local: boolean, host = 'localhost'): Promise<NodeJS.ErrnoException | null> =>
    new Promise((resolve) => guardedLookup(async () => local)(host, { all: true }, (err) => resolve(err)));
  const refused = await lookup(false);
  assert.equal(refused?.code, 'ERR_UPSTREAM_TARGET');
  assert.match(String(refused?.message), /^localhost resolves to (127\.0\.0\.1|::1), a loopback address$/);
  assert.equal(await lookup(true), null);
});

test('a token answer larger than 64 KiB is refused unread, not parsed', async () => {
  const registry = await serve();
  registry.handle = (req, res) => {
    if (req.url?.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      // No Content-Length: the limit must hold while reading, too.
      res.write(`{"token":"${'x'.repeat(70 << 10)}`);
      return void res.end('"}');
    }
    res.writeHead(401, { 'www-authenticate': `Bearer realm="${registry.url}/token"` });
    res.end();
  };
  const up = upstreamFor(registry.url);
  try {
    await assert.rejects(up.fetch('GET', '/v2/acme/app/manifests/v1', 'acme/app'), /token service sent an unreadable answer \(not JSON, or over 65536 bytes\)/);
  } finally {
    await up.close();
  }
});

test('close() cuts off a download that an upstream drips out too slowly for the read timeout to end', async () => {
  const registry = await serve();
  registry.handle = (_req, res) => {
    res.writeHead(200, { 'content-length': 100_000 });
    const timer = setInterval(() => res.write('x'), 100);
    res.on('close', () => clearInterval(timer));
  };
  const up = upstreamFor(registry.url, { readTimeoutMs: 1000 });
  const res = await up.fetch('GET', '/v2/acme/app/blobs/sha256:00', 'acme/app');
  const ended = new Promise<string>((resolve) => {
    res.body.on('error', (err: Error) => resolve(`error: ${err.name}`));
    res.body.on('end', () => resolve('end'));
    res.body.resume();
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const started = Date.now();
  await up.close();
  const how = await ended;
  assert.match(how, /^error/, 'the body fails rather than completing');
  assert.ok(Date.now() - started < 5000, `close() returned after ${Date.now() - started} ms`);
});

test('manifest requests are answered while forty blob downloads hold their connections, and no download waits for another', async () => {
  const registry = await serve();
  const held: http.ServerResponse[] = [];
  registry.handle = (req, res) => {
    if (req.url?.includes('/blobs/')) {
      // A large layer coming slowly: a byte now and then, never idle for the read timeout.
      res.writeHead(200, { 'content-length': 1_000_000 });
      const timer = setInterval(() => res.write('x'), 500);
      res.on('close', () => clearInterval(timer));
      res.write('x');
      held.push(res);
      return;
    }
    res.writeHead(200, { 'docker-content-digest': `sha256:${'a'.repeat(64)}` });
    res.end();
  };
  const up = upstreamFor(registry.url, { readTimeoutMs: 5000 });
  try {
    const downloads = await Promise.all(Array.from({ length: 40 }, (_, i) => up.fetch('GET', `/v2/acme/app/blobs/sha256:${String(i).padStart(64, '0')}`, 'acme/app')));
    assert.equal(held.length, 40, 'every download has its answer while none has ended');
    const head = await up.fetch('HEAD', '/v2/acme/app/manifests/v1', 'acme/app');
    assert.equal(head.status, 200);
    head.body.resume();
    assert.equal(held.filter((r) => !r.writableEnded).length, 40, 'the manifest was answered while all forty downloads were still open');
    for (const d of downloads) d.body.on('error', () => {}).destroy();
  } finally {
    await up.close();
  }
});

test('an upstream path prefix goes in front of /v2, and the cross-host credential rule still compares origins', async () => {
  const registry = await serve();
  registry.handle = (_req, res) => {
    res.writeHead(200, { 'docker-content-digest': `sha256:${'b'.repeat(64)}` });
    res.end();
  };
  const up = upstreamFor(`${registry.url}/artifactory/api/docker/remote/`);
  try {
    const res = await up.fetch('HEAD', '/v2/acme/app/manifests/v1', 'acme/app');
    res.body.resume();
    assert.equal(res.status, 200);
    assert.deepEqual(
      registry.seen.map((r) => [r.url, r.authorization?.split(' ')[0]]),
      [['/artifactory/api/docker/remote/v2/acme/app/manifests/v1', 'Basic']],
    );
  } finally {
    await up.close();
  }
});

test('the token cache is bounded: past 10,000 scopes it drops expired tokens, and all of them when none expired', () => {
  let now = Date.parse('2026-12-07T12:00:00Z');
  const cache = new TokenCache(() => now);
  for (let i = 0; i < 10000; i++) cache.put(`repository:made/up${i}:pull`, { token: `t${i}`, expires_in: 300 });
  assert.equal(cache.size, 10000);
  assert.equal(cache.put('repository:made/up0:pull', { token: 'again', expires_in: 300 }), 'again');
  assert.equal(cache.size, 10000, 'a scope already held is replaced, not added');
  now += 10 * 60 * 1000;
  cache.put('repository:late/one:pull', { token: 'late', expires_in: 300 });
  assert.equal(cache.size, 1, 'the expired tokens went');
  for (let i = 0; i < 9999; i++) cache.put(`repository:fresh/r${i}:pull`, { token: `f${i}`, expires_in: 300 });
  assert.equal(cache.size, 10000);
  cache.put('repository:one/more:pull', { token: 'more', expires_in: 300 });
  assert.equal(cache.size, 1);
  assert.equal(cache.get('repository:one/more:pull'), 'more');
});

test("an upstream's Retry-After is passed on in seconds, given as seconds or as an HTTP date, at most a day", () => {
  assert.equal(retryAfterSeconds('17'), 17);
  assert.equal(retryAfterSeconds('999999'), 86400);
  const inNinety = retryAfterSeconds(new Date(Date.now() + 90_000).toUTCString());
  assert.ok(inNinety >= 88 && inNinety <= 90, String(inNinety));
  assert.equal(retryAfterSeconds(new Date(Date.now() - 60_000).toUTCString()), 0);
  for (const junk of [undefined, '', 'soon', '-5', '1.5', '2026-13-45']) assert.equal(retryAfterSeconds(junk), 60, String(junk));
});

test('a real registry refusing airlock\'s credentials is counted as auth_error, not as an answer that went well', async () => {
  const { startRegistry } = await import('./harness/registry.js');
  const reg = await startRegistry({ dir: path.join(tmp, 'htpasswd-registry'), auth: 'htpasswd', username: 'mirror', password: 'right-password' });
  try {
    const outcomes: string[] = [];
    const up = new Upstream(
      { name: 'up', url: reg.url, username: 'mirror', password: 'wrong-password', ca: reg.caPath, insecure: false, connectTimeoutMs: 2000, readTimeoutMs: 5000 },
      { exchange: (_name, _ms, outcome) => outcomes.push(outcome), breaker() {} },
    );
    try {
      const res = await up.fetch('GET', '/v2/acme/app/manifests/v1', 'acme/app');
      res.body.resume();
      assert.equal(res.status, 401);
    } catch (err) {
      assert.ok(err instanceof RegistryError && err.code === 'DENIED', String(err));
    } finally {
      await up.close();
    }
    assert.deepEqual(outcomes, ['auth_error']);
  } finally {
    await reg.stop();
  }
});
