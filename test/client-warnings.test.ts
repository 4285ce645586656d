// Which mirror addresses a client cannot use: dockerd never presents its client certificate to a loopback registry
// and then pulls from Docker Hub instead, so the client snippets for Docker say so for such an address.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientWarnings, isLoopback } from '../server/clients.js';

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
