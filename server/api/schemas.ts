// JSON schemas of the admin API's bodies, parameters and answers: Fastify validates requests and serialises answers
// with them, and @fastify/swagger turns them into the OpenAPI document.

const str = { type: 'string' } as const;
const nstr = { type: ['string', 'null'] } as const;
const int = { type: 'integer' } as const;

// obj is an object schema whose listed properties are all required, with no others.
export function obj<P extends Record<string, object>>(properties: P, optional: (keyof P & string)[] = []) {
  return {
    type: 'object',
    properties,
    required: Object.keys(properties).filter((k) => !optional.includes(k)),
    additionalProperties: false,
  } as const;
}

// list is an answer holding one array under key.
export function list(key: string, item: object) {
  return obj({ [key]: { type: 'array', items: item } });
}

// DIGEST is a sha256 manifest digest.
export const DIGEST = { type: 'string', pattern: '^sha256:[a-f0-9]{64}$', description: 'a sha256 digest, sha256:<64 lowercase hex>' } as const;
// TAG follows the OCI tag grammar.
export const TAG = { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$', description: 'an OCI tag' } as const;
// REPOSITORY is a canonical UPSTREAM/PATH name; its grammar is checked by canonicalRepository.
export const REPOSITORY = { type: 'string', minLength: 3, maxLength: 512, description: 'canonical name UPSTREAM/PATH, e.g. docker.io/library/alpine' } as const;
// NOTE is free text an admin attaches to a change.
export const NOTE = { type: 'string', minLength: 1, maxLength: 1000 } as const;
// GLOB is a repository glob on canonical names, as the configuration accepts them.
export const GLOB = { type: 'string', pattern: '^[a-z0-9.:*_/-]*/[a-z0-9.:*_/-]*$', maxLength: 512, description: 'glob on canonical names, like ghcr.io/acme/*' } as const;
// PUBLISHER_NAME is a publisher's name.
export const PUBLISHER_NAME = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } as const;
// CLIENT_NAME is a client certificate's CN, as the CA accepts it.
export const CLIENT_NAME = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$' } as const;
// ROLE is a client certificate role.
export const ROLE = { type: 'string', enum: ['pull', 'audit', 'admin'] } as const;
// SERIAL is a certificate serial in hex (colons and 0x allowed).
export const SERIAL = { type: 'string', pattern: '^(0x)?[0-9A-Fa-f:]{1,128}$' } as const;

// errorBody is every error answer: {"error":{"code","message"}}, with field for a request that failed its schema.
export const errorBody = {
  type: 'object',
  description: 'an error; field names the part of the request that failed its schema',
  properties: { error: { type: 'object', properties: { code: str, message: str, field: str }, required: ['code', 'message'] } },
  required: ['error'],
} as const;

// errors are the error answers every route may give.
export const errors = { '4xx': errorBody, '5xx': errorBody } as const;

// approvalRequest is a refused (repository, digest) waiting for or decided by an admin.
export const approvalRequest = obj({
  id: int,
  repository: str,
  digest: str,
  tag: nstr,
  requestedBy: nstr,
  firstSeen: str,
  lastSeen: str,
  count: int,
  status: { type: 'string', enum: ['pending', 'approved', 'denied'] },
  decidedBy: nstr,
  decidedAt: nstr,
  note: nstr,
});

// pin admits a digest; with a tag it freezes the tag to it.
export const pin = obj({
  id: int,
  repository: str,
  digest: str,
  tag: nstr,
  note: nstr,
  source: { type: 'string', enum: ['config', 'api', 'approval'] },
  createdBy: nstr,
  createdAt: str,
});

// publisher is a trusted signer's key and the repositories it vouches for.
export const publisher = obj({
  name: str,
  publicKey: str,
  fingerprints: { type: 'array', items: str },
  repositories: { type: 'array', items: str },
  source: { type: 'string', enum: ['config', 'api'] },
  createdBy: nstr,
  createdAt: str,
});

// image is an admitted digest with how it was admitted, its signature and what it holds in the cache.
export const image = obj({
  repository: str,
  digest: str,
  tags: { type: 'array', items: str },
  admission: { type: 'string', description: 'how it was admitted: pin, approval, publisher or index' },
  approvedBy: nstr,
  publisherKey: nstr,
  admittedAt: str,
  signature: { type: ['string', 'null'], description: "digest of airlock's signature manifest (tag sha256-<hex>.sig)" },
  signedAt: nstr,
  signingKey: nstr,
  sizeBytes: { type: 'integer', description: 'bytes of every blob the image references' },
  cachedBytes: { type: 'integer', description: 'bytes of those blobs held in the cache now' },
  revoked: { type: 'boolean', description: 'always false: revoked images are not listed' },
});

// revocation stops a digest being served.
export const revocation = obj({
  repository: str,
  digest: str,
  reason: str,
  revokedBy: nstr,
  revokedAt: str,
  removedBlobs: { type: 'integer', description: 'cached blobs deleted because no other admitted image references them' },
  removedBytes: int,
});

// drift is a pinned tag whose upstream moved elsewhere.
export const drift = obj({ repository: str, tag: str, pinnedDigest: str, upstreamDigest: str, firstSeen: str, lastSeen: str });

// cert is an issued client certificate's record.
export const cert = obj({ serial: str, name: str, role: str, notAfter: str, issuedAt: str, issuedBy: nstr, revokedAt: nstr, revokeReason: nstr });

// issuedCert is a new client certificate with its private key and the CA certificates, in PEM.
export const issuedCert = obj({
  serial: str,
  name: str,
  role: str,
  notAfter: str,
  certificate: { type: 'string', description: 'PEM certificate (client.cert)' },
  privateKey: { type: 'string', description: 'PEM PKCS#8 private key (client.key); airlock keeps no copy' },
  ca: { type: 'string', description: 'PEM CA certificates (ca.crt): every tls.clientCa certificate, and the server certificate\'s issuer when tls.cert holds it' },
});

// clientConfig is the files a client of one kind needs to use this mirror.
export const clientConfig = obj({
  kind: { type: 'string', enum: ['docker', 'containerd', 'podman'] },
  address: str,
  files: { type: 'array', items: obj({ path: str, content: str }) },
  warnings: { type: 'array', items: str, description: 'what keeps such a client from pulling through this mirror at this address, if anything' },
});

// idParam is a numeric id in the path.
export const idParam = obj({ id: { type: 'integer', minimum: 1 } });
