// Signer re-signs what airlock admits with the mirror key and stores cosign's signature artifact in airlock's own store.
import type { KeyObject } from 'node:crypto';
import crypto from 'node:crypto';
import type { ContentStore } from '../../storage/content.js';
import type { PolicyStore } from '../../storage/policy.js';
import type { Decision } from '../policy/decide.js';
import { parseManifest } from '../registry/manifest.js';
import { buildPayload, buildSignatureArtifact, signPayload } from './cosign.js';
import { keyFingerprint } from './key.js';

// SIGNATURE_ARTIFACT_TYPE is how airlock's signatures are listed by the referrers API.
export const SIGNATURE_ARTIFACT_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';

// Signer holds the mirror key.
export class Signer {
  private readonly content: ContentStore;
  private readonly policy: PolicyStore;
  readonly key: KeyObject;
  readonly keyId: string;
  readonly publicPem: string;

  constructor(content: ContentStore, policy: PolicyStore, key: KeyObject) {
    this.content = content;
    this.policy = policy;
    this.key = key;
    this.keyId = keyFingerprint(key);
    this.publicPem = crypto.createPublicKey(key).export({ format: 'pem', type: 'spki' }).toString();
  }

  // sign signs digest as repository's, recording how it was admitted, and returns the signature manifest's digest.
  sign(repository: string, digest: string, decision: Pick<Decision, 'reason' | 'approvedBy' | 'publisherKey'>): string {
    const optional: Record<string, string> = { 'airlock.admission': decision.reason, 'airlock.time': new Date().toISOString() };
    if (decision.approvedBy) optional['airlock.approvedBy'] = decision.approvedBy;
    if (decision.publisherKey) optional['airlock.publisherKey'] = decision.publisherKey;
    const payload = buildPayload(repository, digest, optional);
    const artifact = buildSignatureArtifact([{ payload, signature: signPayload(this.key, payload) }]);
    for (const b of artifact.blobs) this.content.putLocalBlob(b.digest, b.mediaType, b.bytes);
    const parsed = parseManifest(artifact.manifest, null);
    this.content.saveManifest(
      repository,
      { digest: artifact.digest, mediaType: parsed.mediaType, size: artifact.manifest.length, bytes: artifact.manifest },
      parsed.refs,
      digest,
      SIGNATURE_ARTIFACT_TYPE,
      true,
    );
    this.policy.recordSignature(repository, digest, artifact.digest, this.keyId);
    return artifact.digest;
  }
}
