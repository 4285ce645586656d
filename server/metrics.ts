// Metrics are airlock's Prometheus series (prom-client), on a registry of their own.
import client from 'prom-client';

// createMetrics builds every series once; callers hold the returned object.
export function createMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'airlock_' });
  const m = {
    registry,
    requests: new client.Counter({ name: 'airlock_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'method', 'status'] as const, registers: [registry] }),
    requestSeconds: new client.Histogram({
      name: 'airlock_request_duration_seconds', help: 'HTTP request latency by route', labelNames: ['route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60], registers: [registry],
    }),
    cache: new client.Counter({ name: 'airlock_cache_requests_total', help: 'Content served from the cache (hit) or fetched upstream (miss)', labelNames: ['kind', 'result'] as const, registers: [registry] }),
    bytesServed: new client.Counter({ name: 'airlock_bytes_served_total', help: 'Bytes of manifests and blobs sent to clients', labelNames: ['source'] as const, registers: [registry] }),
    upstreamSeconds: new client.Histogram({
      name: 'airlock_upstream_request_duration_seconds', help: 'Upstream request latency (time to response headers)', labelNames: ['upstream'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry],
    }),
    upstreamErrors: new client.Counter({ name: 'airlock_upstream_errors_total', help: 'Upstream failures by kind', labelNames: ['upstream', 'kind'] as const, registers: [registry] }),
    breakerOpen: new client.Gauge({ name: 'airlock_upstream_breaker_open', help: '1 while the upstream circuit breaker is open', labelNames: ['upstream'] as const, registers: [registry] }),
    decisions: new client.Counter({ name: 'airlock_admission_decisions_total', help: 'Admission decisions by outcome and reason', labelNames: ['decision', 'reason'] as const, registers: [registry] }),
    cacheBytes: new client.Gauge({ name: 'airlock_blob_cache_bytes', help: 'Bytes held in the blob cache', registers: [registry] }),
    cacheBlobs: new client.Gauge({ name: 'airlock_blob_cache_blobs', help: 'Blobs held in the blob cache', registers: [registry] }),
    auditEvents: new client.Counter({ name: 'airlock_audit_events_total', help: 'Audit events appended', labelNames: ['action'] as const, registers: [registry] }),
    auditAppendSeconds: new client.Histogram({
      name: 'airlock_audit_flush_duration_seconds', help: 'Time to write one batch of audit events', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers: [registry],
    }),
    tlsRefused: new client.Counter({ name: 'airlock_tls_refused_total', help: 'Refused TLS clients by reason', labelNames: ['reason'] as const, registers: [registry] }),
  };
  return m;
}

// Metrics is airlock's set of series.
export type Metrics = ReturnType<typeof createMetrics>;
