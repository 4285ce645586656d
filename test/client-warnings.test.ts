// Which mirror addresses a client cannot use: dockerd never presents its client certificate to a loopback registry
// and then pulls from Docker Hub instead, so the client snippets for Docker say so for such an address.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Config } from '../server/config.js';
import { clientWarnings, isLoopback, listenWarnings, mirrorAddress, serverNames } from '../server/clients.js';
import { createCa, issueServerCert } from '../server/pki/ca.js';

test('loopback addresses are localhost, 127.0.0.0/8 and ::1, with any port', () => {
  for (const a of ['127.0.0.1:5443', '127.1.2.3:443', 'localhost:5443', 'LOCALHOST:1', '[::1]:5443']) assert.equal(isLoopback(a), true, a);
  for (const a of ['10.0.0.5:5443', 'mirror.internal:5443', '[fd00::1]:5443', '128.0.0.1:5443', '127.0.0.1.example:5443', 'localhost.example:5443']) {
    assert.equal(isLoopback(a), false, a);
  }
});

test('only Docker on a loopback address gets a warning, naming the address and the fix', () => {
  const [w, ...more] = clientWarnings('docker', '127.0.0.1:5443');
  assert.equal(more.length, 0);
  assert.match(w ?? '', /no client certificate to the loopback address 127\.0\.0\.1:5443/);
  assert.match(w ?? '', /publicUrl/);
  assert.deepEqual(clientWarnings('docker', 'mirror.internal:5443'), []);
  for (const kind of ['containerd', 'podman'] as const) assert.deepEqual(clientWarnings(kind, '127.0.0.1:5443'), []);
});

test("the mirror address is publicUrl's, else the listen address when the server certificate names it, else its first name", () => {
  const cert = issueServerCert(createCa('names CA'), ['mirror.internal', '10.0.0.5', 'localhost']);
  const names = serverNames(cert.certPem);
  assert.deepEqual(names, ['mirror.internal', '10.0.0.5', 'localhost']);
  const config = (listen: string, publicUrl: string | null = null): Config =>
    ({ publicUrl, listen: { host: listen.slice(0, listen.lastIndexOf(':')), port: Number(listen.slice(listen.lastIndexOf(':') + 1)) } }) as Config;
  assert.equal(mirrorAddress(config('10.0.0.5:5443'), undefined, names), '10.0.0.5:5443');
  assert.equal(mirrorAddress(config('0.0.0.0:5443'), undefined, names), 'mirror.internal:5443', 'a wildcard is no address to connect to');
  assert.equal(mirrorAddress(config('127.0.0.1:5443'), undefined, names), 'mirror.internal:5443', 'the certificate does not name 127.0.0.1');
  assert.equal(mirrorAddress(config('0.0.0.0:5443', 'https://registry.example:8443'), undefined, names), 'registry.example:8443');
  assert.equal(mirrorAddress(config('0.0.0.0:5443')), 'localhost:5443', 'without the names, as before');
});

test('a listen address the server certificate does not name is warned of, naming the fix, unless publicUrl is set or it is a wildcard', () => {
  const names = serverNames(issueServerCert(createCa('listen CA'), ['localhost', '127.0.0.1']).certPem);
  const config = (host: string, publicUrl: string | null = null): Config => ({ publicUrl, listen: { host, port: 0 } }) as Config;
  const [w, ...more] = listenWarnings(config('127.0.0.2'), { host: '127.0.0.2', port: 25444 }, names);
  assert.equal(more.length, 0);
  assert.match(w ?? '', /^the server certificate does not name the listen address 127\.0\.0\.2, so the addresses below are localhost:25444, /);
  assert.match(w ?? '', /set publicUrl to the address clients use, or reissue the server certificate with 127\.0\.0\.2 among its names$/);
  assert.deepEqual(listenWarnings(config('127.0.0.2', 'https://mirror.internal:25444'), { host: '127.0.0.2', port: 25444 }, names), []);
  for (const host of ['127.0.0.1', 'LOCALHOST', '0.0.0.0', '::']) assert.deepEqual(listenWarnings(config(host), { host, port: 5443 }, names), [], host);
});

test('IPv6 addresses compare in their short form, however the certificate or the configuration writes them', () => {
  const cert = issueServerCert(createCa('v6 CA'), ['::1', 'mirror.internal']);
  const names = serverNames(cert.certPem);
  assert.deepEqual(names, ['::1', 'mirror.internal'], 'the certificate holds 0:0:0:0:0:0:0:1');
  const config = { publicUrl: null, listen: { host: '0:0:0:0:0:0:0:1', port: 5443 } } as unknown as Parameters<typeof mirrorAddress>[0];
  assert.equal(mirrorAddress(config, undefined, names), '[::1]:5443');
  assert.equal(isLoopback('[0:0:0:0:0:0:0:1]:5443'), true);
  assert.equal(clientWarnings('docker', '[0:0:0:0:0:0:0:1]:5443').length, 1);
});
