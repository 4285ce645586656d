import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { xsalsa20poly1305 } from '@noble/ciphers/salsa.js';

// cosign's encrypted private key (sigstore/cosign pkg/cosign/keys.go, go-securesystemslib
// encrypted/encrypted.go): a PEM block whose body is JSON holding scrypt parameters, a
// nacl/secretbox nonce and the sealed PKCS#8 DER of the private key.

const SIGSTORE_PEM_TYPE = 'ENCRYPTED SIGSTORE PRIVATE KEY';
const LEGACY_COSIGN_PEM_TYPE = 'ENCRYPTED COSIGN PRIVATE KEY';
const PUBLIC_KEY_PEM_TYPE = 'PUBLIC KEY';

const SCRYPT_N = 65536;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const ACCEPTED_SCRYPT_N = new Set([32768, 65536, 131072]);
const SALT_BYTES = 32;
const NONCE_BYTES = 24;
const SECRETBOX_KEY_BYTES = 32;

const WRONG_PASSWORD = 'cannot decrypt signing key: wrong password or corrupt key';

interface PemBlock {
  type: string;
  der: Buffer;
}

interface EncryptedKeyEnvelope {
  kdf: { name: 'scrypt'; params: { N: number; r: number; p: number }; salt: string };
  cipher: { name: 'nacl/secretbox'; nonce: string };
  ciphertext: string;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function decodeBase64Strict(text: string, what: string): Buffer {
  if (!BASE64.test(text)) {
    throw new Error(`${what} is not valid base64`);
  }
  return Buffer.from(text, 'base64');
}

function encodePem(type: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type}-----\n${lines.join('\n')}\n-----END ${type}-----\n`;
}

// Reads every PEM block in text; encapsulated headers (RFC 1421 "Key: value" lines) are skipped as Go's pem.Decode does.
function decodePemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
  for (const m of text.matchAll(re)) {
    const bodyLines = m[2].split(/\r?\n/).map((l) => l.trim());
    const headerEnd = bodyLines.findIndex((l) => l === '');
    const hasHeaders = bodyLines.length > 0 && bodyLines[0].includes(':');
    const base64Lines = hasHeaders && headerEnd >= 0 ? bodyLines.slice(headerEnd + 1) : bodyLines;
    blocks.push({ type: m[1], der: decodeBase64Strict(base64Lines.join(''), `PEM block ${m[1]}`) });
  }
  return blocks;
}

function singlePemBlock(pem: string, what: string): PemBlock {
  const blocks = decodePemBlocks(pem);
  if (blocks.length !== 1) {
    throw new Error(`${what}: expected exactly one PEM block, found ${blocks.length}`);
  }
  return blocks[0];
}

function scryptKey(password: string, salt: Buffer, N: number, r: number, p: number): Buffer {
  // OpenSSL needs a little more than 128*N*r bytes; twice that covers every accepted N.
  return crypto.scryptSync(Buffer.from(password, 'utf8'), salt, SECRETBOX_KEY_BYTES, {
    N,
    r,
    p,
    maxmem: 2 * 128 * N * r,
  });
}

function encryptPrivateKey(pkcs8: Buffer, password: string): string {
  const salt = crypto.randomBytes(SALT_BYTES);
  const nonce = crypto.randomBytes(NONCE_BYTES);
  const key = scryptKey(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P);
  const sealed = xsalsa20poly1305(key, nonce).encrypt(pkcs8);
  // Field order and base64 match Go's json.Marshal of go-securesystemslib's envelope.
  const envelope: EncryptedKeyEnvelope = {
    kdf: {
      name: 'scrypt',
      params: { N: SCRYPT_N, r: SCRYPT_R, p: SCRYPT_P },
      salt: salt.toString('base64'),
    },
    cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') },
    ciphertext: Buffer.from(sealed).toString('base64'),
  };
  return encodePem(SIGSTORE_PEM_TYPE, Buffer.from(JSON.stringify(envelope), 'utf8'));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseEnvelope(body: Buffer): { N: number; r: number; p: number; salt: Buffer; nonce: Buffer; ciphertext: Buffer } {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    throw new Error('signing key: PEM body is not JSON');
  }
  if (!isRecord(doc) || !isRecord(doc.kdf) || !isRecord(doc.cipher) || typeof doc.ciphertext !== 'string') {
    throw new Error('signing key: not a cosign encrypted key envelope');
  }
  const { kdf, cipher } = doc;
  if (kdf.name !== 'scrypt' || !isRecord(kdf.params) || typeof kdf.salt !== 'string') {
    throw new Error('signing key: unsupported key derivation (want scrypt)');
  }
  if (cipher.name !== 'nacl/secretbox' || typeof cipher.nonce !== 'string') {
    throw new Error('signing key: unsupported cipher (want nacl/secretbox)');
  }
  const { N, r, p } = kdf.params;
  if (typeof N !== 'number' || !ACCEPTED_SCRYPT_N.has(N) || r !== SCRYPT_R || p !== SCRYPT_P) {
    throw new Error('signing key: unsupported scrypt parameters (want N of 32768, 65536 or 131072, r=8, p=1)');
  }
  const nonce = decodeBase64Strict(cipher.nonce, 'signing key nonce');
  if (nonce.length !== NONCE_BYTES) {
    throw new Error(`signing key: nonce must be ${NONCE_BYTES} bytes`);
  }
  return {
    N,
    r,
    p,
    salt: decodeBase64Strict(kdf.salt, 'signing key salt'),
    nonce,
    ciphertext: decodeBase64Strict(doc.ciphertext, 'signing key ciphertext'),
  };
}

// generateSigningKey makes an ECDSA P-256 key pair, encrypting the private half as cosign generate-key-pair does.
export function generateSigningKey(password: string): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  return {
    privatePem: encryptPrivateKey(pkcs8, password),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

// writeSigningKey writes a new key pair to PREFIX.key (mode 0600) and PREFIX.pub, never replacing an existing file.
export function writeSigningKey(prefix: string, password: string): { keyPath: string; pubPath: string } {
  const keyPath = `${prefix}.key`;
  const pubPath = `${prefix}.pub`;
  for (const existing of [keyPath, pubPath]) {
    // lstat, not exists: a link to nowhere is a file in the way too, and writing through it is refused below.
    if (fs.lstatSync(existing, { throwIfNoEntry: false })) throw new Error(`refusing to overwrite existing signing key ${existing}`);
  }
  const { privatePem, publicPem } = generateSigningKey(password);
  fs.mkdirSync(path.dirname(keyPath), { recursive: true });
  let fd: number;
  try {
    fd = fs.openSync(keyPath, 'wx', 0o600);
  } catch (err) {
    if (err instanceof Error && 'code' in err && err.code === 'EEXIST') {
      throw new Error(`refusing to overwrite existing signing key ${keyPath}`);
    }
    throw err;
  }
  try {
    fs.writeFileSync(fd, privatePem);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.writeFileSync(pubPath, publicPem, { mode: 0o644, flag: 'wx' });
  } catch (err) {
    // Half a pair would stay behind and refuse the next attempt: the private key written above goes with the failure.
    fs.rmSync(keyPath, { force: true });
    throw err;
  }
  return { keyPath, pubPath };
}

// loadSigningKey decrypts a cosign-format private key (SIGSTORE or legacy COSIGN PEM type) with password.
export function loadSigningKey(pem: string, password: string): crypto.KeyObject {
  const block = singlePemBlock(pem, 'signing key');
  if (block.type !== SIGSTORE_PEM_TYPE && block.type !== LEGACY_COSIGN_PEM_TYPE) {
    throw new Error(`signing key: unsupported PEM type "${block.type}" (want ${SIGSTORE_PEM_TYPE})`);
  }
  const env = parseEnvelope(block.der);
  const key = scryptKey(password, env.salt, env.N, env.r, env.p);
  let pkcs8: Uint8Array;
  try {
    pkcs8 = xsalsa20poly1305(key, env.nonce).decrypt(env.ciphertext);
  } catch {
    throw new Error(WRONG_PASSWORD);
  }
  try {
    return crypto.createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' });
  } catch {
    throw new Error('signing key: decrypted data is not a PKCS#8 private key');
  }
}

// parsePublicKey reads a PEM "PUBLIC KEY" (SPKI) that is EC P-256/P-384, Ed25519 or RSA of at least 2048 bits.
export function parsePublicKey(pem: string): crypto.KeyObject {
  const block = singlePemBlock(pem, 'public key');
  if (block.type !== PUBLIC_KEY_PEM_TYPE) {
    throw new Error(`public key: unsupported PEM type "${block.type}" (want ${PUBLIC_KEY_PEM_TYPE})`);
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey({ key: block.der, format: 'der', type: 'spki' });
  } catch {
    throw new Error('public key: not a valid SubjectPublicKeyInfo');
  }
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'ec':
      if (details.namedCurve === 'prime256v1' || details.namedCurve === 'secp384r1') {
        return key;
      }
      throw new Error(`public key: unsupported EC curve ${details.namedCurve ?? 'unknown'} (want P-256 or P-384)`);
    case 'ed25519':
      return key;
    case 'rsa':
      if ((details.modulusLength ?? 0) >= 2048) {
        return key;
      }
      throw new Error(`public key: RSA key of ${details.modulusLength ?? 0} bits is too small (want at least 2048)`);
    default:
      throw new Error(
        `public key: unsupported key type ${key.asymmetricKeyType ?? 'unknown'} (want EC P-256/P-384, Ed25519 or RSA)`,
      );
  }
}

// keyFingerprint is "sha256:" plus the hex SHA-256 of the public key's SPKI DER, for a private or public key.
export function keyFingerprint(key: crypto.KeyObject): string {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  if (pub.type !== 'public') {
    throw new Error('keyFingerprint needs an asymmetric key');
  }
  const der = pub.export({ format: 'der', type: 'spki' });
  return `sha256:${crypto.createHash('sha256').update(der).digest('hex')}`;
}
