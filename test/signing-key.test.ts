import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cosignBinary, runSync, scratchDirs } from './harness/cosign.js';
import { xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import {
  generateSigningKey,
  keyFingerprint,
  loadSigningKey,
  parsePublicKey,
  writeSigningKey,
} from '../server/signing/key.js';
import { signPayload, verifyPayloadSignature } from '../server/signing/cosign.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-signing-key-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const freshDir = scratchDirs(tmp);



const run = runSync;

function spkiDer(pem: string): Buffer {
  return crypto.createPublicKey(pem).export({ format: 'der', type: 'spki' });
}

function pemBody(pem: string): Buffer {
  const lines = pem.trim().split('\n');
  return Buffer.from(lines.slice(1, -1).join(''), 'base64');
}

// Builds an encrypted key the way go-tuf's encrypted package does, with chosen scrypt N and PEM type.
function handMadeEncryptedKey(pemType: string, N: number, password: string): { pem: string; publicKey: crypto.KeyObject } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const salt = crypto.randomBytes(32);
  const nonce = crypto.randomBytes(24);
  const key = crypto.scryptSync(password, salt, 32, { N, r: 8, p: 1, maxmem: 512 * 1024 * 1024 });
  const sealed = xsalsa20poly1305(key, nonce).encrypt(privateKey.export({ format: 'der', type: 'pkcs8' }));
  const body = JSON.stringify({
    kdf: { name: 'scrypt', params: { N, r: 8, p: 1 }, salt: salt.toString('base64') },
    cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') },
    ciphertext: Buffer.from(sealed).toString('base64'),
  });
  const b64 = Buffer.from(body).toString('base64').match(/.{1,64}/g)?.join('\n') ?? '';
  return { pem: `-----BEGIN ${pemType}-----\n${b64}\n-----END ${pemType}-----\n`, publicKey };
}

describe('keys and real cosign', () => {
  let cosign = '';
  before(() => {
    cosign = cosignBinary();
  });

  test('cosign loads a key written by writeSigningKey and derives the same public key', () => {
    const dir = freshDir();
    const password = 'correct horse battery staple';
    const { keyPath, pubPath } = writeSigningKey(path.join(dir, 'mirror'), password);
    const r = run(cosign, ['public-key', '--key', keyPath], { cwd: dir, env: { COSIGN_PASSWORD: password } });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(spkiDer(r.stdout), spkiDer(fs.readFileSync(pubPath, 'utf8')));
  });

  test('cosign loads a key written with an empty password', () => {
    const dir = freshDir();
    const { keyPath, pubPath } = writeSigningKey(path.join(dir, 'empty'), '');
    const r = run(cosign, ['public-key', '--key', keyPath], { cwd: dir, env: { COSIGN_PASSWORD: '' } });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(spkiDer(r.stdout), spkiDer(fs.readFileSync(pubPath, 'utf8')));
  });

  test('cosign refuses a key written by writeSigningKey when given the wrong password', () => {
    const dir = freshDir();
    const { keyPath } = writeSigningKey(path.join(dir, 'mirror'), 'right');
    const r = run(cosign, ['public-key', '--key', keyPath], { cwd: dir, env: { COSIGN_PASSWORD: 'wrong' } });
    assert.notEqual(r.status, 0);
  });

  test('loadSigningKey reads a key pair made by cosign generate-key-pair and its signatures verify with the cosign public key', () => {
    const dir = freshDir();
    const password = 'cosign-made password';
    const r = run(cosign, ['generate-key-pair'], { cwd: dir, env: { COSIGN_PASSWORD: password } });
    assert.equal(r.status, 0, r.stderr);
    const key = loadSigningKey(fs.readFileSync(path.join(dir, 'cosign.key'), 'utf8'), password);
    const pub = parsePublicKey(fs.readFileSync(path.join(dir, 'cosign.pub'), 'utf8'));
    assert.equal(keyFingerprint(key), keyFingerprint(pub));
    const payload = Buffer.from('{"critical":{},"optional":null}');
    assert.equal(verifyPayloadSignature(pub, payload, signPayload(key, payload)), true);
  });

  test('loadSigningKey reads a key made by cosign generate-key-pair with an empty password', () => {
    const dir = freshDir();
    const r = run(cosign, ['generate-key-pair'], { cwd: dir, env: { COSIGN_PASSWORD: '' } });
    assert.equal(r.status, 0, r.stderr);
    const key = loadSigningKey(fs.readFileSync(path.join(dir, 'cosign.key'), 'utf8'), '');
    assert.equal(keyFingerprint(key), keyFingerprint(parsePublicKey(fs.readFileSync(path.join(dir, 'cosign.pub'), 'utf8'))));
  });

  test('a cosign key opened with the wrong password fails with a clear message that does not reveal the password', () => {
    const dir = freshDir();
    const r = run(cosign, ['generate-key-pair'], { cwd: dir, env: { COSIGN_PASSWORD: 'the-real-one' } });
    assert.equal(r.status, 0, r.stderr);
    const attempt = 'Tr0ub4dor&3-guess';
    assert.throws(
      () => loadSigningKey(fs.readFileSync(path.join(dir, 'cosign.key'), 'utf8'), attempt),
      (err: Error) => {
        assert.equal(err.message, 'cannot decrypt signing key: wrong password or corrupt key');
        assert.equal(err.message.includes(attempt), false);
        return true;
      },
    );
  });
});

describe('keys on their own', () => {
  test('a generated key is an encrypted SIGSTORE PEM with scrypt N=65536 and a P-256 public key', () => {
    const { privatePem, publicPem } = generateSigningKey('pw');
    assert.match(privatePem, /^-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n/);
    assert.match(privatePem, /\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n$/);
    const text = pemBody(privatePem).toString('utf8');
    const shape = new RegExp(
      '^\\{"kdf":\\{"name":"scrypt","params":\\{"N":65536,"r":8,"p":1\\},"salt":"[A-Za-z0-9+/]{43}="\\},' +
        '"cipher":\\{"name":"nacl/secretbox","nonce":"[A-Za-z0-9+/]{32}"\\},"ciphertext":"[A-Za-z0-9+/=]+"\\}$',
    );
    assert.match(text, shape);
    const pub = parsePublicKey(publicPem);
    assert.equal(pub.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(keyFingerprint(loadSigningKey(privatePem, 'pw')), keyFingerprint(pub));
  });

  test('writeSigningKey writes the private key with mode 0600 next to the public key', () => {
    const dir = freshDir();
    const { keyPath, pubPath } = writeSigningKey(path.join(dir, 'keys', 'mirror'), 'pw');
    assert.equal(keyPath, path.join(dir, 'keys', 'mirror.key'));
    assert.equal(pubPath, path.join(dir, 'keys', 'mirror.pub'));
    assert.equal(fs.statSync(keyPath).mode & 0o777, 0o600);
    const key = loadSigningKey(fs.readFileSync(keyPath, 'utf8'), 'pw');
    assert.equal(keyFingerprint(key), keyFingerprint(parsePublicKey(fs.readFileSync(pubPath, 'utf8'))));
  });

  test('writeSigningKey refuses to overwrite an existing key and leaves it unchanged', () => {
    const dir = freshDir();
    const prefix = path.join(dir, 'mirror');
    const { keyPath } = writeSigningKey(prefix, 'pw');
    const before = fs.readFileSync(keyPath);
    assert.throws(() => writeSigningKey(prefix, 'pw'), /refusing to overwrite existing signing key .*mirror\.key/);
    assert.deepEqual(fs.readFileSync(keyPath), before);
  });

  test('a wrong password fails with a clear message that does not reveal the password', () => {
    const { privatePem } = generateSigningKey('right password');
    const attempt = 'hunter2-wrong';
    assert.throws(
      () => loadSigningKey(privatePem, attempt),
      (err: Error) => {
        assert.equal(err.message, 'cannot decrypt signing key: wrong password or corrupt key');
        assert.equal(err.message.includes(attempt), false);
        return true;
      },
    );
  });

  test('loadSigningKey accepts the legacy COSIGN PEM type with scrypt N=32768 as older tools write it', () => {
    const { pem, publicKey } = handMadeEncryptedKey('ENCRYPTED COSIGN PRIVATE KEY', 32768, 'legacy');
    assert.equal(keyFingerprint(loadSigningKey(pem, 'legacy')), keyFingerprint(publicKey));
  });

  test('loadSigningKey accepts scrypt N=131072', () => {
    const { pem, publicKey } = handMadeEncryptedKey('ENCRYPTED SIGSTORE PRIVATE KEY', 131072, 'strong');
    assert.equal(keyFingerprint(loadSigningKey(pem, 'strong')), keyFingerprint(publicKey));
  });

  test('loadSigningKey refuses scrypt parameters outside the set cosign accepts', () => {
    const { pem } = handMadeEncryptedKey('ENCRYPTED SIGSTORE PRIVATE KEY', 16384, 'weak');
    assert.throws(() => loadSigningKey(pem, 'weak'), /unsupported scrypt parameters/);
  });

  test('loadSigningKey refuses a PEM that is not a cosign encrypted key', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const plain = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    assert.throws(() => loadSigningKey(plain, ''), /unsupported PEM type "PRIVATE KEY"/);
    assert.throws(() => loadSigningKey('not a key at all', ''), /expected exactly one PEM block, found 0/);
  });

  test('keyFingerprint is the SHA-256 of the SPKI DER and is the same for the private and the public key', () => {
    const dir = freshDir();
    const { privatePem, publicPem } = generateSigningKey('pw');
    fs.writeFileSync(path.join(dir, 'pub.pem'), publicPem);
    const r = run('openssl', ['pkey', '-pubin', '-in', 'pub.pem', '-outform', 'DER', '-out', 'pub.der'], { cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    const expected = `sha256:${crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, 'pub.der'))).digest('hex')}`;
    assert.equal(keyFingerprint(parsePublicKey(publicPem)), expected);
    assert.equal(keyFingerprint(loadSigningKey(privatePem, 'pw')), expected);
  });

  test('parsePublicKey accepts EC P-256 and P-384, Ed25519 and RSA 2048 public keys', () => {
    const pems = [
      crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey,
      crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey,
      crypto.generateKeyPairSync('ed25519').publicKey,
      crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
    ].map((k) => k.export({ format: 'pem', type: 'spki' }).toString());
    for (const pem of pems) {
      assert.equal(parsePublicKey(pem).type, 'public');
    }
  });

  test('parsePublicKey rejects junk, weak RSA, other curves and private keys with a clear message', () => {
    assert.throws(() => parsePublicKey('hello'), /public key: expected exactly one PEM block, found 0/);
    assert.throws(
      () => parsePublicKey('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'),
      /public key: not a valid SubjectPublicKeyInfo/,
    );
    const rsa1024 = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'pem', type: 'spki' });
    assert.throws(() => parsePublicKey(rsa1024.toString()), /RSA key of 1024 bits is too small \(want at least 2048\)/);
    const p521 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).publicKey.export({ format: 'pem', type: 'spki' });
    assert.throws(() => parsePublicKey(p521.toString()), /unsupported EC curve secp521r1/);
    const priv = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ format: 'pem', type: 'pkcs8' });
    assert.throws(() => parsePublicKey(priv.toString()), /unsupported PEM type "PRIVATE KEY"/);
    const one = crypto.generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }).toString();
    assert.throws(() => parsePublicKey(one + one), /expected exactly one PEM block, found 2/);
  });
});
