// The admission rule and repository globs as pure functions, and the configuration's policy seeds over a real SQLite file.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createPolicyStore } from '../storage/policy.js';
import { openDatabase } from '../storage/db.js';
import { seedPolicy } from '../server/policy/seed.js';
import { decide, type Facts } from '../server/policy/decide.js';
import { bestMatch, matchGlob, specificity } from '../server/policy/glob.js';

const none: Facts = { revoked: false, pin: null, requestStatus: null, admittedIndex: false, publisher: null };

describe('decide', () => {
  test('a revocation refuses whatever else admits', () => {
    const d = decide({ ...none, revoked: true, pin: { source: 'config', createdBy: null }, publisher: { name: 'acme', fingerprint: 'sha256:k' }, admittedIndex: true });
    assert.deepEqual(d, { admitted: false, reason: 'revoked', approvedBy: null, publisherKey: null });
  });

  test('a pin admits as pin, an approval pin as approval naming the approver', () => {
    assert.equal(decide({ ...none, pin: { source: 'config', createdBy: null } })?.reason, 'pin');
    assert.equal(decide({ ...none, pin: { source: 'api', createdBy: 'alice' } })?.reason, 'pin');
    assert.deepEqual(decide({ ...none, pin: { source: 'approval', createdBy: 'alice' } }), { admitted: true, reason: 'approval', approvedBy: 'alice', publisherKey: null });
  });

  test("an admin's denial refuses even a trusted publisher's signature, but not an explicit pin", () => {
    assert.equal(decide({ ...none, requestStatus: 'denied', publisher: { name: 'acme', fingerprint: 'sha256:k' } })?.reason, 'denied');
    assert.equal(decide({ ...none, requestStatus: 'denied', pin: { source: 'api', createdBy: 'bob' } })?.admitted, true);
  });

  test('an admitted parent index admits its children', () => {
    assert.equal(decide({ ...none, admittedIndex: true })?.reason, 'index');
  });

  test("a trusted publisher's signature admits and records the key", () => {
    assert.deepEqual(decide({ ...none, publisher: { name: 'acme', fingerprint: 'sha256:k' } }), { admitted: true, reason: 'publisher', approvedBy: null, publisherKey: 'sha256:k' });
  });

  test('anything else is refused as unknown, a pending request included', () => {
    assert.deepEqual(decide(none), { admitted: false, reason: 'unknown', approvedBy: null, publisherKey: null });
    assert.equal(decide({ ...none, requestStatus: 'pending' })?.reason, 'unknown');
  });

  test('decide asks for the index fact before the publisher fact, and only when it matters', () => {
    assert.equal(decide({ revoked: false, pin: null, requestStatus: null }), null);
    assert.equal(decide({ revoked: false, pin: null, requestStatus: null, admittedIndex: false }), null);
    assert.equal(decide({ revoked: false, pin: null, requestStatus: null, admittedIndex: true })?.reason, 'index');
    assert.equal(decide({ revoked: true, pin: null, requestStatus: null })?.reason, 'revoked');
    assert.equal(decide({ revoked: false, pin: { source: 'api', createdBy: null }, requestStatus: null })?.reason, 'pin');
  });
});

describe('repository globs', () => {
  test('* matches within one path component and ** across components', () => {
    assert.ok(matchGlob('ghcr.io/acme/*', 'ghcr.io/acme/app'));
    assert.ok(!matchGlob('ghcr.io/acme/*', 'ghcr.io/acme/team/app'));
    assert.ok(matchGlob('ghcr.io/acme/**', 'ghcr.io/acme/team/app'));
    assert.ok(!matchGlob('ghcr.io/acme/*', 'ghcr.io/acmex/app'));
    assert.ok(matchGlob('docker.io/library/alpine', 'docker.io/library/alpine'));
    assert.ok(!matchGlob('docker.io/library/alpine', 'docker.io/library/alpine2'));
  });

  test('dots and other regular-expression characters in a glob are literal', () => {
    assert.ok(!matchGlob('ghcr.io/acme/*', 'ghcrxio/acme/app'));
    assert.ok(!matchGlob('registry.k8s.io/pause', 'registryxk8s.io/pause'));
  });

  test('the most specific matching glob wins: an exact name over a wildcard, a longer prefix over a shorter one', () => {
    assert.ok(specificity('ghcr.io/acme/app') > specificity('ghcr.io/acme/*'));
    assert.ok(specificity('ghcr.io/acme/team/*') > specificity('ghcr.io/acme/**'));
    assert.deepEqual(bestMatch(['ghcr.io/**', 'ghcr.io/acme/*', 'ghcr.io/acme/app'], 'ghcr.io/acme/app')?.glob, 'ghcr.io/acme/app');
    assert.equal(bestMatch(['ghcr.io/acme/*'], 'quay.io/acme/app'), null);
  });
});

describe('publisher candidates', () => {
  test('only the publishers whose best glob ties for the most specific match are asked, several of them when they tie', async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const { openDatabase } = await import('../storage/db.js');
    const { createPolicyStore } = await import('../storage/policy.js');
    const { createContentStore } = await import('../storage/content.js');
    const { Policy } = await import('../server/policy/policy.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-candidates-'));
    const db = openDatabase(dir);
    try {
      const store = createPolicyStore(db);
      const add = (name: string, repositories: string[]): void =>
        store.addPublisher({ name, publicKey: 'PEM', fingerprint: `sha256:${name}`, repositories, source: 'api', createdBy: null });
      add('org', ['ghcr.io/acme/**']);
      add('team', ['ghcr.io/acme/team/*']);
      add('team-mirror', ['ghcr.io/acme/team/*', 'quay.io/**']);
      add('other', ['quay.io/other/*']);
      const policy = new Policy(store, createContentStore(db), { admitted: () => {} });
      assert.deepEqual(policy.candidates('ghcr.io/acme/team/app').map((p) => p.name).sort(), ['team', 'team-mirror']);
      assert.deepEqual(policy.candidates('ghcr.io/acme/tools/app').map((p) => p.name), ['org']);
      assert.deepEqual(policy.candidates('docker.io/library/alpine'), []);
    } finally {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('seedPolicy', () => {
  test('a tag pin removed from the configuration takes its drift with it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-seed-'));
    const db = openDatabase(dir);
    try {
      const store = createPolicyStore(db);
      const pinned = `sha256:${'a'.repeat(64)}`;
      const seeds = (pins: { repository: string; tag: string | null; digest: string }[]) => ({ policy: { pins, publishers: [] } }) as unknown as Parameters<typeof seedPolicy>[0];
      seedPolicy(seeds([{ repository: 'docker.io/library/alpine', tag: '3.20', digest: pinned }]), store);
      store.recordDrift('docker.io/library/alpine', '3.20', pinned, `sha256:${'b'.repeat(64)}`);
      assert.equal(store.drift().length, 1);
      assert.deepEqual(seedPolicy(seeds([]), store).changes, [{ action: 'admin.pin.delete', repository: 'docker.io/library/alpine', digest: pinned, reference: '3.20' }]);
      assert.deepEqual(store.pins(), []);
      assert.deepEqual(store.drift(), []);
    } finally {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

// racePull admits ghcr.io/acme/app@digest, trusted through a publisher whose signature look-up runs duringLookup (with
// the look-up's number, from 1) before it finds a signature; it answers the verdict, the look-ups and what was signed.
// With blob, it asks instead for a layer of that manifest, which airlock holds: blobParent answers whether it may be served.
async function racePull(duringLookup: (n: number, revoke: () => void, changed: () => void) => void, ask: 'manifest' | 'blob' = 'manifest') {
  const { createContentStore } = await import('../storage/content.js');
  const { Policy } = await import('../server/policy/policy.js');
  const { parseManifest } = await import('../server/registry/manifest.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-race-'));
  const db = openDatabase(dir);
  try {
    const store = createPolicyStore(db);
    const repository = 'ghcr.io/acme/app';
    const layer = `sha256:${'e'.repeat(64)}`;
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'f'.repeat(64)}`, size: 2 },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer, size: 100 }],
      }),
    );
    const digest = `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
    const content = createContentStore(db);
    const parsed = parseManifest(bytes, null);
    content.saveManifest(repository, { digest, mediaType: parsed.mediaType, size: bytes.length, bytes }, parsed.refs, null, null);
    store.addPublisher({ name: 'acme', publicKey: 'PEM', fingerprint: 'sha256:acme', repositories: ['ghcr.io/acme/*'], source: 'api', createdBy: null });
    const signed: string[] = [];
    const policy = new Policy(store, content, { admitted: (_r, d) => signed.push(d) });
    let lookups = 0;
    policy.publisherVerifier = {
      verify: async () => {
        duringLookup(++lookups, () => store.revoke(repository, digest, 'bad', 'admin'), () => policy.changed());
        return { name: 'acme', fingerprint: 'sha256:acme' };
      },
    };
    const route = { upstream: 'ghcr.io', path: 'acme/app', repository };
    if (ask === 'blob') return { parent: await policy.blobParent(route, layer), lookups };
    const verdict = await policy.admit(route, digest, { tag: null, actor: 'puller' });
    return { verdict, lookups, signed, admission: store.admission(repository, digest) };
  } finally {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('policy changes during a decision', () => {
  test('a revocation made while a publisher signature was being looked up upstream wins: nothing is admitted or signed', async () => {
    const r = await racePull((n, revoke, changed) => {
      if (n !== 1) return;
      revoke();
      changed();
    });
    assert.equal(r.verdict?.admitted, false);
    assert.equal(r.verdict?.reason, 'revoked');
    assert.deepEqual(r.signed, []);
    assert.equal(r.admission, null);
  });

  test('a revocation still wins when the policy changes during every upstream look-up', async () => {
    // An admin script changes the policy during every look-up; the fourth change, during the last look-up one decision
    // makes, is this image's revocation.
    const r = await racePull((n, revoke, changed) => {
      if (n === 4) revoke();
      changed();
    });
    assert.equal(r.lookups, 4);
    assert.equal(r.verdict?.admitted, false);
    assert.equal(r.verdict?.reason, 'revoked');
    assert.deepEqual(r.signed, []);
  });

  test('a blob whose manifest is revoked while its publisher signature was being looked up is not vouched for', async () => {
    const control = await racePull(() => {}, 'blob');
    assert.match(control.parent ?? '', /^sha256:/, 'without the revocation the signed manifest vouches for its layer');
    const r = await racePull((n, revoke, changed) => {
      if (n !== 1) return;
      revoke();
      changed();
    }, 'blob');
    assert.equal(r.parent, null);
    assert.equal(r.lookups, 1, 'asked again on the new policy, which a revocation decides without the upstream');
  });

  test('a blob is not vouched for when its manifest is revoked during the last look-up of a policy that keeps changing', async () => {
    const r = await racePull((n, revoke, changed) => {
      if (n === 4) revoke();
      changed();
    }, 'blob');
    assert.equal(r.lookups, 4);
    assert.equal(r.parent, null);
  });
});

describe('seedPolicy and a publisher key stored as its file was spelled', () => {
  test('the same keys spelled otherwise are stored anew without an audited change; another key is a change', async () => {
    const { publisherKeys } = await import('../server/policy/publishers.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-seed-spelling-'));
    const db = openDatabase(dir);
    try {
      const store = createPolicyStore(db);
      const pem = (): string => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
      const key = pem();
      const { publicKey, fingerprint } = publisherKeys(key);
      // As a build before normalising stored it: the file's text, a comment line and all.
      store.addPublisher({ name: 'acme', publicKey: `# acme release key\n${key}`, fingerprint, repositories: ['ghcr.io/acme/*'], source: 'config', createdBy: null });
      const seeds = (text: string) => ({ policy: { pins: [], publishers: [{ name: 'acme', publicKey: text, repositories: ['ghcr.io/acme/*'] }] } }) as unknown as Parameters<typeof seedPolicy>[0];
      assert.deepEqual(seedPolicy(seeds(`# acme release key\n${key}`), store).changes, []);
      assert.equal(store.publisher('acme')?.publicKey, publicKey);
      assert.deepEqual(seedPolicy(seeds(pem()), store).changes, [{ action: 'admin.publisher.update', repository: null, digest: null, reference: 'acme' }]);
    } finally {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('seedPolicy and API publishers', () => {
  test('a configured publisher named like one added through the API is reported, not dropped in silence', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-seed-pub-'));
    const db = openDatabase(dir);
    try {
      const store = createPolicyStore(db);
      const pem = (): string => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
      store.addPublisher({ name: 'acme', publicKey: pem(), fingerprint: 'sha256:api', repositories: ['ghcr.io/old/*'], source: 'api', createdBy: 'admin' });
      const seeds = { policy: { pins: [], publishers: [{ name: 'acme', publicKey: pem(), repositories: ['ghcr.io/acme/*'] }] } } as unknown as Parameters<typeof seedPolicy>[0];
      const r = seedPolicy(seeds, store);
      assert.deepEqual(r.changes, []);
      assert.deepEqual(r.problems, ['publisher acme: a publisher of that name was added through the API; delete it there, or rename this one']);
      assert.deepEqual(store.publisher('acme')?.repositories, ['ghcr.io/old/*']);
    } finally {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('migration 4', () => {
  test('an upgraded database keeps only the manifests a pin or an admission vouches for (and the indexes listing them), reopens approvals without a pin, and drops drift of unpinned tags', async () => {
    const Database = (await import('better-sqlite3')).default;
    const { migrate } = await import('../storage/db.js');
    const { MIGRATIONS } = await import('../storage/migrations.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-migrate-'));
    const db = new Database(path.join(dir, 'airlock.db'));
    try {
      // A database as a build with three migrations left it.
      for (const step of MIGRATIONS.slice(0, 3)) db.exec(step);
      db.pragma('user_version = 3');
      const t = '2026-12-01T00:00:00.000Z';
      const d = (c: string): string => `sha256:${c.repeat(64)}`;
      for (const c of 'abcdefgh') db.prepare('INSERT INTO manifests VALUES (?, ?, 2, ?, ?)').run(d(c), 'application/vnd.oci.image.manifest.v1+json', Buffer.from('{}'), t);
      const held = db.prepare('INSERT INTO repo_manifests (repository, digest, own, seen_at) VALUES (?, ?, ?, ?)');
      held.run('docker.io/evil/one', d('a'), 0, t); // fetched there, admitted there
      held.run('docker.io/victim/app', d('a'), 0, t); // adopted from the other repository: nothing vouches for it
      held.run('docker.io/victim/app', d('b'), 0, t); // pinned
      held.run('docker.io/victim/app', d('c'), 1, t); // airlock's own signature
      held.run('docker.io/victim/app', d('d'), 0, t); // refused, its request pending
      // An index f a publisher signed, inside another index g: recorded only through the platform manifest b they list.
      held.run('docker.io/victim/app', d('f'), 0, t);
      held.run('docker.io/victim/app', d('g'), 0, t);
      held.run('docker.io/victim/app', d('h'), 0, t); // an index listing only the refused d
      const lists = db.prepare("INSERT INTO manifest_refs (digest, child, kind) VALUES (?, ?, 'manifest')");
      lists.run(d('f'), d('b'));
      lists.run(d('g'), d('f'));
      lists.run(d('h'), d('d'));
      db.prepare("INSERT INTO admissions (repository, digest, how, admitted_at) VALUES ('docker.io/evil/one', ?, 'pin', ?)").run(d('a'), t);
      db.prepare("INSERT INTO pins (repository, digest, tag, source, created_at) VALUES ('docker.io/victim/app', ?, 'v1', 'api', ?)").run(d('b'), t);
      const request = db.prepare("INSERT INTO requests (repository, digest, first_seen, last_seen, status, decided_by, decided_at) VALUES ('docker.io/victim/app', ?, ?, ?, ?, ?, ?)");
      request.run(d('b'), t, t, 'approved', 'admin', t);
      request.run(d('e'), t, t, 'approved', 'admin', t); // its pin deleted by a build that left the request approved
      request.run(d('d'), t, t, 'denied', 'admin', t);
      const drift = db.prepare("INSERT INTO drift VALUES ('docker.io/victim/app', ?, ?, ?, ?, ?)");
      drift.run('v1', d('b'), d('e'), t, t); // the pin freezes v1 to b
      drift.run('v2', d('b'), d('e'), t, t); // no pin of v2
      migrate(db);
      assert.equal(db.pragma('user_version', { simple: true }), MIGRATIONS.length);
      const rows = db.prepare('SELECT repository, digest FROM repo_manifests ORDER BY repository, digest').all() as { repository: string; digest: string }[];
      assert.deepEqual(rows.map((r) => `${r.repository}@${r.digest.slice(7, 8)}`), ['docker.io/evil/one@a', 'docker.io/victim/app@b', 'docker.io/victim/app@c', 'docker.io/victim/app@f', 'docker.io/victim/app@g']);
      assert.equal((db.prepare('SELECT count(*) AS n FROM manifests').get() as { n: number }).n, 8, 'the manifests themselves stay');
      const statuses = db.prepare('SELECT digest, status, decided_by FROM requests ORDER BY digest').all() as { digest: string; status: string; decided_by: string | null }[];
      assert.deepEqual(statuses.map((r) => [r.digest.slice(7, 8), r.status, r.decided_by]), [['b', 'approved', 'admin'], ['d', 'denied', 'admin'], ['e', 'pending', null]]);
      assert.deepEqual((db.prepare('SELECT tag FROM drift').all() as { tag: string }[]).map((r) => r.tag), ['v1']);
    } finally {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('signing after the way an image is admitted changed', () => {
  test('a signing that fails when the admission changed is done by the next admission, and the old signature is not served meanwhile', async () => {
    const { createContentStore } = await import('../storage/content.js');
    const { Policy } = await import('../server/policy/policy.js');
    const { Signer } = await import('../server/signing/signer.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-resign-'));
    const db = openDatabase(dir);
    try {
      const store = createPolicyStore(db);
      const content = createContentStore(db);
      const signer = new Signer(content, store, crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
      let failNext = false;
      const policy = new Policy(store, content, {
        admitted: (route, digest, decision) => {
          if (failNext) {
            failNext = false;
            throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
          }
          signer.sign(route.repository, digest, decision);
        },
      });
      store.addPublisher({ name: 'acme', publicKey: 'PEM', fingerprint: 'sha256:acme', repositories: ['ghcr.io/acme/*'], source: 'api', createdBy: null });
      policy.publisherVerifier = { verify: async () => ({ name: 'acme', fingerprint: 'sha256:acme' }) };
      const repository = 'ghcr.io/acme/app';
      const route = { upstream: 'ghcr.io', path: 'acme/app', repository };
      const digest = `sha256:${'a'.repeat(64)}`;
      // signed says what the stored signature's payload says of the admission, or null without one.
      const signed = (): string | null => {
        const sig = store.admission(repository, digest)?.signature;
        if (!sig) return null;
        const layer = (JSON.parse(content.manifest(sig)!.bytes.toString()) as { layers: { digest: string }[] }).layers[0].digest;
        return (JSON.parse(content.localBlob(layer)!.bytes.toString()) as { optional: Record<string, string> }).optional['airlock.admission'];
      };
      await policy.admit(route, digest, { tag: null, actor: null });
      assert.equal(signed(), 'publisher');
      store.addPin({ repository, digest, tag: null, note: null, source: 'api', createdBy: 'alice' });
      policy.changed();
      failNext = true;
      await assert.rejects(policy.admit(route, digest, { tag: null, actor: null }), /locked/);
      assert.equal(store.admission(repository, digest)?.how, 'pin');
      assert.equal(signed(), null, 'the signature saying "publisher" is no longer the image\'s');
      await policy.admit(route, digest, { tag: null, actor: null });
      assert.equal(signed(), 'pin');
    } finally {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
