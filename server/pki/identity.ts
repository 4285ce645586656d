import type tls from 'node:tls';
import { isRole, normalizeSerial, type Role } from './ca.js';

// Identity is who a verified client certificate says the caller is; role is null when its OU is not a known role.
export interface Identity {
  cn: string;
  serial: string;
  role: Role | null;
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
  const ou = singleValue(cert.subject?.OU);
  return { cn, serial, role: isRole(ou) ? ou : null };
}

// Node reports a repeated subject attribute as an array; an identity must be unambiguous, so that counts as absent.
function singleValue(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
