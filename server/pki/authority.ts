// CertAuthority issues and revokes client certificates and keeps their records, for the CLI and the admin API alike.
import crypto from 'node:crypto';
import type { CertStore } from '../../storage/certs.js';
import { type CertKeyPair, type IssuedClientCert, issueClientCert, normalizeSerial, type Role } from './ca.js';

// IssuedCert is a new client certificate with its record's fields.
export interface IssuedCert extends IssuedClientCert {
  name: string;
  role: Role;
  notAfter: string;
  caPem: string;
}

// CaUnavailableError says this CA cannot issue here: its key is kept elsewhere, or is not the certificate's.
export class CaUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CaUnavailableError';
  }
}

// CertAuthority holds the CA.
export class CertAuthority {
  private readonly ca: CertKeyPair;
  private readonly certs: CertStore;
  private readonly trustPem: string;

  // trustPem is what clients are given to trust the server with (clientTrust): the CA alone unless more are named.
  constructor(ca: CertKeyPair, certs: CertStore, trustPem = ca.certPem) {
    this.ca = ca;
    this.certs = certs;
    this.trustPem = trustPem;
  }

  // caPem is the CA certificates clients trust, PEM: each issued bundle's ca.crt.
  get caPem(): string {
    return this.trustPem;
  }

  // issue makes a client certificate for name with role and records it.
  issue(name: string, role: Role, days: number, issuedBy: string | null): IssuedCert {
    this.checkKey();
    const cert = issueClientCert(this.ca, name, role, days);
    const notAfter = new Date(new crypto.X509Certificate(cert.certPem).validTo).toISOString();
    this.certs.record({ serial: cert.serial, name, role, notAfter, issuedBy });
    return { ...cert, name, role, notAfter, caPem: this.trustPem };
  }

  // checkKey refuses to issue without the CA's key, or with a key that is not the CA certificate's: clients would get
  // certificates no server accepts.
  private checkKey(): void {
    if (this.ca.keyPem === '') throw new CaUnavailableError('this server has no CA key (pki/ca.key is kept elsewhere); issue certificates with airlock cert issue where the CA key lives');
    let matches = false;
    try {
      const spki = (k: crypto.KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
      matches = spki(new crypto.X509Certificate(this.ca.certPem).publicKey).equals(spki(crypto.createPublicKey(crypto.createPrivateKey(this.ca.keyPem))));
    } catch {
      // An unreadable key matches nothing.
    }
    if (!matches) throw new CaUnavailableError("this server's CA key (pki/ca.key) is not the key of its CA certificate (tls.clientCa's first file); certificates it signed would not be accepted");
  }

  // revoke records a certificate's revocation; the running server refuses it within a second.
  revoke(serialHex: string, reason: string): 'revoked' | 'already' {
    return this.certs.revoke(normalizeSerial(serialHex), reason);
  }
}
