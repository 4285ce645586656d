// Manifest media types and the parsing of a manifest's references, over the exact bytes received.
import { RegistryError } from '../errors.js';
import type { ManifestRef } from '../../storage/content.js';
import { isSha256Digest } from './names.js';

// Media types airlock serves as manifests.
export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  schema1: 'application/vnd.docker.distribution.manifest.v1+json',
  schema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

// MANIFEST_TYPES are the manifest media types airlock accepts from upstreams, in the order it asks for them.
export const MANIFEST_TYPES: readonly string[] = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest];

// MANIFEST_ACCEPT is the Accept header airlock sends when it needs any manifest.
export const MANIFEST_ACCEPT = MANIFEST_TYPES.join(', ');

// MAX_MANIFEST_BYTES bounds a manifest, as containerd does (4 MiB and a little).
export const MAX_MANIFEST_BYTES = 4 * 1048 * 1048;

// MEDIA_TYPE_RE is RFC 6838's type/subtype grammar: a descriptor's media type is kept, and later sent as a blob's
// Content-Type, only when it is one.
const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

// ParsedManifest is what airlock needs to know of a manifest.
export interface ParsedManifest {
  mediaType: string;
  isIndex: boolean;
  refs: ManifestRef[];
  subject: string | null;
  artifactType: string | null;
  annotations: Record<string, string> | null;
}

interface Descriptor {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
  platform?: unknown;
  artifactType?: unknown;
}

// parseManifest reads a manifest's media type and references; contentType is what the upstream said, used when the body has none.
export function parseManifest(bytes: Buffer, contentType: string | null): ParsedManifest {
  let doc: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(bytes.toString('utf8'));
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    doc = parsed as Record<string, unknown>;
  } catch {
    throw new RegistryError('MANIFEST_INVALID', 'manifest is not a JSON object');
  }
  const header = contentType ? contentType.split(';')[0].trim() : null;
  const bodyType = typeof doc.mediaType === 'string' ? doc.mediaType : null;
  if (doc.schemaVersion === 1 || header === MEDIA.schema1 || header === MEDIA.schema1Signed || bodyType === MEDIA.schema1 || bodyType === MEDIA.schema1Signed) {
    throw new RegistryError('MANIFEST_INVALID', 'Docker schema 1 manifests are deprecated and refused; the image must be re-pushed with a current client');
  }
  if (doc.schemaVersion !== 2) throw new RegistryError('MANIFEST_INVALID', 'manifest schemaVersion must be 2');
  let mediaType = bodyType ?? (header && MANIFEST_TYPES.includes(header) ? header : null);
  if (!mediaType) mediaType = Array.isArray(doc.manifests) ? MEDIA.ociIndex : MEDIA.ociManifest;
  if (!MANIFEST_TYPES.includes(mediaType)) throw new RegistryError('MANIFEST_INVALID', `unsupported manifest media type "${mediaType.slice(0, 100)}"`);
  const isIndex = isIndexType(mediaType);
  const refs: ManifestRef[] = [];
  const add = (d: unknown, kind: 'blob' | 'manifest'): void => {
    const desc = d as Descriptor;
    if (!desc || typeof desc !== 'object' || typeof desc.digest !== 'string' || !isSha256Digest(desc.digest)) {
      throw new RegistryError('MANIFEST_INVALID', 'manifest has a descriptor without a valid sha256 digest');
    }
    refs.push({
      child: desc.digest,
      kind,
      mediaType: typeof desc.mediaType === 'string' && MEDIA_TYPE_RE.test(desc.mediaType) ? desc.mediaType : null,
      size: typeof desc.size === 'number' && Number.isSafeInteger(desc.size) ? desc.size : null,
    });
  };
  if (isIndex) {
    if (!Array.isArray(doc.manifests)) throw new RegistryError('MANIFEST_INVALID', 'index has no manifests list');
    for (const m of doc.manifests) add(m, 'manifest');
  } else {
    if (!doc.config) throw new RegistryError('MANIFEST_INVALID', 'image manifest has no config');
    add(doc.config, 'blob');
    if (doc.layers !== undefined) {
      if (!Array.isArray(doc.layers)) throw new RegistryError('MANIFEST_INVALID', 'image manifest layers must be a list');
      for (const l of doc.layers) add(l, 'blob');
    }
  }
  let subject: string | null = null;
  if (doc.subject !== undefined) {
    const s = doc.subject as Descriptor;
    if (s && typeof s.digest === 'string' && isSha256Digest(s.digest)) subject = s.digest;
  }
  let artifactType = typeof doc.artifactType === 'string' ? doc.artifactType : null;
  if (!artifactType && !isIndex) {
    const cfg = doc.config as Descriptor;
    if (typeof cfg.mediaType === 'string') artifactType = cfg.mediaType;
  }
  const annotations = doc.annotations && typeof doc.annotations === 'object' ? (doc.annotations as Record<string, string>) : null;
  return { mediaType, isIndex, refs, subject, artifactType, annotations };
}

// acceptsIndexes tells whether an Accept header names both index media types. Registries match them literally, as
// distribution does: to a client that does not name them (a bare */* included), a tag of a multi-platform image
// answers with one platform's manifest.
export function acceptsIndexes(accept: string): boolean {
  return acceptsType(accept, MEDIA.ociIndex) && acceptsType(accept, MEDIA.dockerList);
}

// acceptsType tells whether an Accept header names a media type, literally (as distribution matches them).
export function acceptsType(accept: string, type: string): boolean {
  return accept.split(',').some((part) => part.split(';')[0].trim().toLowerCase() === type);
}

// upstreamAccept is the Accept header a tag is resolved upstream with for a client's: the client's, without the schema 1
// types airlock refuses, and with both single-manifest types added when it names no type airlock serves (a bare */*).
// Asked so, distribution converts a schema 2 manifest to schema 1 (a digest it cannot serve by digest), and answers an
// OCI manifest with 404; a client that takes no index still gets one platform's manifest of a list.
export function upstreamAccept(accept: string): string {
  const parts = accept
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '' && !acceptsType(part, MEDIA.schema1) && !acceptsType(part, MEDIA.schema1Signed));
  if (!MANIFEST_TYPES.some((type) => acceptsType(accept, type))) parts.push(MEDIA.ociManifest, MEDIA.dockerManifest);
  return parts.join(', ');
}

// isIndexType tells whether a manifest media type is an index (OCI) or a manifest list (Docker).
export function isIndexType(mediaType: string): boolean {
  return mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList;
}

// defaultPlatform is the digest of an index's linux/amd64 manifest, which distribution serves for a Docker manifest
// list to a client that does not take lists; null when it lists none.
export function defaultPlatform(bytes: Buffer): string | null {
  const doc = JSON.parse(bytes.toString('utf8')) as { manifests?: { digest?: unknown; platform?: { os?: unknown; architecture?: unknown } }[] };
  const m = (doc.manifests ?? []).find((d) => d?.platform?.os === 'linux' && d.platform.architecture === 'amd64');
  return typeof m?.digest === 'string' && isSha256Digest(m.digest) ? m.digest : null;
}
