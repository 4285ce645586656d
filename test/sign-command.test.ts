import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { UserError } from '../server/errors.js';
import { parseSignatureManifest, sha256Digest } from '../server/signing/cosign.js';
import { writeSigningKey } from '../server/signing/key.js';
import { RegistryClient, RegistryRequestError } from '../server/signing/push.js';
import { parseSignReference, signCommand } from '../server/signing/sign-command.js';
import { buildImage, fetchManifest, inspectDigest, pushImage, type LocalImage } from './harness/images.js';
import { freePort, requireTool, run, startProcess, stopAll, StopWaiting, waitFor, type RunResult } from './harness/proc.js';
import { registryRequest, startRegistry, type Registry, type RegistryEndpoint } from './harness/registry.js';
import { makeClientCert, makeServerCert, makeTestCa, writeCertDir } from './harness/tls.js';

const COSIGN = fileURLToPath(new URL('../.cache/cosign/usr/bin/cosign', import.meta.url));
const KEY_PASSWORD = 'correct horse battery staple';
const OTHER_PASSWORD = '';
const SIG_ANNOTATION = 'dev.cosignproject.cosign/signature';
const ZERO_DIGEST = `sha256:${'0'.repeat(64)}`;

interface Keys {
  keyPath: string;
  pubPath: string;
  password: string;
}

interface MtlsRegistry {
  host: string;
  caPath: string;
  clientCertPath: string;
  clientKeyPath: string;
  certDir: string;
  caOnlyDir: string;
}

// Starts docker-registry with client certificate verification (`clientcas`), which the harness does not offer.
async function startMtlsRegistry(dir: string): Promise<MtlsRegistry> {
  const ca = await makeTestCa(path.join(dir, 'pki'));
  const server = await makeServerCert(ca, path.join(dir, 'tls'));
  const client = await makeClientCert(ca, path.join(dir, 'client'), 'publisher');
  const certDir = writeCertDir(path.join(dir, 'certs.d'), { caPaths: [ca.certPath], client });
  const caOnlyDir = writeCertDir(path.join(dir, 'certs-ca-only'), { caPaths: [ca.certPath] });
  const port = await freePort();
  const configPath = path.join(dir, 'config.yml');
  fs.writeFileSync(
    configPath,
    YAML.stringify({
      version: 0.1,
      log: { level: 'info', formatter: 'text', accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: path.join(dir, 'data') }, delete: { enabled: true } },
      http: {
        addr: `127.0.0.1:${port}`,
        secret: 'airlock-sign-test',
        tls: { certificate: server.certPath, key: server.keyPath, clientcas: [ca.certPath] },
      },
      health: { storagedriver: { enabled: false } },
    }),
  );
  const proc = startProcess(requireTool('/usr/bin/docker-registry'), ['serve', configPath], { name: 'mtls-registry', cwd: dir, logDir: dir });
  const endpoint: RegistryEndpoint = {
    url: `https://127.0.0.1:${port}`,
    caPath: ca.certPath,
    clientCertPath: client.certPath,
    clientKeyPath: client.keyPath,
  };
  await waitFor(
    async () => {
      if (!proc.running()) {
        throw new StopWaiting(`docker-registry exited:\n${proc.output().slice(-2000)}`);
      }
      return (await registryRequest(endpoint, '/v2/')).status === 200;
    },
    { timeoutMs: 15_000, what: 'the mTLS registry to answer /v2/' },
  );
  return {
    host: `127.0.0.1:${port}`,
    caPath: ca.certPath,
    clientCertPath: client.certPath,
    clientKeyPath: client.keyPath,
    certDir,
    caOnlyDir,
  };
}

function cosign(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  requireTool(COSIGN);
  return run(COSIGN, args, { env: { ...process.env, ...env }, timeoutMs: 60_000 });
}

function cosignVerify(keys: Keys, ref: string, extra: string[]): Promise<RunResult> {
  return cosign(['verify', '--key', keys.pubPath, '--insecure-ignore-tlog=true', ...extra, ref]);
}

async function rejectsAsUserError(promise: Promise<unknown>, pattern: RegExp): Promise<string> {
  let message = '';
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected a UserError, got ${String(err)}`);
    message = err.message;
    return true;
  });
  assert.match(message, pattern);
  assert.ok(!message.includes('\n'), `the message is one line: ${message}`);
  return message;
}

describe('airlock sign', () => {
  let work: string;
  let registry: Registry;
  let image: LocalImage;
  let keyA: Keys;
  let keyB: Keys;

  // Pushes the test image to registry as repo:v1 and returns its digest there.
  async function publish(repo: string, target: Registry = registry, creds?: string): Promise<string> {
    await pushImage(image, `${target.host}/${repo}:v1`, { certDir: target.certDir, creds });
    return inspectDigest(target, repo, 'v1');
  }

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-sign-'));
    registry = await startRegistry({ dir: path.join(work, 'registry') });
    image = await buildImage(path.join(work, 'images'), { tag: 'v1', files: { '/etc/hello': 'signed by airlock\n' } });
    keyA = { ...writeSigningKey(path.join(work, 'keys', 'a'), KEY_PASSWORD), password: KEY_PASSWORD };
    keyB = { ...writeSigningKey(path.join(work, 'keys', 'b'), OTHER_PASSWORD), password: OTHER_PASSWORD };
  });

  after(async () => {
    await stopAll();
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('a signed digest verifies with cosign and the signer key, and fails with another key', async () => {
    const digest = await publish('team/app');
    const ref = `${registry.host}/team/app@${digest}`;
    const result = await signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: registry.caPath });
    assert.equal(result.signatureTag, `${digest.replace(':', '-')}.sig`);
    assert.equal(result.signatureReference, `${registry.host}/team/app:${result.signatureTag}`);
    assert.equal(result.signatures, 1);
    assert.equal(result.added, true);
    const sig = await fetchManifest(registry, 'team/app', result.signatureTag);
    assert.equal(sig.digest, result.signatureDigest);
    assert.equal(sig.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(parseSignatureManifest(sig.bytes)[0]?.payloadDigest, result.payloadDigest);

    const good = await cosignVerify(keyA, ref, ['--registry-cacert', registry.caPath]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, new RegExp(`"docker-reference":"${registry.host}/team/app"`));
    assert.match(good.stdout, new RegExp(`"docker-manifest-digest":"${digest}"`));
    const wrong = await cosignVerify(keyB, ref, ['--registry-cacert', registry.caPath]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /no matching signatures/);
  });

  test('signing with a second key appends a layer and cosign accepts either key', async () => {
    const digest = await publish('team/two');
    const ref = `${registry.host}/team/two@${digest}`;
    const first = await signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: registry.caPath });
    const second = await signCommand({ keyPath: keyB.keyPath, password: keyB.password, reference: ref, caPath: registry.caPath });
    assert.equal(second.signatures, 2);
    assert.notEqual(second.signatureDigest, first.signatureDigest);
    const layers = parseSignatureManifest((await fetchManifest(registry, 'team/two', second.signatureTag)).bytes);
    assert.equal(layers.length, 2);
    for (const keys of [keyA, keyB]) {
      const res = await cosignVerify(keys, ref, ['--registry-cacert', registry.caPath]);
      assert.equal(res.code, 0, res.stderr);
    }
  });

  test('signing the same digest again with the same key adds no second layer', async () => {
    const digest = await publish('team/again');
    const ref = `${registry.host}/team/again@${digest}`;
    const first = await signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: registry.caPath });
    const again = await signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: registry.caPath });
    assert.equal(again.added, false);
    assert.equal(again.signatures, 1);
    assert.equal(again.signatureDigest, first.signatureDigest);
    assert.equal((await fetchManifest(registry, 'team/again', first.signatureTag)).digest, first.signatureDigest);
    // The command line says so, rather than claiming a push.
    const cli = await run(process.execPath, ['--import', 'tsx', 'server/main.ts', 'sign', '--key', keyA.keyPath, '--ca', registry.caPath, ref], {
      env: { ...process.env, AIRLOCK_KEY_PASSWORD: keyA.password },
      timeoutMs: 60_000,
    });
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.stdout.trim(), `signed ${ref} already: ${first.signatureTag} (${first.signatureDigest}) holds this key's signature; nothing pushed`);
  });

  test('a signature made by cosign keeps its layer and annotations when airlock appends one with payload annotations', async () => {
    const digest = await publish('team/mixed');
    const ref = `${registry.host}/team/mixed@${digest}`;
    const signed = await cosign(
      ['sign', '--yes', '--key', keyA.keyPath, '--tlog-upload=false', '--registry-cacert', registry.caPath, ref],
      { COSIGN_PASSWORD: keyA.password },
    );
    assert.equal(signed.code, 0, signed.stderr);
    const tag = `${digest.replace(':', '-')}.sig`;
    const before = parseSignatureManifest((await fetchManifest(registry, 'team/mixed', tag)).bytes);
    assert.equal(before.length, 1);

    const result = await signCommand({
      keyPath: keyB.keyPath,
      password: keyB.password,
      reference: ref,
      caPath: registry.caPath,
      annotations: { pipeline: 'release', team: 'platform' },
    });
    assert.equal(result.signatures, 2);
    const afterLayers = parseSignatureManifest((await fetchManifest(registry, 'team/mixed', tag)).bytes);
    assert.deepEqual(afterLayers[0], before[0]);
    assert.ok(afterLayers[1]?.annotations[SIG_ANNOTATION]);

    const byCosign = await cosignVerify(keyA, ref, ['--registry-cacert', registry.caPath]);
    assert.equal(byCosign.code, 0, byCosign.stderr);
    const byAirlock = await cosignVerify(keyB, ref, ['--registry-cacert', registry.caPath, '-a', 'team=platform']);
    assert.equal(byAirlock.code, 0, byAirlock.stderr);
    assert.match(byAirlock.stdout, /"optional":\{"pipeline":"release","team":"platform"\}/);
  });

  test('a token-auth registry gets a pull,push token fetched with the given credentials', async () => {
    const tokenRegistry = await startRegistry({
      dir: path.join(work, 'token-registry'),
      auth: 'token',
      username: 'publisher',
      password: 'registry-secret',
    });
    const creds = 'publisher:registry-secret';
    const digest = await publish('team/tokened', tokenRegistry, creds);
    const ref = `${tokenRegistry.host}/team/tokened@${digest}`;
    tokenRegistry.tokenServer?.reset();
    const result = await signCommand({
      keyPath: keyA.keyPath,
      password: keyA.password,
      reference: ref,
      caPath: tokenRegistry.caPath,
      registryUsername: 'publisher',
      registryPassword: 'registry-secret',
    });
    assert.equal(result.signatures, 1);
    const requests = tokenRegistry.tokenServer?.requests ?? [];
    assert.equal(requests.length, 1, 'one token serves every request of the run');
    assert.ok(requests.every((r) => r.user === 'publisher' && r.status === 200));
    assert.deepEqual(requests[0]?.scopes, [{ type: 'repository', name: 'team/tokened', actions: ['pull', 'push'] }]);

    const verified = await cosignVerify(keyA, ref, [
      '--registry-cacert', tokenRegistry.caPath,
      '--registry-username', 'publisher',
      '--registry-password', 'registry-secret',
    ]);
    assert.equal(verified.code, 0, verified.stderr);

    const message = await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: tokenRegistry.caPath }),
      /token.*HTTP 401 \(no registry credentials were given\)/,
    );
    assert.match(message, new RegExp(tokenRegistry.host.replace(/\./g, '\\.')));
    const refused = await rejectsAsUserError(
      signCommand({
        keyPath: keyA.keyPath,
        password: keyA.password,
        reference: ref,
        caPath: tokenRegistry.caPath,
        registryUsername: 'publisher',
        registryPassword: 'not-the-password',
      }),
      /HTTP 401 \(credentials refused\)/,
    );
    assert.ok(!refused.includes('not-the-password'));
    await tokenRegistry.stop();
  });

  test('a basic-auth registry accepts the signature with the given credentials', async () => {
    const basicRegistry = await startRegistry({ dir: path.join(work, 'basic-registry'), auth: 'htpasswd' });
    const user = basicRegistry.username ?? '';
    const pass = basicRegistry.password ?? '';
    const digest = await publish('team/basic', basicRegistry, `${user}:${pass}`);
    const ref = `${basicRegistry.host}/team/basic@${digest}`;
    await signCommand({
      keyPath: keyA.keyPath,
      password: keyA.password,
      reference: ref,
      caPath: basicRegistry.caPath,
      registryUsername: user,
      registryPassword: pass,
    });
    const verified = await cosignVerify(keyA, ref, [
      '--registry-cacert', basicRegistry.caPath,
      '--registry-username', user,
      '--registry-password', pass,
    ]);
    assert.equal(verified.code, 0, verified.stderr);
    await basicRegistry.stop();
  });

  test('a registry that requires client certificates is signed through a certs.d folder', async () => {
    const mtls = await startMtlsRegistry(path.join(work, 'mtls'));
    await pushImage(image, `${mtls.host}/team/mtls:v1`, { certDir: mtls.certDir });
    const endpoint: RegistryEndpoint = {
      url: `https://${mtls.host}`,
      caPath: mtls.caPath,
      clientCertPath: mtls.clientCertPath,
      clientKeyPath: mtls.clientKeyPath,
    };
    const digest = await inspectDigest(endpoint, 'team/mtls', 'v1');
    const ref = `${mtls.host}/team/mtls@${digest}`;
    const result = await signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, certDir: mtls.certDir });
    assert.equal(result.signatures, 1);
    const verified = await cosignVerify(keyA, ref, [
      '--registry-cacert', mtls.caPath,
      '--registry-client-cert', mtls.clientCertPath,
      '--registry-client-key', mtls.clientKeyPath,
    ]);
    assert.equal(verified.code, 0, verified.stderr);

    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: mtls.caPath }),
      new RegExp(`registry ${mtls.host}: .*may require a client certificate`),
    );
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, certDir: mtls.caOnlyDir }),
      /cert dir .* has no client certificate pair \(missing client\.cert and client\.key\)/,
    );
  });

  test('references that are not REGISTRY/REPO@sha256:HEX are refused with one clear line', async () => {
    const hex = 'a'.repeat(64);
    const cases: [string, RegExp][] = [
      ['registry.example.com/team/app:1.0', /^sign a digest, not a tag: /],
      ['registry.example.com/team/app', /^sign a digest, not a tag: /],
      [`team/app@sha256:${hex}`, /must start with a registry host/],
      [`app@sha256:${hex}`, /must start with a registry host/],
      ['registry.example.com/team/app@sha256:abc', /invalid digest .*64 lowercase hex digits/],
      [`registry.example.com/team/app@sha512:${hex}${hex}`, /invalid digest/],
      [`registry.example.com/Team/App@sha256:${hex}`, /invalid repository "Team\/App"/],
      [`registry.example.com/@sha256:${hex}`, /invalid repository ""/],
      [`bad_host.example.com/app@sha256:${hex}`, /invalid registry host/],
      ['', /invalid reference/],
    ];
    for (const [reference, pattern] of cases) {
      await rejectsAsUserError(signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference }), pattern);
    }
  });

  test('a reference names its registry, repository and the identity cosign writes into the payload', () => {
    const hex = 'b'.repeat(64);
    assert.deepEqual(parseSignReference(`localhost:5000/team/app:1.0@sha256:${hex}`), {
      registry: 'localhost:5000',
      repository: 'team/app',
      digest: `sha256:${hex}`,
      identity: 'localhost:5000/team/app',
    });
    assert.deepEqual(parseSignReference(`docker.io/nginx@sha256:${hex}`), {
      registry: 'docker.io',
      repository: 'library/nginx',
      digest: `sha256:${hex}`,
      identity: 'index.docker.io/library/nginx',
    });
  });

  test('a wrong key password is refused without echoing the password', async () => {
    const ref = `${registry.host}/team/app@${ZERO_DIGEST}`;
    const message = await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: 'hunter2-wrong', reference: ref, caPath: registry.caPath }),
      /wrong password/,
    );
    assert.ok(message.includes(keyA.keyPath));
    assert.ok(!message.includes('hunter2-wrong'));
    assert.ok(!message.includes(KEY_PASSWORD));
  });

  test('a missing key, a missing CA file, an unknown digest and an unreachable registry are user errors', async () => {
    const ref = `${registry.host}/team/app@${ZERO_DIGEST}`;
    await rejectsAsUserError(
      signCommand({ keyPath: path.join(work, 'nope.key'), password: '', reference: ref }),
      /cannot read signing key .*nope\.key: no such file \(ENOENT\)$/,
    );
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: path.join(work, 'nope.crt') }),
      /cannot read CA file .*nope\.crt: no such file \(ENOENT\)$/,
    );
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: work }),
      /cannot read CA file .*: a directory, not a file \(EISDIR\)$/,
    );
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, certDir: path.join(work, 'nope.d') }),
      /cannot read cert dir .*nope\.d: no such directory \(ENOENT\)$/,
    );
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, certDir: keyA.keyPath }),
      /cannot read cert dir .*: not a directory \(ENOTDIR\)$/,
    );
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref, caPath: registry.caPath }),
      new RegExp(`manifest ${registry.host}/team/app@${ZERO_DIGEST} not found`),
    );
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: ref }),
      /TLS certificate is not trusted/,
    );
    const closed = await freePort();
    await rejectsAsUserError(
      signCommand({ keyPath: keyA.keyPath, password: keyA.password, reference: `127.0.0.1:${closed}/team/app@${ZERO_DIGEST}` }),
      new RegExp(`registry 127\\.0\\.0\\.1:${closed}: .*cannot reach the registry \\(ECONNREFUSED`),
    );
  });
});

describe('RegistryClient against registries that answer differently from distribution', () => {
  let server: http.Server;
  let host: string;
  const seen: string[] = [];

  before(async () => {
    // Answers like registries that hand out a relative upload Location without a query, and lies about one manifest digest.
    server = http.createServer((req, res) => {
      seen.push(`${req.method ?? ''} ${req.url ?? ''}`);
      req.resume();
      req.on('end', () => {
        if (req.method === 'HEAD' && req.url?.startsWith('/v2/team/app/blobs/')) {
          res.writeHead(404).end();
        } else if (req.method === 'POST' && req.url === '/v2/team/app/blobs/uploads/') {
          res.writeHead(202, { location: '/v2/team/app/blobs/uploads/session-1' }).end();
        } else if (req.method === 'PUT' && req.url?.startsWith('/v2/team/app/blobs/uploads/session-1?digest=')) {
          res.writeHead(201).end();
        } else if (req.method === 'PUT' && req.url === '/v2/team/app/manifests/liar') {
          res.writeHead(201, { 'docker-content-digest': ZERO_DIGEST }).end();
        } else {
          res.writeHead(404, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  test('a relative upload Location without a query gets ?digest= and a lying manifest digest is caught', async () => {
    const client = new RegistryClient({ registry: host, insecureHttp: true });
    try {
      const bytes = Buffer.from('payload');
      const digest = sha256Digest(bytes);
      await client.pushBlob('team/app', digest, bytes);
      assert.ok(seen.includes(`PUT /v2/team/app/blobs/uploads/session-1?digest=${encodeURIComponent(digest)}`), seen.join('\n'));
      await assert.rejects(
        client.putManifest('team/app', 'liar', Buffer.from('{}'), 'application/vnd.oci.image.manifest.v1+json'),
        (err: unknown) => err instanceof RegistryRequestError && /registry reports digest sha256:0+, but the manifest sent is/.test(err.message),
      );
      assert.equal(await client.getManifest('team/app', 'missing', 'application/vnd.oci.image.manifest.v1+json'), null);
      await assert.rejects(
        client.getBlob('team/app', digest),
        (err: unknown) =>
          err instanceof RegistryRequestError && err.status === 404 && err.message === `registry ${host}: GET blob team/app@${digest} failed: HTTP 404 MANIFEST_UNKNOWN: manifest unknown`,
      );
    } finally {
      await client.close();
    }
  });

  test("a 401 from a host a redirect led to is not answered: that host's token service never gets the registry's credentials", async () => {
    const asked: string[] = [];
    const storage = http.createServer((req, res) => {
      asked.push(`${req.url ?? ''} ${req.headers.authorization ?? '-'}`);
      if (req.url?.startsWith('/token')) return void res.end(JSON.stringify({ token: 'STOLEN' }));
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${(storage.address() as AddressInfo).port}/token"` }).end();
    });
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
    const registry = http.createServer((_req, res) => res.writeHead(307, { location: `http://127.0.0.1:${(storage.address() as AddressInfo).port}/blob` }).end());
    await new Promise<void>((resolve) => registry.listen(0, '127.0.0.1', resolve));
    const client = new RegistryClient({ registry: `127.0.0.1:${(registry.address() as AddressInfo).port}`, insecureHttp: true, username: 'signer', password: 'SECRET' });
    try {
      await assert.rejects(client.getBlob('team/app', ZERO_DIGEST), (err: unknown) => err instanceof RegistryRequestError && err.status === 401);
      assert.deepEqual(asked, ['/blob -'], 'the storage host was asked for the blob, without credentials, and its token service never');
    } finally {
      await client.close();
      for (const s of [storage, registry]) {
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
    }
  });
});
