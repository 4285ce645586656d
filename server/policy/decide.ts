// The admission rule as a pure function of the facts about (repository, digest): SPEC §4 "Admission".

// Reason says why a digest was admitted or refused.
export type Reason = 'pin' | 'approval' | 'publisher' | 'index' | 'revoked' | 'denied' | 'unknown';

// Facts are what the edges found out about (repository, digest); undefined means not looked up (yet).
export interface Facts {
  revoked: boolean;
  pin: { source: 'config' | 'api' | 'approval'; createdBy: string | null } | null;
  requestStatus: 'pending' | 'approved' | 'denied' | null;
  admittedIndex?: boolean;
  publisher?: { name: string; fingerprint: string } | null;
}

// Decision is the verdict with what the signature payload and audit log record about it.
export interface Decision {
  admitted: boolean;
  reason: Reason;
  approvedBy: string | null;
  publisherKey: string | null;
}

// decide applies the rule in order: a revocation refuses; an explicit pin or approval admits; an admin's denial
// refuses; then an admitted parent index or a trusted publisher's signature admits; anything else is unknown.
// It returns null when a fact it needs next has not been looked up, so the caller fetches only what matters.
export function decide(f: Facts): Decision | null {
  const refuse = (reason: Reason): Decision => ({ admitted: false, reason, approvedBy: null, publisherKey: null });
  if (f.revoked) return refuse('revoked');
  if (f.pin) {
    const approval = f.pin.source === 'approval';
    return { admitted: true, reason: approval ? 'approval' : 'pin', approvedBy: f.pin.createdBy, publisherKey: null };
  }
  if (f.requestStatus === 'denied') return refuse('denied');
  if (f.admittedIndex === undefined) return null;
  if (f.admittedIndex) return { admitted: true, reason: 'index', approvedBy: null, publisherKey: null };
  if (f.publisher === undefined) return null;
  if (f.publisher) return { admitted: true, reason: 'publisher', approvedBy: null, publisherKey: f.publisher.fingerprint };
  return refuse('unknown');
}
