// Client set-up snippets for this mirror: Docker, containerd and podman, each routed so clients cannot silently
// fall back to the public registry (SPEC §6 client-config, PROTOCOL §0).
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import type { Config } from './config.js';

// ClientKind is a kind of client airlock writes configuration for.
export type ClientKind = 'docker' | 'containerd' | 'podman';

// ClientFile is one file to write on a client machine.
export interface ClientFile {
  path: string;
  content: string;
}

// mirrorAddress is host:port clients use to reach airlock: publicUrl's, else the listen address. Clients check the
// server certificate against it, so a listen host the certificate does not name (a wildcard, or an address left out
// of init's --host) gives way to the certificate's first name (serverNames).
export function mirrorAddress(config: Config, listening?: { host: string; port: number }, names: readonly string[] = []): string {
  if (config.publicUrl) return new URL(config.publicUrl).host;
  const l = listening ?? config.listen;
  const wildcard = l.host === '0.0.0.0' || canonicalHost(l.host) === '::';
  let host = wildcard ? (names[0] ?? 'localhost') : canonicalHost(l.host);
  if (names.length > 0 && !names.some((n) => n.toLowerCase() === host.toLowerCase())) host = names[0];
  return `${host.includes(':') ? `[${host}]` : host}:${l.port}`;
}

// listenWarnings says when clients are sent to an address that may not be this listener: without publicUrl, a listen
// host the server certificate does not name gives way to the certificate's first name (mirrorAddress), which may lead
// elsewhere (127.0.0.2 gives way to localhost, which is 127.0.0.1). A wildcard listens on every address, names included.
export function listenWarnings(config: Config, listening: { host: string; port: number }, names: readonly string[]): string[] {
  if (config.publicUrl || names.length === 0) return [];
  const host = canonicalHost(listening.host);
  if (host === '0.0.0.0' || host === '::' || names.some((n) => n.toLowerCase() === host.toLowerCase())) return [];
  const shown = host.includes(':') ? `[${host}]` : host;
  return [
    `the server certificate does not name the listen address ${shown}, so the addresses below are ${mirrorAddress(config, listening, names)}, which may not reach ${shown}:${listening.port}: ` +
      `set publicUrl to the address clients use, or reissue the server certificate with ${shown} among its names`,
  ];
}

// serverNames lists the DNS names and IP addresses a server certificate (PEM) is valid for, in its order.
export function serverNames(certPem: string | Buffer): string[] {
  const san = new crypto.X509Certificate(certPem).subjectAltName ?? '';
  return san
    .split(', ')
    .map((entry) => /^(?:DNS|IP Address):(.+)$/.exec(entry)?.[1])
    .filter((name): name is string => name !== undefined)
    .map(canonicalHost);
}

// canonicalHost writes an IPv6 address in its one short form (0:0:0:0:0:0:0:1, as a certificate holds it, is ::1), so
// addresses compare equal however they were written; anything else is returned as it is.
function canonicalHost(host: string): string {
  return net.isIPv6(host) ? new URL(`https://[${host}]/`).hostname.slice(1, -1) : host;
}

// isLoopback tells whether the host of a host:port address is a loopback one: localhost, 127.0.0.0/8 or ::1.
export function isLoopback(address: string): boolean {
  const host = canonicalHost(address.startsWith('[') ? address.slice(1, address.indexOf(']')) : address.slice(0, address.lastIndexOf(':')));
  return host.toLowerCase() === 'localhost' || host === '::1' || /^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/.test(host);
}

// clientWarnings says what keeps a client of kind from pulling through the mirror at address, if anything does.
// dockerd counts 127.0.0.0/8 and ::1 as insecure registries: it never presents its client certificate there, airlock
// refuses the handshake, and dockerd pulls from Docker Hub instead, without an error (docs/client-guide.md).
export function clientWarnings(kind: ClientKind, address: string): string[] {
  if (kind !== 'docker' || !isLoopback(address)) return [];
  return [
    `dockerd sends no client certificate to the loopback address ${address} and then pulls from Docker Hub instead: ` +
      'give airlock an address on a real interface, in its server certificate and in publicUrl',
  ];
}

// DEFAULT_CERT_DIR is where client files expect the client bundle unless told otherwise.
export const DEFAULT_CERT_DIR = '/etc/airlock';

// clientFiles returns the files a client of kind needs, with certificate paths under certDir (absolute) on the client.
export function clientFiles(kind: ClientKind, config: Config, address: string, certDir = DEFAULT_CERT_DIR): ClientFile[] {
  const ca = path.posix.join(certDir, 'ca.crt');
  const cert = path.posix.join(certDir, 'client.cert');
  const key = path.posix.join(certDir, 'client.key');
  switch (kind) {
    case 'docker':
      return [
        { path: '/etc/docker/daemon.json', content: `${JSON.stringify({ 'registry-mirrors': [`https://${address}`] }, null, 2)}\n` },
        { path: `/etc/docker/certs.d/${address}/ca.crt`, content: `# copy ${ca} here\n` },
        { path: `/etc/docker/certs.d/${address}/client.cert`, content: `# copy ${cert} here\n` },
        { path: `/etc/docker/certs.d/${address}/client.key`, content: `# copy ${key} here\n` },
      ];
    case 'containerd':
      return config.upstreams.map((u) => ({
        path: `/etc/containerd/certs.d/${u.name}/hosts.toml`,
        content:
          `# Only airlock serves ${u.name}: "server" names the mirror, so containerd never falls back to the public registry.\n` +
          `server = "https://${address}"\n` +
          `ca = "${ca}"\n` +
          `client = [["${cert}", "${key}"]]\n\n` +
          `[host."https://${address}"]\n` +
          `  capabilities = ["pull", "resolve"]\n` +
          `  ca = "${ca}"\n` +
          `  client = [["${cert}", "${key}"]]\n`,
      }));
    case 'podman': {
      const blocks = config.upstreams.map(
        (u) =>
          `[[registry]]\n` +
          `prefix = "${u.name}"\n` +
          `# location names the mirror, so podman and skopeo never fall back to the public registry.\n` +
          `location = "${address}/${u.name}"\n`,
      );
      return [
        { path: '/etc/containers/registries.conf.d/airlock.conf', content: `${blocks.join('\n')}` },
        { path: `/etc/containers/certs.d/${address}/ca.crt`, content: `# copy ${ca} here\n` },
        { path: `/etc/containers/certs.d/${address}/client.cert`, content: `# copy ${cert} here\n` },
        { path: `/etc/containers/certs.d/${address}/client.key`, content: `# copy ${key} here\n` },
      ];
    }
  }
}
