import type tls from 'node:tls';
import { isRole, normalizeSerial, type Role } from './ca.js';

// Identity is who a verified client certificate says the caller is; role is null when its OU is not a known role.
// notAfter is when the certificate expires (milliseconds since the epoch): OpenSSL checks it at a full handshake only,
// so a keep-alive connection or a resumed TLS session would outlive it without a check of its own (whyRefused).
export interface Identity {
  cn: string;
  serial: string;
  role: Role | null;
  notAfter: number;
}

// identityFromPeer reads the caller's identity from socket.getPeerCertificate(); null when there is no usable certificate.
export function identityFromPeer(cert: tls.PeerCertificate | undefined): Identity | null {
  if (cert === undefined || cert === null || Object.keys(cert).length === 0) return null;
  const cn = singleValue(cert.subject?.CN);
  const serialHex = cert.serialNumber;
  if (cn === undefined || typeof serialHex !== 'string' || serialHex === '') return null;
  let serial: string;
  try {
    serial = normalizeSerial(serialHex);
  } catch {
    return null;
  }
  const notAfter = Date.parse(cert.valid_to);
  if (Number.isNaN(notAfter)) return null;
  const ou = singleValue(cert.subject?.OU);
  return { cn, serial, role: isRole(ou) ? ou : null, notAfter };
}

// whyRefused says why a verified identity may no longer be served: its certificate was revoked since the handshake, or
// it expired while the connection or its TLS session lived on. null when it may be.
export function whyRefused(id: Identity, revoked: { has(serial: string): boolean }, now = Date.now()): 'revoked' | 'expired' | null {
  if (revoked.has(id.serial)) return 'revoked';
  return now > id.notAfter ? 'expired' : null;
}

// Node reports a repeated subject attribute as an array; an identity must be unambiguous, so that counts as absent.
function singleValue(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
