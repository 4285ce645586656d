// Shared test helpers for the files that drive the real cosign binary, need scratch directories, or publish cosign
// signatures to a registry.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSignatureArtifact, sigTag } from '../../server/signing/cosign.js';
import { expectOk, type RegistryEndpoint, registryRequest } from './registry.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

// cosignBinary finds the cosign the project fetches into .cache, fetching it with the project's script if needed.
export function cosignBinary(): string {
  const bin = path.join(repoRoot, '.cache/cosign/usr/bin/cosign');
  if (fs.existsSync(bin)) {
    return bin;
  }
  const script = path.join(repoRoot, 'scripts/fetch-cosign.sh');
  const r = spawnSync('bash', [script, '.cache/cosign'], { cwd: repoRoot, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0 || !fs.existsSync(bin)) {
    throw new Error(`cosign is missing at ${bin} and bash scripts/fetch-cosign.sh .cache/cosign failed (status ${r.status}): ${r.stderr}`);
  }
  return bin;
}

// SyncResult is a finished command's exit status and output.
export interface SyncResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

// runSync runs a command in cwd with a minimal environment (PATH, HOME=cwd) plus env.
export function runSync(cmd: string, args: string[], opts: { cwd: string; env?: Record<string, string> }): SyncResult {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    encoding: 'utf8',
    timeout: 120_000,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: opts.cwd, ...opts.env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// scratchDirs makes numbered fresh directories under root.
export function scratchDirs(root: string): () => string {
  let count = 0;
  return () => {
    count += 1;
    const dir = path.join(root, `case-${count}`);
    fs.mkdirSync(dir);
    return dir;
  };
}

// pushLegacySignature pushes a cosign .sig manifest of digest to repository path at a registry as cosign sign
// --tlog-upload=false does: each blob by a POST and a PUT of the upload, then the manifest by PUT under the
// sha256-<hex>.sig tag.
export async function pushLegacySignature(reg: RegistryEndpoint, repoPath: string, digest: string, entries: { payload: Buffer; signature: string }[]): Promise<void> {
  const artifact = buildSignatureArtifact(entries);
  for (const blob of artifact.blobs) {
    const started = expectOk(`start an upload of ${blob.digest}`, await registryRequest(reg, `/v2/${repoPath}/blobs/uploads/`, { method: 'POST' }));
    const upload = new URL(String(started.headers.location), reg.url);
    upload.searchParams.set('digest', blob.digest);
    expectOk(
      `upload ${blob.digest}`,
      await registryRequest(reg, upload.toString(), { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: blob.bytes }),
    );
  }
  const put = await registryRequest(reg, `/v2/${repoPath}/manifests/${sigTag(digest)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: artifact.manifest,
  });
  expectOk(`PUT ${repoPath}:${sigTag(digest)}`, put);
  assert.equal(put.headers['docker-content-digest'], artifact.digest, 'the registry stored the manifest bytes as built');
}
