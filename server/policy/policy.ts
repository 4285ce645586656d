// Policy gathers the facts about (repository, digest) from storage and the upstream, applies the pure rule,
// and records what follows: a first admission (which airlock signs) or an approval request for a refusal.
import type { ContentStore } from '../../storage/content.js';
import type { ApprovalRequest, PolicyStore, Publisher } from '../../storage/policy.js';
import type { Route } from '../registry/names.js';
import { decide, type Decision, type Facts } from './decide.js';
import { bestMatch } from './glob.js';

// PublisherVerifier looks for a signature of digest by one of the candidate publishers' keys.
export interface PublisherVerifier {
  verify(route: Route, digest: string, candidates: Publisher[]): Promise<{ name: string; fingerprint: string } | null>;
}

// ManifestLoader fetches a manifest of the route's repository by digest into the content store, verified, so that what
// it lists is known.
export type ManifestLoader = (route: Route, digest: string) => Promise<unknown>;

// PolicyHooks are told about first admissions (to sign them).
export interface PolicyHooks {
  admitted(route: Route, digest: string, decision: Decision): void;
}

// Verdict is a decision plus the approval request a refusal created or bumped.
export interface Verdict extends Decision {
  request: ApprovalRequest | null;
}

const MAX_INDEX_DEPTH = 3;
const MAX_REEVALUATIONS = 3;
// Pinned manifests not fetched yet are fetched LOAD_PARALLEL at a time; one the upstream could not give is asked for
// again after LOAD_RETRY_MS; MAX_LOAD_FAILURES bounds the failures remembered.
const LOAD_RETRY_MS = 60_000;
const MAX_LOAD_FAILURES = 10000;
const LOAD_PARALLEL = 4;

// Walk is what one decision found out on its way: the (digest, depth) steps it decided, and whether it fetched the
// repository's pinned manifests.
interface Walk {
  decided: Map<string, Decision>;
  pinsLoaded: boolean;
}

const newWalk = (): Walk => ({ decided: new Map(), pinsLoaded: false });

// Policy decides admission; its caches are dropped whenever the live policy changes (changed()).
// MAX_TAG_PINS bounds the cached tag-pin answers.
const MAX_TAG_PINS = 10000;

export class Policy {
  private readonly store: PolicyStore;
  private readonly content: ContentStore;
  private readonly hooks: PolicyHooks;
  publisherVerifier: PublisherVerifier | null = null;
  manifestLoader: ManifestLoader | null = null;
  private readonly loadFailures = new Map<string, number>();
  private readonly decisions = new Map<string, Decision>();
  private readonly recorded = new Set<string>();
  private readonly blobDecisions = new Map<string, string>();
  private readonly tagPins = new Map<string, string | null>();
  generation = 0;

  constructor(store: PolicyStore, content: ContentStore, hooks: PolicyHooks) {
    this.store = store;
    this.content = content;
    this.hooks = hooks;
  }

  // changed drops every cached decision; called after any change to pins, publishers, requests or revocations. The
  // admissions recorded are checked again too: one admitted another way now is recorded and signed anew.
  changed(): void {
    this.generation++;
    this.decisions.clear();
    this.recorded.clear();
    this.blobDecisions.clear();
    this.tagPins.clear();
  }

  // tagPin is the digest a tag pin freezes repository:tag to, or null; cached until the policy changes. Answers for any
  // name a client makes up are cached too, so the cache is bounded: past MAX_TAG_PINS it starts again.
  tagPin(repository: string, tag: string): string | null {
    const key = `${repository}:${tag}`;
    let digest = this.tagPins.get(key);
    if (digest === undefined) {
      digest = this.store.pinForTag(repository, tag)?.digest ?? null;
      if (this.tagPins.size >= MAX_TAG_PINS) this.tagPins.clear();
      this.tagPins.set(key, digest);
    }
    return digest;
  }

  // admit decides for a manifest a client asked for, and records the first admission or the refusal's request.
  async admit(route: Route, digest: string, ctx: { tag: string | null; actor: string | null }): Promise<Verdict> {
    const decision = await this.evaluate(route, digest);
    const key = `${route.repository}@${digest}`;
    if (decision.admitted) {
      if (!this.recorded.has(key)) {
        const how = this.store.recordAdmission({ repository: route.repository, digest, how: decision.reason, approvedBy: decision.approvedBy, publisherKey: decision.publisherKey });
        // A signature says how the image was admitted, so a changed way is signed anew; so is one never signed (a
        // signing that failed, on a locked database, is tried again by the next admission).
        if (how !== 'same' || this.store.admission(route.repository, digest)?.signature === null) this.hooks.admitted(route, digest, decision);
        this.recorded.add(key);
      }
      return { ...decision, request: null };
    }
    this.recorded.delete(key);
    if (decision.reason === 'revoked') return { ...decision, request: null };
    const request = this.store.recordRefusal(route.repository, digest, ctx.tag, ctx.actor);
    return { ...decision, request };
  }

  // evaluate decides without recording anything; admitted decisions are cached until the policy changes.
  async evaluate(route: Route, digest: string): Promise<Decision> {
    const { value: decision, settled } = await this.settle(() => this.evaluateIn(route, digest, 0, newWalk()));
    // Still changing: the decision may be stale, but a revocation, read now, always wins.
    if (!settled && decision.admitted && this.store.revocation(route.repository, digest) !== null) return decide({ revoked: true, pin: null, requestStatus: null }) as Decision;
    return decision;
  }

  // settle makes a decision again while the policy changed as it waited (for the upstream: a publisher's signature, a
  // pinned index), so that a revocation, or a pin deleted, in the meantime is never answered with what was true before;
  // settled is false when it was still changing after MAX_REEVALUATIONS more tries.
  private async settle<T>(make: () => Promise<T>): Promise<{ value: T; settled: boolean }> {
    for (let attempt = 0; ; attempt++) {
      const generation = this.generation;
      const value = await make();
      if (generation === this.generation) return { value, settled: true };
      if (attempt === MAX_REEVALUATIONS) return { value, settled: false };
    }
  }

  // evaluateIn decides for digest at depth (0: the digest asked for, 1 and more: an index above it) within one walk,
  // which decides each (digest, depth) once: a repository's indexes can list the same manifests many times over, and
  // without it the walk grew with the product of their counts at every level (a client storing 80 small indexes had a
  // blob request walk for 14 s with the event loop blocked).
  private async evaluateIn(route: Route, digest: string, depth: number, walk: Walk): Promise<Decision> {
    const key = `${route.repository}@${digest}`;
    const cached = this.decisions.get(key);
    if (cached) return cached;
    const step = `${digest}@${depth}`;
    const walked = walk.decided.get(step);
    if (walked) return walked;
    const generation = this.generation;
    const pin = this.store.pinFor(route.repository, digest);
    const facts: Facts = {
      revoked: this.store.revocation(route.repository, digest) !== null,
      pin: pin ? { source: pin.source, createdBy: pin.createdBy } : null,
      requestStatus: this.store.requestFor(route.repository, digest)?.status ?? null,
    };
    let decision = decide(facts);
    if (decision === null) {
      facts.admittedIndex = await this.admittedByIndex(route, digest, depth, walk);
      decision = decide(facts);
    }
    if (decision === null) {
      facts.publisher = await this.publisherSignature(route, digest);
      decision = decide(facts) as Decision;
    }
    // Nothing admits digest: a pinned index airlock has not fetched yet may list it (a platform manifest pulled by
    // digest before its index). Only then are the repository's pinned manifests fetched (once a walk), and the question
    // asked again, afresh: what the walk decided before may have a new parent now.
    if (decision.reason === 'unknown' && depth === 0 && !walk.pinsLoaded) {
      walk.pinsLoaded = true;
      await this.loadPinned(route);
      walk.decided.clear();
      if (await this.admittedByIndex(route, digest, depth, walk)) decision = decide({ ...facts, admittedIndex: true }) as Decision;
    }
    walk.decided.set(step, decision);
    if ((decision.admitted || decision.reason === 'revoked') && generation === this.generation) this.decisions.set(key, decision);
    return decision;
  }

  // admittedByIndex tells whether an admitted index of the repository that airlock has fetched lists digest.
  private async admittedByIndex(route: Route, digest: string, depth: number, walk: Walk): Promise<boolean> {
    if (depth >= MAX_INDEX_DEPTH) return false;
    for (const parent of this.content.parents(route.repository, digest, 'manifest')) {
      if (parent.own) continue;
      const d = await this.evaluateIn(route, parent.digest, depth + 1, walk);
      if (d.admitted) return true;
    }
    return false;
  }

  // loadPinned fetches the repository's pinned manifests that it does not hold yet, revoked ones aside, LOAD_PARALLEL
  // at a time. One the upstream could not give is left alone for LOAD_RETRY_MS, so that refusals do not ask the
  // upstream for it each time.
  private async loadPinned(route: Route): Promise<void> {
    const loader = this.manifestLoader;
    if (!loader) return;
    const wanted = this.store.pinnedDigests(route.repository).filter((digest) => {
      if (this.content.holds(route.repository, digest) || this.store.revocation(route.repository, digest) !== null) return false;
      const failed = this.loadFailures.get(`${route.repository}@${digest}`);
      return failed === undefined || Date.now() - failed >= LOAD_RETRY_MS;
    });
    const next = async (): Promise<void> => {
      for (let digest = wanted.shift(); digest !== undefined; digest = wanted.shift()) {
        const key = `${route.repository}@${digest}`;
        try {
          await loader(route, digest);
          this.loadFailures.delete(key);
        } catch {
          if (this.loadFailures.size >= MAX_LOAD_FAILURES) this.loadFailures.clear();
          this.loadFailures.set(key, Date.now());
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LOAD_PARALLEL, wanted.length) }, next));
  }

  // candidates are the publishers whose most specific matching glob ties for the most specific match of all.
  candidates(repository: string): Publisher[] {
    const scored = this.store
      .publishers()
      .map((p) => ({ p, m: bestMatch(p.repositories, repository) }))
      .filter((x): x is { p: Publisher; m: { glob: string; score: number } } => x.m !== null);
    if (scored.length === 0) return [];
    const top = Math.max(...scored.map((x) => x.m.score));
    return scored.filter((x) => x.m.score === top).map((x) => x.p);
  }

  private async publisherSignature(route: Route, digest: string): Promise<{ name: string; fingerprint: string } | null> {
    if (!this.publisherVerifier) return null;
    const candidates = this.candidates(route.repository);
    if (candidates.length === 0) return null;
    return this.publisherVerifier.verify(route, digest, candidates);
  }

  // blobParent names an admitted manifest of the repository (or airlock's own signature) that references the blob, or
  // null: only such a manifest may vouch for the blob, and for the size it is expected to have.
  async blobParent(route: Route, digest: string): Promise<string | null> {
    const key = `${route.repository}@${digest}`;
    const cached = this.blobDecisions.get(key);
    if (cached !== undefined) return cached;
    const search = async (): Promise<{ digest: string; own: boolean } | null> => {
      const walk = newWalk();
      for (const parent of this.content.parents(route.repository, digest, 'blob')) {
        if (parent.own || (await this.evaluateIn(route, parent.digest, 0, walk)).admitted) return parent;
      }
      return null;
    };
    const { value: found, settled } = await this.settle(search);
    if (found === null) return null;
    // Still changing: a revocation of the manifest found, read now, wins.
    if (!settled && !found.own && this.store.revocation(route.repository, found.digest) !== null) return null;
    if (settled) this.blobDecisions.set(key, found.digest);
    return found.digest;
  }
}
