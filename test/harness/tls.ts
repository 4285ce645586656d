import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { requireTool, runOk } from './proc.js';

const OPENSSL = '/usr/bin/openssl';
const DAYS = '30';

/** TestCa is a throwaway certificate authority made with the openssl CLI. */
export interface TestCa {
  dir: string;
  certPath: string;
  keyPath: string;
}

/** CertPair is a certificate and its key, issued by a TestCa. */
export interface CertPair {
  certPath: string;
  keyPath: string;
  caPath: string;
}

/** CertDirOptions says what writeCertDir puts into a containers/image certs.d folder. */
export interface CertDirOptions {
  caPaths: string[];
  client?: CertPair;
}

function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return `0x${bytes.toString('hex')}`;
}

function ecKeyArgs(keyPath: string): string[] {
  return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyPath];
}

/** makeTestCa creates an EC P-256 CA (`ca.crt`, `ca.key`) in dir. */
export async function makeTestCa(dir: string, cn = 'airlock-test-ca'): Promise<TestCa> {
  requireTool(OPENSSL);
  fs.mkdirSync(dir, { recursive: true });
  const certPath = path.join(dir, 'ca.crt');
  const keyPath = path.join(dir, 'ca.key');
  await runOk(OPENSSL, [
    'req', '-x509', ...ecKeyArgs(keyPath), '-out', certPath, '-days', DAYS, '-subj', `/CN=${cn}`,
    '-set_serial', serial(),
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { dir, certPath, keyPath };
}

interface IssueOptions {
  name: string;
  cn: string;
  extensions: string[];
  rsa?: boolean;
}

async function issue(ca: TestCa, dir: string, opts: IssueOptions): Promise<CertPair> {
  fs.mkdirSync(dir, { recursive: true });
  const keyPath = path.join(dir, `${opts.name}.key`);
  const csrPath = path.join(dir, `${opts.name}.csr`);
  const certPath = path.join(dir, `${opts.name}.crt`);
  const extPath = path.join(dir, `${opts.name}.ext`);
  const keyArgs = opts.rsa === true
    ? ['-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath]
    : ecKeyArgs(keyPath);
  await runOk(OPENSSL, ['req', '-new', ...keyArgs, '-out', csrPath, '-subj', `/CN=${opts.cn}`]);
  fs.writeFileSync(extPath, `${opts.extensions.join('\n')}\n`);
  await runOk(OPENSSL, [
    'x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-set_serial', serial(),
    '-days', DAYS, '-out', certPath, '-extfile', extPath,
  ]);
  fs.rmSync(csrPath);
  fs.rmSync(extPath);
  return { certPath, keyPath, caPath: ca.certPath };
}

/** makeServerCert issues a TLS server certificate for hosts (IPs and DNS names; default 127.0.0.1 and localhost). */
export function makeServerCert(
  ca: TestCa,
  dir: string,
  hosts: readonly string[] = ['127.0.0.1', 'localhost'],
  name = 'server',
): Promise<CertPair> {
  const san = hosts.map((h) => (net.isIP(h) !== 0 ? `IP:${h}` : `DNS:${h}`)).join(',');
  return issue(ca, dir, {
    name,
    cn: hosts[0] ?? 'localhost',
    extensions: [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${san}`,
    ],
  });
}

/** makeClientCert issues a TLS client certificate with the given common name. */
export function makeClientCert(ca: TestCa, dir: string, cn: string, name = 'client'): Promise<CertPair> {
  return issue(ca, dir, {
    name,
    cn,
    extensions: [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=clientAuth',
    ],
  });
}

/** makeSigningCert issues an RSA 2048 certificate without extended key usage, for signing JWTs. */
export function makeSigningCert(ca: TestCa, dir: string, cn: string, name = 'signing'): Promise<CertPair> {
  return issue(ca, dir, {
    name,
    cn,
    rsa: true,
    extensions: ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature'],
  });
}

/** writeCertDir fills a containers/image cert dir (`ca.crt`, optional `client.cert`/`client.key`) for --*-cert-dir. */
export function writeCertDir(dir: string, opts: CertDirOptions): string {
  fs.mkdirSync(dir, { recursive: true });
  const bundle = opts.caPaths.map((p) => fs.readFileSync(p, 'utf8').trim()).join('\n');
  fs.writeFileSync(path.join(dir, 'ca.crt'), `${bundle}\n`);
  if (opts.client !== undefined) {
    fs.copyFileSync(opts.client.certPath, path.join(dir, 'client.cert'));
    fs.copyFileSync(opts.client.keyPath, path.join(dir, 'client.key'));
  }
  return dir;
}
