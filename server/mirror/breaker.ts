// Breaker is a circuit breaker: after maxFails consecutive failures the upstream is skipped for openMs, then one trial is let through.
export class Breaker {
  private failures = 0;
  private openedAt = 0;
  private trialInFlight = false;
  readonly maxFails: number;
  readonly openMs: number;
  private readonly clock: () => number;
  onChange: (state: BreakerState) => void = () => {};

  constructor(maxFails = 5, openMs = 30000, clock: () => number = Date.now) {
    this.maxFails = maxFails;
    this.openMs = openMs;
    this.clock = clock;
  }

  // state is closed (normal), open (skipping the upstream) or half-open (one trial allowed).
  get state(): BreakerState {
    if (this.failures < this.maxFails) return 'closed';
    return this.clock() - this.openedAt >= this.openMs ? 'half-open' : 'open';
  }

  // retryInMs is how long until the next trial while open.
  retryInMs(): number {
    return Math.max(0, this.openedAt + this.openMs - this.clock());
  }

  // allow tells whether a request may go to the upstream now; in half-open state only one trial at a time.
  allow(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'open' || this.trialInFlight) return false;
    this.trialInFlight = true;
    return true;
  }

  // success closes the breaker.
  success(): void {
    const before = this.state;
    this.failures = 0;
    this.trialInFlight = false;
    if (before !== 'closed') this.onChange('closed');
  }

  // failure counts a failure and opens the breaker at maxFails (again, after a failed trial).
  failure(): void {
    const before = this.state;
    this.failures++;
    this.trialInFlight = false;
    if (this.failures >= this.maxFails) {
      this.openedAt = this.clock();
      if (before !== 'open') this.onChange('open');
    }
  }
}

// BreakerState is what the breaker currently does.
export type BreakerState = 'closed' | 'open' | 'half-open';
