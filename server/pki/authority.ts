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

// CertAuthority holds the CA.
export class CertAuthority {
  private readonly ca: CertKeyPair;
  private readonly certs: CertStore;

  constructor(ca: CertKeyPair, certs: CertStore) {
    this.ca = ca;
    this.certs = certs;
  }

  // caPem is the CA certificate clients trust.
  get caPem(): string {
    return this.ca.certPem;
  }

  // issue makes a client certificate for name with role and records it.
  issue(name: string, role: Role, days: number, issuedBy: string | null): IssuedCert {
    const cert = issueClientCert(this.ca, name, role, days);
    const notAfter = new Date(new crypto.X509Certificate(cert.certPem).validTo).toISOString();
    this.certs.record({ serial: cert.serial, name, role, notAfter, issuedBy });
    return { ...cert, name, role, notAfter, caPem: this.ca.certPem };
  }

  // revoke records a certificate's revocation; the running server refuses it within a second.
  revoke(serialHex: string, reason: string): 'revoked' | 'already' {
    return this.certs.revoke(normalizeSerial(serialHex), reason);
  }
}
