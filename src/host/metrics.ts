import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { COMMAND_KINDS, LATENCY_BOUNDS, type CommandStats, type ExportStats, type NbdServerStats } from '../nbd/index.js';
import type { Pool } from '../qcowlike/index.js';
import type { RaidArray } from '../raid/index.js';
import { JOB_STATES, type JobRecord } from './job-record.js';

/** What a served host exposes: the NBD server's counters and the pools behind its exports. */
export interface MetricsSource {
  server: { readonly stats: NbdServerStats; readonly exportStats: ReadonlyMap<string, ExportStats> };
  pools: readonly { name: string; pool: Pool; array?: RaidArray }[];
  /** A pool's jobs (running and recently ended), as `strata job list` shows them. */
  jobs?: (pool: string) => readonly JobRecord[];
}

const ARRAY_STATES = ['optimal', 'degraded', 'rebuilding', 'failed'] as const;

type ExportLabel = 'export' | 'op';

/**
 * The host's metrics in a registry of their own. Every value is read at
 * scrape time (collect callbacks) from counters the request path keeps in
 * plain numbers: prom-client is not called per request (an observe() costs
 * about 0.5 µs against a few ns for the plain counts, measured).
 */
export function hostMetrics(source: MetricsSource): Registry {
  const registers = [new Registry()];
  const reg = registers[0]!;

  const perCommand = function* (): Generator<{ labels: Record<ExportLabel, string>; c: CommandStats }> {
    for (const e of source.server.exportStats.values()) {
      for (const op of COMMAND_KINDS) {
        const c = e.commands[op];
        // Commands an export never saw stay out: seven series per export, most of them zero, would be noise.
        if (c.ops > 0) yield { labels: { export: e.name, op }, c };
      }
    }
  };
  const exportCounter = (name: string, help: string, value: (c: CommandStats) => number): void => {
    new Counter<ExportLabel>({
      name,
      help,
      labelNames: ['export', 'op'],
      registers,
      collect() {
        this.reset();
        for (const { labels, c } of perCommand()) this.inc(labels, value(c));
      },
    });
  };
  exportCounter('strata_export_requests_total', 'NBD requests answered per export and command (op: read, write, flush, trim, zero, cache, block_status)', (c) => c.ops);
  exportCounter('strata_export_bytes_total', 'bytes read, written, trimmed or zeroed by requests that succeeded', (c) => c.bytes);
  exportCounter('strata_export_errors_total', 'requests answered with an error (refused or failed by the device)', (c) => c.errors);
  new CountedHistogram('strata_export_request_duration_seconds', 'time from admission (range-lock wait included) to the reply being queued', perCommand, reg);
  new Gauge<'export'>({
    name: 'strata_export_connections',
    help: 'connections in transmission on the export',
    labelNames: ['export'],
    registers,
    collect() {
      this.reset();
      for (const e of source.server.exportStats.values()) this.set({ export: e.name }, e.connections);
    },
  });

  serverMetrics(source.server, registers);
  poolMetrics(source.pools, registers);
  jobMetrics(source, registers);
  return reg;
}

function serverMetrics(server: MetricsSource['server'], registers: Registry[]): void {
  const gauge = (name: string, help: string, value: (s: NbdServerStats) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value(server.stats));
      },
    });
  };
  const counter = (name: string, help: string, value: (s: NbdServerStats) => number): void => {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value(server.stats));
      },
    });
  };
  gauge('strata_nbd_connections', 'connections open (handshake or transmission)', (s) => s.connections);
  gauge('strata_nbd_transmissions', 'connections in the transmission phase', (s) => s.transmissions);
  new Counter<'reason'>({
    name: 'strata_nbd_refused_total',
    help: 'connections closed at accept (reason: connection_limit, per_address_limit, shutting_down)',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset();
      const r = server.stats.refused;
      this.inc({ reason: 'connection_limit' }, r.connectionLimit);
      this.inc({ reason: 'per_address_limit' }, r.perAddressLimit);
      this.inc({ reason: 'shutting_down' }, r.shuttingDown);
    },
  });
  counter('strata_nbd_idle_closed_total', 'connections closed by --idle-timeout', (s) => s.idleClosed);
  counter('strata_nbd_handshake_timeouts_total', 'connections dropped for not finishing the handshake in time', (s) => s.handshakeTimeouts);
  counter('strata_nbd_buffer_stalls_total', 'times a connection stopped reading for want of shared buffer room', (s) => s.budget.stalls);
  gauge('strata_nbd_buffer_limit_bytes', 'the buffer budget (--max-buffer)', (s) => s.budget.total);
  gauge('strata_nbd_buffer_used_bytes', 'request and reply bytes held against the budget', (s) => s.budget.used);
  gauge('strata_nbd_buffer_waiting_connections', 'connections waiting for shared buffer room', (s) => s.budget.waiting);
  gauge('strata_nbd_buffer_largest_connection_bytes', 'the most bytes one connection holds', (s) => s.largestConnection);
  gauge('strata_nbd_buffer_slab_bytes', 'pooled buffer memory held (in use or spare)', (s) => s.buffers.slabBytes);
  gauge('strata_nbd_buffer_in_use_bytes', 'pooled buffer memory handed out', (s) => s.buffers.inUseBytes);
}

/**
 * One series per pool of `items` (a gauge or a counter), read at scrape time;
 * an item whose value is undefined has no sample then.
 */
function perPool<T>(type: 'gauge' | 'counter', items: () => Iterable<{ name: string; item: T }>, registers: Registry[]): (name: string, help: string, value: (item: T) => number | undefined) => void {
  return (name, help, value) => {
    const collect = function (this: Gauge<'pool'> | Counter<'pool'>): void {
      this.reset();
      for (const { name: pool, item } of items()) {
        const v = value(item);
        if (v === undefined) continue;
        if (this instanceof Gauge) this.set({ pool }, v);
        else this.inc({ pool }, v);
      }
    };
    const config = { name, help, labelNames: ['pool'] as const, registers, collect };
    if (type === 'gauge') new Gauge<'pool'>(config);
    else new Counter<'pool'>(config);
  };
}

function poolMetrics(pools: MetricsSource['pools'], registers: Registry[]): void {
  const byPool = (): { name: string; item: Pool }[] => pools.map((p) => ({ name: p.name, item: p.pool }));
  const poolGauge = perPool('gauge', byPool, registers);
  // The same figures as `pool info --json`: totalBytes, usedBytes, freeBytes, volumes.
  poolGauge('strata_pool_capacity_bytes', 'bytes usable for data and metadata', (p) => p.stats().totalClusters * p.stats().clusterSize);
  poolGauge('strata_pool_allocated_bytes', 'bytes allocated (data and metadata)', (p) => p.stats().usedClusters * p.stats().clusterSize);
  poolGauge('strata_pool_free_bytes', 'bytes free', (p) => p.stats().freeClusters * p.stats().clusterSize);
  poolGauge('strata_pool_volumes', 'volumes in the pool', (p) => p.stats().volumes);
  const poolCounter = perPool('counter', byPool, registers);
  poolCounter('strata_pool_checksum_errors_total', 'data reads whose checksum did not match, since the pool was opened', (p) => p.counters.corruptData);
  poolCounter('strata_pool_checksum_repairs_total', 'bad copies rewritten from a good one, since the pool was opened', (p) => p.counters.repairedData);

  const arrays = (): { name: string; item: RaidArray }[] => pools.flatMap((p) => (p.array ? [{ name: p.name, item: p.array }] : []));
  new Gauge<'pool' | 'state'>({
    name: 'strata_raid_state',
    help: 'the array state: 1 for the current one of optimal, degraded, rebuilding, failed',
    labelNames: ['pool', 'state'],
    registers,
    collect() {
      this.reset();
      for (const a of arrays()) {
        const now = a.item.status().state;
        for (const state of ARRAY_STATES) this.set({ pool: a.name, state }, state === now ? 1 : 0);
      }
    },
  });
  const arrayGauge = perPool('gauge', arrays, registers);
  arrayGauge('strata_raid_members', 'member roles of the array', (a) => a.status().members.length);
  arrayGauge('strata_raid_degraded_members', 'member roles not in sync (failed, missing or rebuilding)', (a) => a.status().members.filter((m) => m.state !== 'active').length);
  arrayGauge('strata_raid_spares', 'hot spares', (a) => a.status().spares.length);
  arrayGauge('strata_raid_rebuild_progress_ratio', 'fraction of the running rebuild done (absent when none runs)', (a) => a.status().rebuild?.fraction);
  arrayGauge('strata_raid_dirty_regions', 'write-intent regions marked dirty', (a) => a.status().dirtyRegions);
  const arrayCounter = perPool('counter', arrays, registers);
  arrayCounter('strata_raid_repairs_total', 'member copies rewritten after a checksum mismatch (self-heal)', (a) => a.status().counters.repairs);
  arrayCounter('strata_raid_read_errors_total', 'member read errors', (a) => a.status().counters.readErrors);
  arrayCounter('strata_raid_write_errors_total', 'member write errors', (a) => a.status().counters.writeErrors);
  arrayCounter('strata_raid_mismatches_total', 'stripes or chunks found inconsistent by scrub or resync', (a) => a.status().counters.mismatches);
}

/** Jobs per pool, kind and state (every state present, 0 when none), and the bytes of each running one. */
function jobMetrics(source: MetricsSource, registers: Registry[]): void {
  const jobsOf = source.jobs;
  if (!jobsOf) return;
  const all = function* (): Generator<JobRecord> {
    for (const p of source.pools) yield* jobsOf(p.name);
  };
  new Gauge<'pool' | 'kind' | 'state'>({
    name: 'strata_jobs',
    help: 'jobs by kind and state (running, and the last ones that ended, as strata job list shows them)',
    labelNames: ['pool', 'kind', 'state'],
    registers,
    collect() {
      this.reset();
      const kinds = new Set<string>();
      for (const j of all()) kinds.add(`${j.pool}\0${j.kind}`);
      for (const k of kinds) {
        const [pool, kind] = k.split('\0') as [string, string];
        for (const state of JOB_STATES) this.set({ pool, kind, state }, 0);
      }
      for (const j of all()) this.inc({ pool: j.pool, kind: j.kind, state: j.state });
    },
  });
  const running = (name: string, help: string, value: (j: JobRecord) => number): void => {
    new Gauge<'pool' | 'kind' | 'id'>({
      name,
      help,
      labelNames: ['pool', 'kind', 'id'],
      registers,
      collect() {
        this.reset();
        for (const j of all()) if (j.state === 'running') this.set({ pool: j.pool, kind: j.kind, id: String(j.id) }, value(j));
      },
    });
  };
  running('strata_job_done_bytes', 'bytes a running job has done', (j) => j.bytesDone);
  running('strata_job_total_bytes', 'bytes a running job has to do (0 while not known)', (j) => j.bytesTotal);
}

interface ExpositionValue {
  metricName: string;
  labels: Record<string, string | number>;
  sharedLabels: Record<string, never>;
  value: number;
}

/**
 * A prom-client histogram whose buckets are counted elsewhere (CommandStats,
 * on the request path) and handed over whole at scrape time; prom-client's
 * own Histogram only learns values one observe() at a time. The registry
 * formats what getForPromString returns, as it does for Histogram; JSON
 * (get()) goes through the same method.
 */
class CountedHistogram extends Histogram<ExportLabel> {
  constructor(
    private readonly metric: string,
    private readonly description: string,
    private readonly series: () => Iterable<{ labels: Record<ExportLabel, string>; c: CommandStats }>,
    registry: Registry,
  ) {
    super({ name: metric, help: description, labelNames: ['export', 'op'], buckets: [...LATENCY_BOUNDS], registers: [registry] });
  }

  async getForPromString(): Promise<{ name: string; help: string; type: 'histogram'; values: ExpositionValue[]; aggregator: 'sum' }> {
    const values: ExpositionValue[] = [];
    const bucket = `${this.metric}_bucket`;
    for (const { labels, c } of this.series()) {
      let cumulative = 0;
      LATENCY_BOUNDS.forEach((le, i) => {
        cumulative += c.buckets[i]!;
        values.push({ metricName: bucket, labels: { ...labels, le }, sharedLabels: {}, value: cumulative });
      });
      values.push({ metricName: bucket, labels: { ...labels, le: '+Inf' }, sharedLabels: {}, value: c.timed });
      values.push({ metricName: `${this.metric}_sum`, labels, sharedLabels: {}, value: c.latencySum });
      values.push({ metricName: `${this.metric}_count`, labels, sharedLabels: {}, value: c.timed });
    }
    return { name: this.metric, help: this.description, type: 'histogram', values, aggregator: 'sum' };
  }
}

export interface MetricsEndpoint {
  host: string;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Serves the registry at GET /metrics on host:port (port 0 picks a free one). */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<MetricsEndpoint> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('use GET\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${err instanceof Error ? err.message : String(err)}\n`),
    );
  });
  // A scraper keeps its connection open between scrapes; shutdown must not wait for it.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    host: bound.address,
    port: bound.port,
    url: `http://${shown}:${bound.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
