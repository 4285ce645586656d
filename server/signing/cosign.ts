import crypto from 'node:crypto';

// cosign's "simple signing" format (sigstore/cosign specs/SIGNATURE_SPEC.md): a payload naming
// repository and manifest digest, signed, and stored as a layer of an OCI manifest tagged
// sha256-<hex>.sig next to the image.

const SIGNATURE_TYPE = 'cosign container image signature';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
const MAX_LAYERS = 1000;

const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

// sha256Digest is the OCI digest "sha256:<hex>" of bytes.
export function sha256Digest(bytes: Buffer): string {
  return `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
}

function isValidDigest(digest: string): boolean {
  if (!DIGEST.test(digest)) {
    return false;
  }
  const [alg, hex] = digest.split(':', 2);
  if (alg === 'sha256') {
    return /^[a-f0-9]{64}$/.test(hex);
  }
  if (alg === 'sha512') {
    return /^[a-f0-9]{128}$/.test(hex);
  }
  return true;
}

function assertDigest(digest: string, what: string): void {
  if (!isValidDigest(digest)) {
    throw new Error(`${what} is not a valid digest: ${JSON.stringify(digest)}`);
  }
}

// sigTag is the tag cosign stores the signatures of digest under: "sha256-<hex>.sig".
export function sigTag(digest: string): string {
  assertDigest(digest, 'signed digest');
  return `${digest.replace(':', '-')}.sig`;
}

// Go's encoding/json escapes these in strings (HTML safety); matching it keeps payloads byte-identical to cosign's.
function goJsonString(value: string): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// Go marshals map keys in byte order of their UTF-8 encoding.
function goSortedKeys(record: Record<string, string>): string[] {
  return Object.keys(record).sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

function goJsonStringMap(record: Record<string, string>): string {
  return `{${goSortedKeys(record)
    .map((k) => `${goJsonString(k)}:${goJsonString(record[k])}`)
    .join(',')}}`;
}

// buildPayload is the exact payload bytes cosign signs for repository@digest, with optional annotations or null.
export function buildPayload(repository: string, digest: string, optional: Record<string, string> | null): Buffer {
  if (repository === '' || repository.includes('@')) {
    throw new Error(`payload repository is not a repository name: ${JSON.stringify(repository)}`);
  }
  assertDigest(digest, 'payload digest');
  const text =
    `{"critical":{"identity":{"docker-reference":${goJsonString(repository)}},` +
    `"image":{"docker-manifest-digest":${goJsonString(digest)}},` +
    `"type":${goJsonString(SIGNATURE_TYPE)}},` +
    `"optional":${optional === null ? 'null' : goJsonStringMap(optional)}}`;
  return Buffer.from(text, 'utf8');
}

type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

// Parses JSON like JSON.parse but rejects duplicate object keys, which JSON.parse would silently resolve.
function parseJsonStrict(text: string): JsonValue {
  let pos = 0;
  const ws = /[ \t\n\r]*/y;
  const num = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const skip = (): void => {
    ws.lastIndex = pos;
    ws.exec(text);
    pos = ws.lastIndex;
  };
  const fail = (what: string): never => {
    throw new Error(`invalid JSON at offset ${pos}: ${what}`);
  };
  // Scans a string literal by hand (a regex would backtrack badly on long input) and lets JSON.parse decode it.
  const stringToken = (): string | null => {
    if (text[pos] !== '"') {
      return null;
    }
    for (let i = pos + 1; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code < 0x20) {
        return null;
      }
      if (code === 0x5c) {
        i++;
      } else if (code === 0x22) {
        const raw = text.slice(pos, i + 1);
        pos = i + 1;
        return raw;
      }
    }
    return null;
  };
  const token = (re: RegExp): string | null => {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (m === null) {
      return null;
    }
    pos = re.lastIndex;
    return m[0];
  };
  const value = (depth: number): JsonValue => {
    if (depth > 64) {
      fail('nested too deeply');
    }
    skip();
    const c = text[pos];
    if (c === '{') {
      pos++;
      const obj: { [key: string]: JsonValue } = {};
      const seen = new Set<string>();
      skip();
      if (text[pos] === '}') {
        pos++;
        return obj;
      }
      for (;;) {
        skip();
        const rawKey = stringToken() ?? fail('expected a string key');
        const key = JSON.parse(rawKey) as string;
        if (seen.has(key)) {
          fail(`duplicate key ${rawKey.slice(0, 100)}`);
        }
        seen.add(key);
        skip();
        if (text[pos] !== ':') {
          fail('expected ":"');
        }
        pos++;
        Object.defineProperty(obj, key, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
        skip();
        if (text[pos] === ',') {
          pos++;
          continue;
        }
        if (text[pos] === '}') {
          pos++;
          return obj;
        }
        fail('expected "," or "}"');
      }
    }
    if (c === '[') {
      pos++;
      const arr: JsonValue[] = [];
      skip();
      if (text[pos] === ']') {
        pos++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        skip();
        if (text[pos] === ',') {
          pos++;
          continue;
        }
        if (text[pos] === ']') {
          pos++;
          return arr;
        }
        fail('expected "," or "]"');
      }
    }
    if (c === '"') {
      return JSON.parse(stringToken() ?? fail('bad string')) as string;
    }
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    const n = token(num);
    if (n !== null) {
      return Number(n);
    }
    return fail('unexpected character');
  };
  const result = value(0);
  skip();
  if (pos !== text.length) {
    fail('trailing data');
  }
  return result;
}

function isObject(value: JsonValue | undefined): value is { [key: string]: JsonValue } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function exactObject(value: JsonValue | undefined, keys: string[], what: string): { [key: string]: JsonValue } {
  if (!isObject(value)) {
    throw new Error(`signature payload: ${what} must be a JSON object`);
  }
  const actual = Object.keys(value).sort();
  const wanted = [...keys].sort();
  if (actual.length !== wanted.length || actual.some((k, i) => k !== wanted[i])) {
    const got = actual.map((k) => JSON.stringify(k)).join(', ');
    throw new Error(`signature payload: ${what} must have exactly the fields ${wanted.join(', ')}; got ${got.slice(0, 200)}`);
  }
  return value;
}

function stringField(value: JsonValue | undefined, what: string): string {
  if (typeof value !== 'string') {
    throw new Error(`signature payload: ${what} must be a string`);
  }
  return value;
}

function decodeUtf8(bytes: Buffer, what: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${what} is not valid UTF-8`);
  }
}

// parsePayload reads a simple-signing payload as strictly as containers/image does and returns what it claims.
export function parsePayload(bytes: Buffer): { reference: string; digest: string; optional: Record<string, unknown> | null } {
  let doc: JsonValue;
  try {
    doc = parseJsonStrict(decodeUtf8(bytes, 'signature payload'));
  } catch (err) {
    throw new Error(`signature payload: ${err instanceof Error ? err.message : String(err)}`);
  }
  const top = exactObject(doc, ['critical', 'optional'], 'the payload');
  const critical = exactObject(top.critical, ['type', 'image', 'identity'], 'critical');
  if (stringField(critical.type, 'critical.type') !== SIGNATURE_TYPE) {
    throw new Error(`signature payload: critical.type must be "${SIGNATURE_TYPE}"`);
  }
  const image = exactObject(critical.image, ['docker-manifest-digest'], 'critical.image');
  const identity = exactObject(critical.identity, ['docker-reference'], 'critical.identity');
  const digest = stringField(image['docker-manifest-digest'], 'critical.image.docker-manifest-digest');
  if (!isValidDigest(digest)) {
    throw new Error('signature payload: critical.image.docker-manifest-digest is not a valid digest');
  }
  const reference = stringField(identity['docker-reference'], 'critical.identity.docker-reference');
  if (reference === '') {
    throw new Error('signature payload: critical.identity.docker-reference is empty');
  }
  const optional = top.optional;
  if (optional !== null && !isObject(optional)) {
    throw new Error('signature payload: optional must be an object or null');
  }
  if (isObject(optional)) {
    if (optional.creator !== undefined && typeof optional.creator !== 'string') {
      throw new Error('signature payload: optional.creator must be a string');
    }
    if (optional.timestamp !== undefined && typeof optional.timestamp !== 'number') {
      throw new Error('signature payload: optional.timestamp must be a number');
    }
  }
  return { reference, digest, optional };
}

function algorithmOf(key: crypto.KeyObject): 'ec' | 'ed25519' | 'rsa' {
  const t = key.asymmetricKeyType;
  if (t === 'ec' || t === 'ed25519' || t === 'rsa') {
    return t;
  }
  throw new Error(`unsupported signing key type ${t ?? 'unknown'} (want EC, Ed25519 or RSA)`);
}

// signPayload signs the exact payload bytes as cosign does and returns standard base64 of the signature.
export function signPayload(key: crypto.KeyObject, payload: Buffer): string {
  if (key.type !== 'private') {
    throw new Error('signPayload needs a private key');
  }
  let signature: Buffer;
  switch (algorithmOf(key)) {
    case 'ec':
      signature = crypto.sign('sha256', payload, { key, dsaEncoding: 'der' });
      break;
    case 'ed25519':
      signature = crypto.sign(null, payload, key);
      break;
    case 'rsa':
      signature = crypto.sign('sha256', payload, { key, padding: crypto.constants.RSA_PKCS1_PADDING });
      break;
  }
  return signature.toString('base64');
}

// verifyPayloadSignature checks a base64 signature over payload with publicKey; any malformed input yields false.
export function verifyPayloadSignature(publicKey: crypto.KeyObject, payload: Buffer, signatureB64: string): boolean {
  if (signatureB64 === '' || !BASE64.test(signatureB64)) {
    return false;
  }
  const signature = Buffer.from(signatureB64, 'base64');
  try {
    const key = publicKey.type === 'private' ? crypto.createPublicKey(publicKey) : publicKey;
    switch (algorithmOf(key)) {
      case 'ec':
        return crypto.verify('sha256', payload, { key, dsaEncoding: 'der' }, signature);
      case 'ed25519':
        return crypto.verify(null, payload, key, signature);
      case 'rsa':
        return crypto.verify('sha256', payload, { key, padding: crypto.constants.RSA_PKCS1_PADDING }, signature);
    }
  } catch {
    return false;
  }
}

// Descriptor fields in go-containerregistry's order, so manifests match what cosign pushes.
function descriptorJson(mediaType: string, bytes: Buffer, annotations?: Record<string, string>): string {
  const parts = [`"mediaType":${goJsonString(mediaType)}`, `"size":${bytes.length}`, `"digest":"${sha256Digest(bytes)}"`];
  if (annotations !== undefined) {
    parts.push(`"annotations":${goJsonStringMap(annotations)}`);
  }
  return `{${parts.join(',')}}`;
}

// buildSignatureArtifact assembles cosign's signature manifest (one simple-signing layer per entry) and the blobs it references.
export function buildSignatureArtifact(entries: { payload: Buffer; signature: string; annotations?: Record<string, string> }[]): {
  manifest: Buffer;
  config: Buffer;
  blobs: { digest: string; bytes: Buffer; mediaType: string }[];
  digest: string;
} {
  if (entries.length === 0 || entries.length > MAX_LAYERS) {
    throw new Error(`a signature manifest needs between 1 and ${MAX_LAYERS} signatures, got ${entries.length}`);
  }
  for (const e of entries) {
    if (!BASE64.test(e.signature) || e.signature === '') {
      throw new Error('signature must be non-empty standard base64');
    }
    if (e.annotations !== undefined && SIGNATURE_ANNOTATION in e.annotations) {
      throw new Error(`extra annotations must not set ${SIGNATURE_ANNOTATION}`);
    }
  }
  const diffIds = entries.map((e) => `"${sha256Digest(e.payload)}"`).join(',');
  const history = entries.map(() => '{"created":"0001-01-01T00:00:00Z"}').join(',');
  // go-containerregistry's empty.Image config after mutate.Append: one history entry and one diff_id per layer.
  const config = Buffer.from(
    `{"architecture":"","created":"0001-01-01T00:00:00Z","history":[${history}],` +
      `"os":"","rootfs":{"type":"layers","diff_ids":[${diffIds}]},"config":{}}`,
    'utf8',
  );
  const layers = entries.map((e) =>
    descriptorJson(SIMPLESIGNING, e.payload, { ...e.annotations, [SIGNATURE_ANNOTATION]: e.signature }),
  );
  const manifest = Buffer.from(
    `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","config":${descriptorJson(OCI_CONFIG, config)},` +
      `"layers":[${layers.join(',')}]}`,
    'utf8',
  );
  const blobs: { digest: string; bytes: Buffer; mediaType: string }[] = [
    { digest: sha256Digest(config), bytes: config, mediaType: OCI_CONFIG },
  ];
  for (const e of entries) {
    const digest = sha256Digest(e.payload);
    if (!blobs.some((b) => b.digest === digest)) {
      blobs.push({ digest, bytes: e.payload, mediaType: SIMPLESIGNING });
    }
  }
  return { manifest, config, blobs, digest: sha256Digest(manifest) };
}

// parseSignatureManifest lists the signatures in a cosign signature manifest; it rejects anything that is not one.
export function parseSignatureManifest(
  bytes: Buffer,
): { payloadDigest: string; payloadSize: number; signature: string; annotations: Record<string, string> }[] {
  let doc: JsonValue;
  try {
    doc = parseJsonStrict(decodeUtf8(bytes, 'signature manifest'));
  } catch (err) {
    throw new Error(`signature manifest: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!isObject(doc) || doc.schemaVersion !== 2) {
    throw new Error('signature manifest: not a schemaVersion 2 manifest');
  }
  if (doc.mediaType !== undefined && doc.mediaType !== OCI_MANIFEST) {
    throw new Error(`signature manifest: media type must be ${OCI_MANIFEST}`);
  }
  const layers = doc.layers;
  if (!Array.isArray(layers) || layers.length === 0) {
    throw new Error('signature manifest: no layers');
  }
  if (layers.length > MAX_LAYERS) {
    throw new Error(`signature manifest: more than ${MAX_LAYERS} layers`);
  }
  return layers.map((layer, i) => {
    if (!isObject(layer)) {
      throw new Error(`signature manifest: layer ${i} is not an object`);
    }
    if (layer.mediaType !== SIMPLESIGNING) {
      throw new Error(`signature manifest: layer ${i} media type must be ${SIMPLESIGNING}`);
    }
    const { digest, size, annotations } = layer;
    if (typeof digest !== 'string' || !isValidDigest(digest)) {
      throw new Error(`signature manifest: layer ${i} has an invalid digest`);
    }
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new Error(`signature manifest: layer ${i} has an invalid size`);
    }
    if (!isObject(annotations)) {
      throw new Error(`signature manifest: layer ${i} has no annotations`);
    }
    const strings: Record<string, string> = {};
    for (const [k, v] of Object.entries(annotations)) {
      if (typeof v !== 'string') {
        throw new Error(`signature manifest: layer ${i} annotation ${k} is not a string`);
      }
      Object.defineProperty(strings, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    const signature = strings[SIGNATURE_ANNOTATION];
    if (signature === undefined || signature === '') {
      throw new Error(`signature manifest: layer ${i} has no ${SIGNATURE_ANNOTATION} annotation`);
    }
    return { payloadDigest: digest, payloadSize: size, signature, annotations: strings };
  });
}
