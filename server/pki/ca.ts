import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import forge from 'node-forge';

// Role is what a client certificate may do; it travels in the certificate's OU.
export type Role = 'pull' | 'audit' | 'admin';

// ROLES lists every role, in order of increasing power.
export const ROLES: readonly Role[] = ['pull', 'audit', 'admin'];

// CertKeyPair is a PEM certificate with its PEM (PKCS#8) private key.
export interface CertKeyPair {
  certPem: string;
  keyPem: string;
}

// IssuedClientCert is a client certificate with its serial in canonical form (see normalizeSerial).
export interface IssuedClientCert extends CertKeyPair {
  serial: string;
}

// ClientBundle names the directory writeClientBundle filled and the paths it wrote.
export interface ClientBundle {
  dir: string;
  files: string[];
}

const MAX_DAYS = 3650;
const DAY_MS = 24 * 60 * 60 * 1000;
// Certificates start a little in the past so a peer whose clock lags ours still accepts them.
const BACKDATE_MS = 5 * 60 * 1000;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

// isRole tells whether a string is one of ROLES.
export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

// normalizeSerial puts a hex serial in airlock's one canonical form: lowercase, no 0x, colons or leading zeros.
export function normalizeSerial(hex: string): string {
  let s = hex.trim().toLowerCase();
  if (s.startsWith('0x')) s = s.slice(2);
  s = s.replace(/:/g, '');
  if (s.length === 0 || !/^[0-9a-f]+$/.test(s)) {
    throw new Error(`serial must be hexadecimal, got "${hex}"`);
  }
  s = s.replace(/^0+/, '');
  return s === '' ? '0' : s;
}

// createCa makes a self-signed RSA certificate authority for airlock's client and server certificates.
export function createCa(commonName = 'airlock CA', days = MAX_DAYS): CertKeyPair {
  checkDays(days);
  if (commonName.trim() === '' || commonName.length > 64) {
    throw new Error('CA common name must be 1 to 64 characters');
  }
  const keys = generateRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerialHex();
  setValidity(cert, ...validityFromDays(days));
  const subject = [dnField('commonName', commonName), dnField('organizationName', 'airlock')];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', critical: true, cA: true },
    { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: keys.keyPem };
}

// issueServerCert signs a TLS server certificate whose SANs are the given host names and IP addresses.
export function issueServerCert(ca: CertKeyPair, hosts: string[], days = 825): CertKeyPair {
  checkDays(days);
  return issueServerCertWithValidity(ca, hosts, ...withinCa(ca, validityFromDays(days)));
}

// issueServerCertWithValidity is issueServerCert with explicit dates, so tests can make an expired certificate.
export function issueServerCertWithValidity(ca: CertKeyPair, hosts: string[], notBefore: Date, notAfter: Date): CertKeyPair {
  const unique = [...new Set(hosts.map((h) => h.trim()))];
  if (unique.length === 0 || unique.some((h) => h === '')) {
    throw new Error('server certificate needs at least one non-empty host');
  }
  const altNames = unique.map((host) => {
    const ipVersion = net.isIP(host);
    if (ipVersion !== 0) return { type: 7, ip: host };
    if (!/^[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})$/.test(host)) {
      throw new Error(`host "${host}" is neither an IP address nor a DNS name`);
    }
    return { type: 2, value: host };
  });
  const signer = loadCa(ca);
  const keys = generateRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerialHex();
  setValidity(cert, notBefore, notAfter);
  cert.setSubject([dnField('commonName', unique[0]), dnField('organizationName', 'airlock')]);
  cert.setIssuer(signer.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', critical: true, cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: signer.keyIdentifier },
  ]);
  cert.sign(signer.key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: keys.keyPem };
}

// issueClientCert signs a client certificate for mutual TLS: CN is the name, OU the role.
export function issueClientCert(ca: CertKeyPair, name: string, role: Role, days = 365): IssuedClientCert {
  checkDays(days);
  return issueClientCertWithValidity(ca, name, role, ...withinCa(ca, validityFromDays(days)));
}

// withinCa ends a validity no later than the CA's own: a certificate outliving its CA fails verification anyway.
function withinCa(ca: CertKeyPair, [notBefore, notAfter]: [Date, Date]): [Date, Date] {
  const caEnd = new Date(new crypto.X509Certificate(ca.certPem).validTo);
  return [notBefore, notAfter.getTime() > caEnd.getTime() ? caEnd : notAfter];
}

// issueClientCertWithValidity is issueClientCert with explicit dates, so tests can make an expired certificate.
export function issueClientCertWithValidity(
  ca: CertKeyPair,
  name: string,
  role: Role,
  notBefore: Date,
  notAfter: Date,
): IssuedClientCert {
  checkClientName(name);
  if (!isRole(role)) {
    throw new Error(`role must be one of ${ROLES.join(', ')}, got "${String(role)}"`);
  }
  if (!(notAfter.getTime() > notBefore.getTime())) {
    throw new Error('certificate notAfter must be later than notBefore');
  }
  const signer = loadCa(ca);
  const keys = generateRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerialHex();
  setValidity(cert, notBefore, notAfter);
  cert.setSubject([
    dnField('commonName', name),
    dnField('organizationalUnitName', role),
    dnField('organizationName', 'airlock'),
  ]);
  cert.setIssuer(signer.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', critical: true, cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', clientAuth: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: signer.keyIdentifier },
  ]);
  cert.sign(signer.key, forge.md.sha256.create());
  return {
    certPem: forge.pki.certificateToPem(cert),
    keyPem: keys.keyPem,
    serial: normalizeSerial(cert.serialNumber),
  };
}

// pemCertificates splits PEM text into its certificates, each a PEM block of its own ending in a line break, in order.
export function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----(?:\r?\n)?/g)?.map((block) => (block.endsWith('\n') ? block : `${block}\n`)) ?? [];
}

// clientTrust is the ca.crt of a client bundle: every certificate in the tls.clientCa files, then the server
// certificate's issuer when the tls.cert file holds it and clientCa does not. While a CA is renewed, clientCa lists the
// new CA and the old one, and the server certificate is switched from one to the other: a client trusting all of them
// reaches the server before and after the switch.
export function clientTrust(clientCaPems: readonly string[], serverCertPem: string): string {
  const trusted = new Map<string, string>();
  for (const pem of clientCaPems.flatMap(pemCertificates)) trusted.set(new crypto.X509Certificate(pem).fingerprint256, pem);
  const [leafPem, ...chain] = pemCertificates(serverCertPem);
  if (leafPem !== undefined) {
    const leaf = new crypto.X509Certificate(leafPem);
    const issuer = chain.map((pem) => new crypto.X509Certificate(pem)).find((c) => leaf.checkIssued(c) && leaf.verify(c.publicKey));
    if (issuer && !trusted.has(issuer.fingerprint256)) trusted.set(issuer.fingerprint256, issuer.toString());
  }
  return [...trusted.values()].join('');
}

// toPkcs12 packs a certificate, its key and the CA certificates of caPem into a PKCS#12 file that browsers and
// OpenSSL 3 import.
export function toPkcs12(cert: CertKeyPair, caPem: string, password: string, friendlyName?: string): Buffer {
  const leaf = forge.pki.certificateFromPem(cert.certPem);
  const key = forge.pki.privateKeyFromPem(cert.keyPem);
  const caCerts = pemCertificates(caPem).map((pem) => forge.pki.certificateFromPem(pem));
  const label = friendlyName ?? commonNameOf(leaf);
  // pbeWithSHA1And3-KeyTripleDES-CBC is what OpenSSL 3 (without -legacy) and Chromium both import;
  // the RC2 scheme of older tools would need OpenSSL's legacy provider.
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, [leaf, ...caCerts], password, {
    algorithm: '3des',
    ...(label === undefined ? {} : { friendlyName: label }),
  });
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
}

// writeClientBundle writes the Docker/containerd certs.d files plus a PKCS#12 for browsers into dir, made (0700) if it
// is missing; it must be a folder of this user's that no one else can write to (checkBundleFolder).
export function writeClientBundle(dir: string, cert: CertKeyPair, caPem: string, p12Password: string): ClientBundle {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkBundleFolder(dir);
  const entries: Array<[string, string | Buffer, number]> = [
    ['ca.crt', caPem, 0o644],
    ['client.cert', cert.certPem, 0o644],
    ['client.key', cert.keyPem, 0o600],
    ['client.p12', toPkcs12(cert, caPem, p12Password), 0o600],
  ];
  const files: string[] = [];
  for (const [name, content, mode] of entries) {
    const file = path.join(dir, name);
    writeWithMode(file, content, mode);
    files.push(file);
  }
  return { dir, files };
}

// checkBundleFolder refuses a dir that is not a folder of this user's or that others can write to: there, another
// user could have put a link to a file to be overwritten, or a file of theirs to read the private key from (a folder
// under /tmp made before the bundle was written, say). A dir that does not exist yet passes.
export function checkBundleFolder(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const uid = process.getuid?.();
  if (!st.isDirectory()) throw new Error(`${path.resolve(dir)} is not a folder (a link to one is refused too)`);
  if ((uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
    throw new Error(`${path.resolve(dir)} must be a folder of your own that no one else can write to; choose a new folder, or one made with mktemp -d`);
  }
}

// writeWithMode writes a new file with mode in place of whatever was there: a link is removed, never followed, and a
// file someone else created is replaced, not written into.
export function writeWithMode(file: string, content: string | Buffer, mode: number): void {
  fs.rmSync(file, { force: true });
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
  try {
    fs.writeFileSync(fd, content);
    fs.fchmodSync(fd, mode);
  } finally {
    fs.closeSync(fd);
  }
}

interface ForgeKeys {
  privateKey: forge.pki.rsa.PrivateKey;
  publicKey: forge.pki.rsa.PublicKey;
  keyPem: string;
}

interface Signer {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
  keyIdentifier: string;
}

function generateRsaKey(): ForgeKeys {
  // node:crypto generates RSA keys natively in milliseconds; forge's pure-JS generator takes seconds.
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return {
    privateKey: forge.pki.privateKeyFromPem(privateKey),
    publicKey: forge.pki.publicKeyFromPem(publicKey),
    keyPem: privateKey,
  };
}

function loadCa(ca: CertKeyPair): Signer {
  const x509 = new crypto.X509Certificate(ca.certPem);
  if (!x509.ca) throw new Error('the CA certificate is not a certificate authority (basicConstraints CA:FALSE)');
  if (!x509.checkPrivateKey(crypto.createPrivateKey(ca.keyPem))) {
    throw new Error('the CA key does not match the CA certificate');
  }
  const cert = forge.pki.certificateFromPem(ca.certPem);
  const key = forge.pki.privateKeyFromPem(ca.keyPem);
  return { cert, key, keyIdentifier: subjectKeyIdentifierOf(cert) };
}

function subjectKeyIdentifierOf(cert: forge.pki.Certificate): string {
  const ext: unknown = cert.getExtension('subjectKeyIdentifier');
  if (typeof ext === 'object' && ext !== null && 'subjectKeyIdentifier' in ext) {
    const hex = ext.subjectKeyIdentifier;
    if (typeof hex === 'string' && hex !== '') return forge.util.hexToBytes(hex);
  }
  return cert.generateSubjectKeyIdentifier().getBytes();
}

function commonNameOf(cert: forge.pki.Certificate): string | undefined {
  const field: unknown = cert.subject.getField('CN');
  if (typeof field === 'object' && field !== null && 'value' in field && typeof field.value === 'string') {
    return field.value;
  }
  return undefined;
}

// UTF8String, because forge's default PrintableString cannot hold "@" or "_" and Go's parser rejects such names.
const UTF8_TAG: number = forge.asn1.Type.UTF8;

function dnField(name: string, value: string): forge.pki.CertificateField {
  return { name, value, valueTagClass: UTF8_TAG };
}

function randomSerialHex(): string {
  // 16 random bytes with the top bit clear (a positive INTEGER) and a non-zero first byte (minimal DER).
  for (;;) {
    const bytes = crypto.randomBytes(16);
    bytes[0] &= 0x7f;
    if (bytes[0] !== 0) return bytes.toString('hex');
  }
}

function setValidity(cert: forge.pki.Certificate, notBefore: Date, notAfter: Date): void {
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
}

function validityFromDays(days: number): [Date, Date] {
  const now = Date.now();
  return [new Date(now - BACKDATE_MS), new Date(now + days * DAY_MS)];
}

function checkDays(days: number): void {
  if (!Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
    throw new Error(`days must be a whole number from 1 to ${MAX_DAYS}, got ${String(days)}`);
  }
}

function checkClientName(name: string): void {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw new Error(
      `client name must be 1 to 64 characters of letters, digits, ".", "_", "@" or "-", starting with a letter or digit, got "${String(name)}"`,
    );
  }
}
