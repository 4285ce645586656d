// Metrics are airlock's Prometheus series (prom-client), on a registry of their own.
import client from 'prom-client';

// TalliedCounter is a labelled counter for the request path. Its inc() adds to a plain number per series, found by the
// label values (which hold no NUL) given in the order of labelNames; the counter takes the sums whenever the registry
// is read (prom-client's collect hook). prom-client's own inc() builds and checks a label string from the labels object
// on every call, and five such calls took 3 % of the request thread's time serving cached manifests
// (docs/performance.md).
export class TalliedCounter<L extends string> {
  private readonly name: string;
  private readonly labelNames: readonly L[];
  private readonly series = new Map<string, { labels: Partial<Record<L, string>>; n: number }>();

  constructor(registry: client.Registry, name: string, help: string, labelNames: readonly L[]) {
    const series = this.series;
    this.name = name;
    this.labelNames = labelNames;
    // The counter registers itself; its collect hook is all that ties it to the tally.
    new client.Counter({
      name, help, labelNames, registers: [registry],
      collect() {
        for (const s of series.values()) {
          if (s.n === 0) continue;
          this.inc(s.labels, s.n);
          s.n = 0;
        }
      },
    });
  }

  // inc adds 1 to the series of these label values (as many as labelNames, in its order).
  inc(...values: string[]): void {
    this.bump(1, values);
  }

  // add adds n to the series of these label values.
  add(n: number, ...values: string[]): void {
    this.bump(n, values);
  }

  private bump(n: number, values: string[]): void {
    const key = values.length === 1 ? values[0] : values.join('\u0000');
    const s = this.series.get(key);
    if (s !== undefined) {
      s.n += n;
      return;
    }
    if (values.length !== this.labelNames.length) throw new Error(`${this.name} takes ${this.labelNames.length} label values, not ${values.length}`);
    const labels: Partial<Record<L, string>> = {};
    this.labelNames.forEach((l, i) => (labels[l] = values[i]));
    this.series.set(key, { labels, n });
  }
}

// createMetrics builds every series once; callers hold the returned object.
export function createMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'airlock_' });
  const m = {
    registry,
    requests: new TalliedCounter(registry, 'airlock_requests_total', 'HTTP requests by route and status', ['route', 'method', 'status']),
    requestSeconds: new client.Histogram({
      name: 'airlock_request_duration_seconds', help: 'HTTP request latency by route', labelNames: ['route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60], registers: [registry],
    }),
    cache: new TalliedCounter(registry, 'airlock_cache_requests_total', 'Content served from the cache (hit) or fetched upstream (miss)', ['kind', 'result']),
    bytesServed: new TalliedCounter(registry, 'airlock_bytes_served_total', 'Bytes of manifests and blobs sent to clients', ['source']),
    upstreamSeconds: new client.Histogram({
      name: 'airlock_upstream_request_duration_seconds', help: 'Upstream request latency (time to response headers)', labelNames: ['upstream'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry],
    }),
    upstreamErrors: new client.Counter({ name: 'airlock_upstream_errors_total', help: 'Upstream failures by kind', labelNames: ['upstream', 'kind'] as const, registers: [registry] }),
    breakerOpen: new client.Gauge({ name: 'airlock_upstream_breaker_open', help: '1 while the upstream circuit breaker is open', labelNames: ['upstream'] as const, registers: [registry] }),
    decisions: new TalliedCounter(registry, 'airlock_admission_decisions_total', 'Admission decisions by outcome and reason', ['decision', 'reason']),
    cacheBytes: new client.Gauge({ name: 'airlock_blob_cache_bytes', help: 'Bytes held in the blob cache', registers: [registry] }),
    cacheBlobs: new client.Gauge({ name: 'airlock_blob_cache_blobs', help: 'Blobs held in the blob cache', registers: [registry] }),
    auditEvents: new TalliedCounter(registry, 'airlock_audit_events_total', 'Audit events appended', ['action']),
    auditAppendSeconds: new client.Histogram({
      name: 'airlock_audit_flush_duration_seconds', help: 'Time to write one batch of audit events', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers: [registry],
    }),
    tlsRefused: new client.Counter({ name: 'airlock_tls_refused_total', help: 'Refused TLS clients by reason', labelNames: ['reason'] as const, registers: [registry] }),
    // One series per kind, whatever the number of CAs: the CA that ends first is the one to act on; of the admin
    // certificates, the one that ends last (until then someone can still administer airlock).
    certificateExpiry: new client.Gauge({
      name: 'airlock_certificate_expiry_seconds',
      help: 'Unix time when the server certificate (cert="server"), the first-ending tls.clientCa certificate (cert="ca") and the last-ending admin client certificate not revoked (cert="admin") expire',
      labelNames: ['cert'] as const, registers: [registry],
    }),
  };
  return m;
}

// Metrics is airlock's set of series.
export type Metrics = ReturnType<typeof createMetrics>;
