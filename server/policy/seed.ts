// seedPolicy applies the configuration's policy seeds at start without duplicating what the API created.
import type { PolicyStore } from '../../storage/policy.js';
import type { Config } from '../config.js';
import { publisherKeys } from './publishers.js';

// SeedChange is one change the seeds made, as the audit event that records it (with actor config).
export interface SeedChange {
  action: 'admin.pin.add' | 'admin.pin.delete' | 'admin.publisher.add' | 'admin.publisher.delete' | 'admin.publisher.update';
  repository: string | null;
  digest: string | null;
  reference: string | null;
}

// seedPolicy makes the policy entries that came from the configuration match it: missing pins are added, pins and
// publishers removed from the file are removed, changed publishers are refreshed. Entries made by the API are left alone.
export function seedPolicy(config: Config, store: PolicyStore): { changes: SeedChange[]; problems: string[] } {
  const changes: SeedChange[] = [];
  const problems: string[] = [];
  const wanted = new Set(config.policy.pins.map((p) => `${p.repository}@${p.digest}:${p.tag ?? ''}`));
  for (const p of store.pins()) {
    if (p.source === 'config' && !wanted.has(`${p.repository}@${p.digest}:${p.tag ?? ''}`)) {
      store.deletePin(p.id);
      // Drift is news about a tag pin; with the pin gone there is nothing left for it to be about.
      if (p.tag !== null) store.clearDrift(p.repository, p.tag);
      changes.push({ action: 'admin.pin.delete', repository: p.repository, digest: p.digest, reference: p.tag });
    }
  }
  const names = new Set(config.policy.publishers.map((p) => p.name));
  for (const p of store.publishers()) {
    if (p.source === 'config' && !names.has(p.name)) {
      store.deletePublisher(p.name);
      changes.push({ action: 'admin.publisher.delete', repository: null, digest: null, reference: p.name });
    }
  }
  for (const p of config.policy.pins) {
    const r = store.addPin({ repository: p.repository, digest: p.digest, tag: p.tag, note: 'from the configuration', source: 'config', createdBy: null });
    if (r === null) problems.push(`pin ${p.repository}:${p.tag} -> ${p.digest}: the tag is already pinned to another digest`);
    else if (r.created) changes.push({ action: 'admin.pin.add', repository: p.repository, digest: p.digest, reference: p.tag });
  }
  for (const p of config.policy.publishers) {
    // Validation refused any configuration whose publisher key text holds no usable key, so this parses.
    const { publicKey, fingerprint } = publisherKeys(p.publicKey);
    const existing = store.publisher(p.name);
    if (!existing) {
      store.addPublisher({ name: p.name, publicKey, fingerprint, repositories: p.repositories, source: 'config', createdBy: null });
      changes.push({ action: 'admin.publisher.add', repository: null, digest: null, reference: p.name });
    } else if (existing.source !== 'config') {
      problems.push(`publisher ${p.name}: a publisher of that name was added through the API; delete it there, or rename this one`);
    } else if (existing.fingerprint !== fingerprint || JSON.stringify(existing.repositories) !== JSON.stringify(p.repositories)) {
      store.updateSeededPublisher({ name: p.name, publicKey, fingerprint, repositories: p.repositories });
      changes.push({ action: 'admin.publisher.update', repository: null, digest: null, reference: p.name });
    } else if (existing.publicKey !== publicKey) {
      // The same keys spelled otherwise (builds before normalising kept the file's text, comments and all): stored as
      // they are spelled now, and no change of trust to audit.
      store.updateSeededPublisher({ name: p.name, publicKey, fingerprint, repositories: p.repositories });
    }
  }
  return { changes, problems };
}
