import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cosignBinary, runSync, scratchDirs } from './harness/cosign.js';
import {
  buildPayload,
  buildSignatureArtifact,
  parsePayload,
  parseSignatureManifest,
  sha256Digest,
  sigTag,
  signPayload,
  verifyPayloadSignature,
} from '../server/signing/cosign.js';
import { loadSigningKey, parsePublicKey, writeSigningKey } from '../server/signing/key.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-cosign-format-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const freshDir = scratchDirs(tmp);



const run = runSync;

function pem(key: crypto.KeyObject): string {
  return key.export({ format: 'pem', type: 'spki' }).toString();
}

const DIGEST = `sha256:${'ab'.repeat(32)}`;
const REPO = 'docker.io/library/nginx';

// A signature manifest that cosign 2.5 pushed for 127.0.0.1:15999/t/img@FIXTURE_IMAGE, signing
// first with `-a foo=bar`, then without annotations; recorded from a local CNCF registry.
const FIXTURE_IMAGE = 'sha256:f20c43161d73848408ef247f0ec7111b19fe58ffebc0cbcaa0d2c8bda4967268';
const FIXTURE_REPO = '127.0.0.1:15999/t/img';
const FIXTURE_PUB =
  '-----BEGIN PUBLIC KEY-----\n' +
  'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf/+hnekJjcszqNsVHuhNluoJSW2v\n' +
  'jZc13C9tWB3h/0hpexxAuCuvYQwEZE3v/FwTFFTmXGBLmx3FLsKqpbAbsg==\n' +
  '-----END PUBLIC KEY-----\n';
const FIXTURE_SIG_1 = 'MEUCIDCxzn4nuzEGml2o7GvAozrNjnRsp9rIEdEXNRFAdlTnAiEA+EAUHs5Mgi4Pw3d7RFAdaSkBEGWkXDM9VO28/K9er+s=';
const FIXTURE_SIG_2 = 'MEUCIFsAL3Qbyd7nwW4m7Q4EOQwVmB302R5RsU9w7kanQtz7AiEA9wLWXsDkWvtjSEqV8Hou+AcCLqwO1jQkU9V683XhCIk=';
const FIXTURE_MANIFEST_DIGEST = 'sha256:d5f2245773833739eb828f2ea28bc774333915177d7e28095495794853d5ca85';
const FIXTURE_CONFIG_DIGEST = 'sha256:5909ce0d4ab1712803ce414d217c130c975f32cfb04b0a7d724ebb89a29c9ac9';

describe('payloads', () => {
  test('sigTag turns a digest into the cosign signature tag', () => {
    assert.equal(sigTag(DIGEST), `sha256-${'ab'.repeat(32)}.sig`);
    assert.throws(() => sigTag('sha256:XYZ'), /not a valid digest/);
  });

  test('buildPayload produces the exact cosign bytes with null optional', () => {
    assert.equal(
      buildPayload(REPO, DIGEST, null).toString('utf8'),
      `{"critical":{"identity":{"docker-reference":"docker.io/library/nginx"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":null}`,
    );
  });

  test('buildPayload writes optional annotations with sorted keys', () => {
    assert.equal(
      buildPayload(REPO, DIGEST, { 'airlock.time': '2025-01-01T00:00:00Z', 'airlock.admission': 'pin' }).toString('utf8'),
      `{"critical":{"identity":{"docker-reference":"docker.io/library/nginx"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":{"airlock.admission":"pin","airlock.time":"2025-01-01T00:00:00Z"}}`,
    );
  });

  test('buildPayload refuses a malformed digest or a reference with a digest', () => {
    assert.throws(() => buildPayload(REPO, 'sha256:abc', null), /not a valid digest/);
    assert.throws(() => buildPayload(`${REPO}@${DIGEST}`, DIGEST, null), /not a repository name/);
  });

  test('parsePayload returns what buildPayload wrote', () => {
    assert.deepEqual(parsePayload(buildPayload(REPO, DIGEST, { a: 'b' })), { reference: REPO, digest: DIGEST, optional: { a: 'b' } });
    assert.deepEqual(parsePayload(buildPayload(REPO, DIGEST, null)), { reference: REPO, digest: DIGEST, optional: null });
  });

  test('parsePayload accepts the sorted-key payload containers/image writes', () => {
    const payload = Buffer.from(
      `{"critical":{"identity":{"docker-reference":"${REPO}:1.25"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":{"creator":"containers/image 5.23","timestamp":1700000000}}`,
    );
    assert.equal(parsePayload(payload).reference, `${REPO}:1.25`);
  });

  test('parsePayload rejects an extra critical field', () => {
    const payload = `{"critical":{"identity":{"docker-reference":"${REPO}"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature","extra":1},"optional":null}`;
    assert.throws(() => parsePayload(Buffer.from(payload)), /critical must have exactly the fields/);
  });

  test('parsePayload rejects a wrong signature type', () => {
    const payload = `{"critical":{"identity":{"docker-reference":"${REPO}"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"atomic container signature"},"optional":null}`;
    assert.throws(() => parsePayload(Buffer.from(payload)), /critical.type must be "cosign container image signature"/);
  });

  test('parsePayload rejects extra fields in image or identity, and missing fields', () => {
    const bad = [
      `{"critical":{"identity":{"docker-reference":"${REPO}"},"image":{"docker-manifest-digest":"${DIGEST}","x":"y"},"type":"cosign container image signature"},"optional":null}`,
      `{"critical":{"identity":{"docker-reference":"${REPO}","x":"y"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":null}`,
      `{"critical":{"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":null}`,
      `{"critical":{"identity":{"docker-reference":"${REPO}"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"}}`,
      `{"critical":{"identity":{"docker-reference":"${REPO}"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":null,"more":1}`,
    ];
    for (const payload of bad) {
      assert.throws(() => parsePayload(Buffer.from(payload)), /must have exactly the fields/, payload);
    }
  });

  test('parsePayload rejects duplicate keys, trailing data, invalid UTF-8, bad digests and non-objects', () => {
    const dup = `{"critical":{"identity":{"docker-reference":"${REPO}"},"image":{"docker-manifest-digest":"${DIGEST}","docker-manifest-digest":"sha256:${'cd'.repeat(32)}"},"type":"cosign container image signature"},"optional":null}`;
    assert.throws(() => parsePayload(Buffer.from(dup)), /duplicate key "docker-manifest-digest"/);
    assert.throws(() => parsePayload(Buffer.concat([buildPayload(REPO, DIGEST, null), Buffer.from('{}')])), /trailing data/);
    const withBadByte = Buffer.from(buildPayload(REPO, DIGEST, null));
    withBadByte[40] = 0xff;
    assert.throws(() => parsePayload(withBadByte), /not valid UTF-8/);
    const badDigest = buildPayload(REPO, DIGEST, null).toString().replace(DIGEST, 'sha256:ABC');
    assert.throws(() => parsePayload(Buffer.from(badDigest)), /not a valid digest/);
    assert.throws(() => parsePayload(Buffer.from('[]')), /must be a JSON object/);
    assert.throws(() => parsePayload(Buffer.from('')), /invalid JSON/);
  });

  test('parsePayload handles a very long string without trouble', () => {
    const payload = buildPayload(REPO, DIGEST, { note: 'x'.repeat(2_000_000) });
    assert.equal(parsePayload(payload).optional?.note, 'x'.repeat(2_000_000));
    assert.throws(() => parsePayload(Buffer.from(`{"critical":"${'a'.repeat(2_000_000)}`)), /invalid JSON/);
  });
});

describe('signatures with openssl and Node', () => {
  test('an ECDSA signature from signPayload verifies with openssl and fails with another key', () => {
    const dir = freshDir();
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const other = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey;
    const payload = buildPayload(REPO, DIGEST, null);
    fs.writeFileSync(path.join(dir, 'payload'), payload);
    fs.writeFileSync(path.join(dir, 'sig.der'), Buffer.from(signPayload(privateKey, payload), 'base64'));
    fs.writeFileSync(path.join(dir, 'pub.pem'), pem(publicKey));
    fs.writeFileSync(path.join(dir, 'other.pem'), pem(other));
    const good = run('openssl', ['dgst', '-sha256', '-verify', 'pub.pem', '-signature', 'sig.der', 'payload'], { cwd: dir });
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /Verified OK/);
    const bad = run('openssl', ['dgst', '-sha256', '-verify', 'other.pem', '-signature', 'sig.der', 'payload'], { cwd: dir });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout, /Verification failure/);
  });

  test('an RSA signature from signPayload is PKCS#1 v1.5 over SHA-256 and verifies with openssl', () => {
    const dir = freshDir();
    const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const payload = buildPayload(REPO, DIGEST, null);
    const sig = signPayload(privateKey, payload);
    assert.equal(verifyPayloadSignature(publicKey, payload, sig), true);
    assert.equal(verifyPayloadSignature(publicKey, Buffer.concat([payload, Buffer.from(' ')]), sig), false);
    fs.writeFileSync(path.join(dir, 'payload'), payload);
    fs.writeFileSync(path.join(dir, 'sig'), Buffer.from(sig, 'base64'));
    fs.writeFileSync(path.join(dir, 'pub.pem'), pem(publicKey));
    const r = run('openssl', ['dgst', '-sha256', '-verify', 'pub.pem', '-signature', 'sig', 'payload'], { cwd: dir });
    assert.equal(r.status, 0, r.stderr);
  });

  test('an Ed25519 signature from signPayload is over the raw payload and verifies with openssl', () => {
    const dir = freshDir();
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519');
    const payload = buildPayload(REPO, DIGEST, null);
    const sig = signPayload(privateKey, payload);
    assert.equal(verifyPayloadSignature(publicKey, payload, sig), true);
    assert.equal(verifyPayloadSignature(crypto.generateKeyPairSync('ed25519').publicKey, payload, sig), false);
    fs.writeFileSync(path.join(dir, 'payload'), payload);
    fs.writeFileSync(path.join(dir, 'sig'), Buffer.from(sig, 'base64'));
    fs.writeFileSync(path.join(dir, 'pub.pem'), pem(publicKey));
    const r = run('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-in', 'payload', '-sigfile', 'sig'], {
      cwd: dir,
    });
    assert.equal(r.status, 0, r.stderr);
  });

  test('a P-384 signature from signPayload uses SHA-256 as cosign does', () => {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const payload = buildPayload(REPO, DIGEST, null);
    const sig = Buffer.from(signPayload(privateKey, payload), 'base64');
    assert.equal(crypto.verify('sha256', payload, { key: publicKey, dsaEncoding: 'der' }, sig), true);
  });

  test('verifyPayloadSignature returns false for garbage instead of throwing', () => {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const payload = buildPayload(REPO, DIGEST, null);
    const sig = signPayload(privateKey, payload);
    for (const garbage of ['', 'not base64!', 'AAAA', sig.slice(0, -4), `${sig}AAAA`, 'MEUCIQ==', ' '.repeat(8)]) {
      assert.equal(verifyPayloadSignature(publicKey, payload, garbage), false, garbage);
    }
    assert.equal(verifyPayloadSignature(publicKey, payload, sig), true);
  });

  test('signPayload refuses a public key', () => {
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    assert.throws(() => signPayload(publicKey, Buffer.from('x')), /needs a private key/);
  });
});

describe('payloads and signatures with real cosign', () => {
  let cosign = '';
  before(() => {
    cosign = cosignBinary();
  });

  test('buildPayload matches the payload cosign generate prints, with and without annotations', () => {
    const dir = freshDir();
    const plain = run(cosign, ['generate', `${REPO}@${DIGEST}`], { cwd: dir });
    assert.equal(plain.status, 0, plain.stderr);
    // cosign writes Docker Hub as index.docker.io in the payload.
    assert.equal(plain.stdout, buildPayload('index.docker.io/library/nginx', DIGEST, null).toString('utf8'));
    const annotated = run(cosign, ['generate', '-a', 'b=<x>&y', '-a', 'a=1', `127.0.0.1:5000/team/app@${DIGEST}`], { cwd: dir });
    assert.equal(annotated.status, 0, annotated.stderr);
    assert.equal(annotated.stdout, buildPayload('127.0.0.1:5000/team/app', DIGEST, { b: '<x>&y', a: '1' }).toString('utf8'));
  });

  test('cosign verify-blob accepts a payload signed by signPayload with a writeSigningKey key and rejects another payload', () => {
    const dir = freshDir();
    const { keyPath } = writeSigningKey(path.join(dir, 'cosign'), 'pw');
    const key = loadSigningKey(fs.readFileSync(keyPath, 'utf8'), 'pw');
    const payload = buildPayload(REPO, DIGEST, { 'airlock.admission': 'pin' });
    fs.writeFileSync(path.join(dir, 'payload.json'), payload);
    fs.writeFileSync(path.join(dir, 'payload.sig'), signPayload(key, payload));
    const ok = run(
      cosign,
      ['verify-blob', '--key', 'cosign.pub', '--insecure-ignore-tlog=true', '--signature', 'payload.sig', 'payload.json'],
      { cwd: dir },
    );
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stderr, /Verified OK/);
    fs.writeFileSync(path.join(dir, 'tampered.json'), buildPayload(REPO, `sha256:${'cd'.repeat(32)}`, null));
    const bad = run(
      cosign,
      ['verify-blob', '--key', 'cosign.pub', '--insecure-ignore-tlog=true', '--signature', 'payload.sig', 'tampered.json'],
      { cwd: dir },
    );
    assert.notEqual(bad.status, 0);
  });

  test('verifyPayloadSignature accepts signatures cosign sign-blob makes with ECDSA and Ed25519 keys', () => {
    const dir = freshDir();
    const payload = buildPayload(REPO, DIGEST, null);
    fs.writeFileSync(path.join(dir, 'payload.json'), payload);
    const gen = run(cosign, ['generate-key-pair'], { cwd: dir, env: { COSIGN_PASSWORD: 'pw' } });
    assert.equal(gen.status, 0, gen.stderr);
    const ed = crypto.generateKeyPairSync('ed25519');
    fs.writeFileSync(path.join(dir, 'ed.pem'), ed.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    const imp = run(cosign, ['import-key-pair', '--key', 'ed.pem', '--output-key-prefix', 'ed'], {
      cwd: dir,
      env: { COSIGN_PASSWORD: 'pw' },
    });
    assert.equal(imp.status, 0, imp.stderr);
    for (const prefix of ['cosign', 'ed']) {
      const sign = run(
        cosign,
        ['sign-blob', '--yes', '--key', `${prefix}.key`, '--tlog-upload=false', '--output-signature', `${prefix}.sig`, 'payload.json'],
        { cwd: dir, env: { COSIGN_PASSWORD: 'pw' } },
      );
      assert.equal(sign.status, 0, sign.stderr);
      const pub = parsePublicKey(fs.readFileSync(path.join(dir, `${prefix}.pub`), 'utf8'));
      const sig = fs.readFileSync(path.join(dir, `${prefix}.sig`), 'utf8').trim();
      assert.equal(verifyPayloadSignature(pub, payload, sig), true, prefix);
      assert.equal(verifyPayloadSignature(pub, buildPayload(REPO, `sha256:${'cd'.repeat(32)}`, null), sig), false, prefix);
    }
  });
});

describe('signature manifests', () => {
  test('buildSignatureArtifact reproduces byte for byte a signature manifest pushed by cosign 2.5', () => {
    const first = buildPayload(FIXTURE_REPO, FIXTURE_IMAGE, { foo: 'bar' });
    const second = buildPayload(FIXTURE_REPO, FIXTURE_IMAGE, null);
    const pub = parsePublicKey(FIXTURE_PUB);
    assert.equal(verifyPayloadSignature(pub, first, FIXTURE_SIG_1), true);
    assert.equal(verifyPayloadSignature(pub, second, FIXTURE_SIG_2), true);
    const artifact = buildSignatureArtifact([
      { payload: first, signature: FIXTURE_SIG_1 },
      { payload: second, signature: FIXTURE_SIG_2 },
    ]);
    assert.equal(sha256Digest(artifact.config), FIXTURE_CONFIG_DIGEST);
    assert.equal(artifact.digest, FIXTURE_MANIFEST_DIGEST);
  });

  test('buildSignatureArtifact digests the manifest bytes and lists the config and payload blobs', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const payload = buildPayload(REPO, DIGEST, null);
    const signature = signPayload(privateKey, payload);
    const artifact = buildSignatureArtifact([{ payload, signature }]);
    assert.equal(artifact.digest, sha256Digest(artifact.manifest));
    const manifest: unknown = JSON.parse(artifact.manifest.toString('utf8'));
    assert.deepEqual(manifest, {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        size: artifact.config.length,
        digest: sha256Digest(artifact.config),
      },
      layers: [
        {
          mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
          size: payload.length,
          digest: sha256Digest(payload),
          annotations: { 'dev.cosignproject.cosign/signature': signature },
        },
      ],
    });
    assert.deepEqual(JSON.parse(artifact.config.toString('utf8')), {
      architecture: '',
      created: '0001-01-01T00:00:00Z',
      history: [{ created: '0001-01-01T00:00:00Z' }],
      os: '',
      rootfs: { type: 'layers', diff_ids: [sha256Digest(payload)] },
      config: {},
    });
    assert.deepEqual(
      artifact.blobs.map((b) => [b.digest, b.mediaType]),
      [
        [sha256Digest(artifact.config), 'application/vnd.oci.image.config.v1+json'],
        [sha256Digest(payload), 'application/vnd.dev.cosign.simplesigning.v1+json'],
      ],
    );
    for (const blob of artifact.blobs) {
      assert.equal(sha256Digest(blob.bytes), blob.digest);
    }
  });

  test('parseSignatureManifest reads back every signature with its extra annotations', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const p1 = buildPayload(REPO, DIGEST, null);
    const p2 = buildPayload(REPO, DIGEST, { 'airlock.admission': 'approval' });
    const s1 = signPayload(privateKey, p1);
    const s2 = signPayload(privateKey, p2);
    const bundle = '{"SignedEntryTimestamp":"AA==","Payload":{"body":"AA==","integratedTime":1,"logIndex":2,"logID":"ab"}}';
    const artifact = buildSignatureArtifact([
      { payload: p1, signature: s1 },
      { payload: p2, signature: s2, annotations: { 'dev.sigstore.cosign/bundle': bundle } },
    ]);
    assert.deepEqual(parseSignatureManifest(artifact.manifest), [
      {
        payloadDigest: sha256Digest(p1),
        payloadSize: p1.length,
        signature: s1,
        annotations: { 'dev.cosignproject.cosign/signature': s1 },
      },
      {
        payloadDigest: sha256Digest(p2),
        payloadSize: p2.length,
        signature: s2,
        annotations: { 'dev.cosignproject.cosign/signature': s2, 'dev.sigstore.cosign/bundle': bundle },
      },
    ]);
  });

  test('buildSignatureArtifact refuses no signatures, a non-base64 signature, or an annotation overriding the signature', () => {
    const payload = buildPayload(REPO, DIGEST, null);
    assert.throws(() => buildSignatureArtifact([]), /between 1 and 1000 signatures/);
    assert.throws(() => buildSignatureArtifact([{ payload, signature: 'not base64!' }]), /standard base64/);
    assert.throws(
      () =>
        buildSignatureArtifact([
          { payload, signature: 'AAAA', annotations: { 'dev.cosignproject.cosign/signature': 'BBBB' } },
        ]),
      /must not set dev.cosignproject.cosign\/signature/,
    );
  });

  test('parseSignatureManifest rejects manifests that are not cosign signatures', () => {
    const layer = (extra: Record<string, unknown>): Record<string, unknown> => ({
      mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
      size: 10,
      digest: DIGEST,
      annotations: { 'dev.cosignproject.cosign/signature': 'AAAA' },
      ...extra,
    });
    const manifest = (extra: Record<string, unknown>): Buffer =>
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', size: 2, digest: DIGEST },
          layers: [layer({})],
          ...extra,
        }),
      );
    assert.equal(parseSignatureManifest(manifest({})).length, 1);
    const cases: [Buffer, RegExp][] = [
      [Buffer.from('not json'), /invalid JSON/],
      [manifest({ schemaVersion: 1 }), /not a schemaVersion 2 manifest/],
      [manifest({ mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json' }), /media type must be/],
      [manifest({ layers: [] }), /no layers/],
      [manifest({ layers: [layer({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' })] }), /layer 0 media type must be/],
      [manifest({ layers: [layer({ annotations: {} })] }), /no dev.cosignproject.cosign\/signature annotation/],
      [manifest({ layers: [layer({ annotations: undefined })] }), /has no annotations/],
      [manifest({ layers: [layer({ digest: 'sha256:nope' })] }), /invalid digest/],
      [manifest({ layers: [layer({ size: -1 })] }), /invalid size/],
      [manifest({ layers: [layer({ annotations: { 'dev.cosignproject.cosign/signature': 5 } })] }), /is not a string/],
    ];
    for (const [bytes, message] of cases) {
      assert.throws(() => parseSignatureManifest(bytes), message, bytes.toString());
    }
  });
});
