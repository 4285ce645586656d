// `airlock sign`: sign a manifest digest in any registry with a cosign key and push the signature
// in cosign's legacy format (tag sha256-<hex>.sig), appending to signatures already there.
import type { KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { UserError, whyUnreadable } from '../errors.js';
import {
  buildPayload,
  buildSignatureArtifact,
  parseSignatureManifest,
  sha256Digest,
  signPayload,
  sigTag,
  verifyPayloadSignature,
} from './cosign.js';
import { loadSigningKey } from './key.js';
import { ANY_MANIFEST, RegistryClient, RegistryRequestError } from './push.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
const PAYLOAD_LIMIT = 1024 * 1024;
const MAX_SIGNATURES = 1000;

const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;

// SignReference is a parsed REGISTRY/REPO@sha256:HEX reference.
export interface SignReference {
  /** registry is host[:port] as written (Docker Hub as docker.io). */
  registry: string;
  /** repository is the path inside the registry (Docker Hub's official images under library/). */
  repository: string;
  digest: string;
  /** identity is the docker-reference cosign writes into the payload: registry/repository. */
  identity: string;
}

// SignOptions are the inputs of signCommand.
export interface SignOptions {
  /** keyPath is a cosign-format encrypted private key (PREFIX.key). */
  keyPath: string;
  /** password decrypts the key (empty allowed). */
  password: string;
  /** reference is REGISTRY/REPO@sha256:HEX. */
  reference: string;
  /** caPath is a PEM file of CAs to trust for the registry, besides the system roots. */
  caPath?: string;
  /** certDir is a Docker certs.d-style folder: *.crt CAs plus client.cert and client.key. */
  certDir?: string;
  /** annotations become the payload's "optional" map (cosign sign -a key=value). */
  annotations?: Record<string, string>;
  registryUsername?: string;
  registryPassword?: string;
  /** insecureHttp talks plain http to the registry. */
  insecureHttp?: boolean;
}

// SignResult says where the signature went.
export interface SignResult {
  /** signatureTag is sha256-<hex>.sig. */
  signatureTag: string;
  /** signatureReference is REGISTRY/REPO:sha256-<hex>.sig. */
  signatureReference: string;
  signatureDigest: string;
  payloadDigest: string;
  /** signatures counts the layers of the signature manifest after this run. */
  signatures: number;
  /** added is false when an equal signature by this key was already there and nothing was pushed. */
  added: boolean;
}

const EXAMPLE = 'registry.example.com/team/app@sha256:<64 hex digits>';

// parseSignReference splits REGISTRY/REPO[:TAG]@sha256:HEX; a tag alone, a missing registry host or a bad digest is a UserError.
export function parseSignReference(reference: string): SignReference {
  const show = JSON.stringify(reference);
  if (reference === '' || /\s/.test(reference)) {
    throw new UserError(`invalid reference ${show}: expected REGISTRY/REPO@sha256:<hex>, e.g. ${EXAMPLE}`);
  }
  const at = reference.indexOf('@');
  if (at < 0) {
    throw new UserError(`sign a digest, not a tag: ${show} has no @sha256:<hex>; use e.g. ${EXAMPLE}`);
  }
  const name = reference.slice(0, at);
  const digest = reference.slice(at + 1);
  if (!SHA256_DIGEST.test(digest)) {
    throw new UserError(`invalid digest in ${show}: expected sha256: followed by 64 lowercase hex digits`);
  }
  const slash = name.indexOf('/');
  const host = slash < 0 ? '' : name.slice(0, slash);
  if (slash < 0 || !(host.includes('.') || host.includes(':') || host === 'localhost')) {
    throw new UserError(`reference ${show} must start with a registry host (a name with a dot or port, or localhost), e.g. ${EXAMPLE}`);
  }
  if (!HOST.test(host)) {
    throw new UserError(`invalid registry host ${JSON.stringify(host)} in ${show}`);
  }
  let repoPath = name.slice(slash + 1);
  const lastSlash = repoPath.lastIndexOf('/');
  const colon = repoPath.indexOf(':', lastSlash + 1);
  if (colon >= 0) {
    // REPO:TAG@DIGEST: the digest decides what is signed, as in docker and cosign.
    const tag = repoPath.slice(colon + 1);
    if (!TAG.test(tag)) {
      throw new UserError(`invalid tag ${JSON.stringify(tag)} in ${show}`);
    }
    repoPath = repoPath.slice(0, colon);
  }
  if (repoPath === '' || !repoPath.split('/').every((c) => PATH_COMPONENT.test(c))) {
    throw new UserError(
      `invalid repository ${JSON.stringify(repoPath)} in ${show}: path components are lowercase letters and digits joined by '.', '_', '__' or '-'`,
    );
  }
  let registry = host;
  let identityHost = host;
  if (host === 'docker.io' || host === 'index.docker.io') {
    // cosign (go-containerregistry) names Docker Hub index.docker.io and puts official images under library/.
    registry = 'docker.io';
    identityHost = 'index.docker.io';
    if (!repoPath.includes('/')) {
      repoPath = `library/${repoPath}`;
    }
  }
  return { registry, repository: repoPath, digest, identity: `${identityHost}/${repoPath}` };
}

function oneLineMessage(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim();
}

function readTextFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read ${what} ${file}: ${whyUnreadable(err)}`);
  }
}

function readCaFile(file: string): string {
  const pem = readTextFile(file, 'CA file');
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new UserError(`CA file ${file} holds no PEM certificate`);
  }
  return pem;
}

function loadKey(keyPath: string, password: string): KeyObject {
  const pem = readTextFile(keyPath, 'signing key');
  try {
    return loadSigningKey(pem, password);
  } catch (err) {
    // key.ts messages never echo the password.
    const message = err instanceof Error ? err.message : String(err);
    throw new UserError(`${keyPath}: ${message.startsWith('signing key') ? message.replace(/^signing key:?\s*/, '') : message}`);
  }
}

// Reads a Docker certs.d folder: every *.crt is a CA, and client.cert + client.key are the client pair (required here).
function readCertDir(dir: string): { ca: string | undefined; cert: string; key: string } {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw new UserError(`cannot read cert dir ${dir}: ${whyUnreadable(err, 'directory')}`);
  }
  const hasCert = names.includes('client.cert');
  const hasKey = names.includes('client.key');
  if (!hasCert || !hasKey) {
    const missing = [hasCert ? null : 'client.cert', hasKey ? null : 'client.key'].filter((n) => n !== null).join(' and ');
    throw new UserError(`cert dir ${dir} has no client certificate pair (missing ${missing}); for a CA alone use --ca`);
  }
  const cas = names
    .filter((n) => n.endsWith('.crt'))
    .sort()
    .map((n) => readCaFile(path.join(dir, n)));
  return {
    ca: cas.length === 0 ? undefined : cas.join('\n'),
    cert: readTextFile(path.join(dir, 'client.cert'), 'client certificate'),
    key: readTextFile(path.join(dir, 'client.key'), 'client key'),
  };
}

interface ExistingEntry {
  payload: Buffer;
  signature: string;
  annotations: Record<string, string>;
}

// Reads the signatures already at the .sig tag, with their payloads, so a new one is appended as cosign does.
async function existingSignatures(client: RegistryClient, ref: SignReference, tag: string): Promise<ExistingEntry[]> {
  const current = await client.getManifest(ref.repository, tag, OCI_MANIFEST);
  if (current === null) {
    return [];
  }
  let layers: ReturnType<typeof parseSignatureManifest>;
  try {
    layers = parseSignatureManifest(current.bytes);
  } catch (err) {
    throw new UserError(
      `${ref.registry}/${ref.repository}:${tag} exists but is not a cosign signature manifest (${(err as Error).message}); refusing to replace it`,
    );
  }
  const entries: ExistingEntry[] = [];
  for (const layer of layers) {
    const payload = await client.getBlob(ref.repository, layer.payloadDigest, PAYLOAD_LIMIT);
    const annotations: Record<string, string> = {};
    for (const [k, v] of Object.entries(layer.annotations)) {
      if (k !== SIGNATURE_ANNOTATION) {
        Object.defineProperty(annotations, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
    }
    entries.push({ payload, signature: layer.signature, annotations });
  }
  return entries;
}

async function signWith(client: RegistryClient, ref: SignReference, key: KeyObject, annotations: Record<string, string> | null): Promise<SignResult> {
  const manifest = await client.getManifest(ref.repository, ref.digest, ANY_MANIFEST);
  const where = `${ref.registry}/${ref.repository}@${ref.digest}`;
  if (manifest === null) {
    throw new UserError(`manifest ${where} not found in registry ${ref.registry}`);
  }
  if (manifest.digest !== ref.digest) {
    throw new UserError(`registry ${ref.registry} served bytes for ${where} that hash to ${manifest.digest}; refusing to sign`);
  }
  const payload = buildPayload(ref.identity, ref.digest, annotations);
  const payloadDigest = sha256Digest(payload);
  const tag = sigTag(ref.digest);
  const signatureReference = `${ref.registry}/${ref.repository}:${tag}`;
  const existing = await existingSignatures(client, ref, tag);

  // Like cosign's dupe detector: the same payload already signed by this key needs no second layer.
  const already = existing.some((e) => e.payload.equals(payload) && verifyPayloadSignature(key, payload, e.signature));
  if (already) {
    const digest = await client.headManifest(ref.repository, tag);
    return {
      signatureTag: tag,
      signatureReference,
      signatureDigest: digest ?? '',
      payloadDigest,
      signatures: existing.length,
      added: false,
    };
  }

  if (existing.length >= MAX_SIGNATURES) {
    throw new UserError(`${signatureReference} already holds ${existing.length} signatures, the most cosign allows`);
  }
  const entries = [...existing, { payload, signature: signPayload(key, payload), annotations: {} }];
  const artifact = buildSignatureArtifact(entries);
  const ordered = [...artifact.blobs.filter((b) => b.mediaType === SIMPLESIGNING), ...artifact.blobs.filter((b) => b.mediaType !== SIMPLESIGNING)];
  for (const blob of ordered) {
    await client.pushBlob(ref.repository, blob.digest, blob.bytes);
  }
  const signatureDigest = await client.putManifest(ref.repository, tag, artifact.manifest, OCI_MANIFEST);
  return { signatureTag: tag, signatureReference, signatureDigest, payloadDigest, signatures: entries.length, added: true };
}

// signCommand signs the manifest at opts.reference and pushes the signature to its sha256-<hex>.sig tag.
export async function signCommand(opts: SignOptions): Promise<SignResult> {
  const ref = parseSignReference(opts.reference);
  const key = loadKey(opts.keyPath, opts.password);
  const cas: string[] = [];
  if (opts.caPath !== undefined) {
    cas.push(readCaFile(opts.caPath));
  }
  let clientCert: { cert: string; key: string } | undefined;
  if (opts.certDir !== undefined) {
    const dir = readCertDir(opts.certDir);
    if (dir.ca !== undefined) {
      cas.push(dir.ca);
    }
    clientCert = { cert: dir.cert, key: dir.key };
  }
  if (opts.registryPassword !== undefined && opts.registryUsername === undefined) {
    throw new UserError('a registry password needs a registry username');
  }
  const ca = cas.length === 0 ? undefined : cas.join('\n');
  try {
    // Fails now, with a clear line, on unreadable PEM or a client certificate that does not match its key.
    tls.createSecureContext({ ca, cert: clientCert?.cert, key: clientCert?.key });
  } catch (err) {
    const what = opts.certDir !== undefined ? `cert dir ${opts.certDir}` : `CA file ${opts.caPath ?? ''}`;
    throw new UserError(`${what}: unusable TLS material (${oneLineMessage(err)})`);
  }
  const client = new RegistryClient({
    registry: ref.registry,
    ca,
    clientCert,
    username: opts.registryUsername,
    password: opts.registryPassword,
    insecureHttp: opts.insecureHttp,
  });
  try {
    return await signWith(client, ref, key, opts.annotations ?? null);
  } catch (err) {
    if (err instanceof RegistryRequestError) {
      throw new UserError(err.message);
    }
    throw err;
  } finally {
    await client.close();
  }
}
