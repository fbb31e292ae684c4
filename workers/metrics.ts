import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { observeActivityProgress } from '../activities/heartbeat.js';
import { parseAddress } from './address.js';

export { parseAddress };

/**
 * A worker's own Prometheus metrics, beside the Temporal SDK's (which the SDK's Rust core exports on an
 * address of its own; see startWorkerMetrics). Activities are the pipeline's stages, so their durations are
 * the stage durations; throughput comes from the progress every long activity already reports.
 */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly activitySeconds: Histogram<'activity' | 'outcome'>;
  readonly activitiesRunning: Gauge<'activity'>;
  readonly samplesPerSec: Gauge<'activity' | 'stage'>;
  readonly tokensPerSec: Gauge<'activity' | 'stage'>;
  readonly progressReports: Counter<'activity'>;
  private readonly stopObserving: () => void;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'corella_worker_process_' });
    this.activitySeconds = new Histogram({
      name: 'corella_worker_activity_seconds',
      help: 'Activity (pipeline stage) durations by activity type and outcome (completed, failed, cancelled)',
      labelNames: ['activity', 'outcome'],
      // Stages run from milliseconds (bookkeeping) to hours (LLM features on real data).
      buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600],
      registers,
    });
    this.activitiesRunning = new Gauge({
      name: 'corella_worker_activities_running',
      help: 'Activities executing now, by type',
      labelNames: ['activity'],
      registers,
    });
    this.samplesPerSec = new Gauge({
      name: 'corella_worker_samples_per_second',
      help: 'Latest reported throughput of a running stage (training or LLM samples per second)',
      labelNames: ['activity', 'stage'],
      registers,
    });
    this.tokensPerSec = new Gauge({
      name: 'corella_worker_llm_tokens_per_second',
      help: 'Latest reported LLM prompt tokens evaluated per second',
      labelNames: ['activity', 'stage'],
      registers,
    });
    this.progressReports = new Counter({
      name: 'corella_worker_progress_reports_total',
      help: 'Progress reports (heartbeats with details) by activity type',
      labelNames: ['activity'],
      registers,
    });
    this.stopObserving = observeActivityProgress((activity, p) => {
      // Stage labels are the ml/ stage names with the split (llm-features:valid): a small, fixed set.
      const stage = p.stage.split(/[^A-Za-z0-9:_-]/)[0].slice(0, 64);
      this.progressReports.inc({ activity });
      if (typeof p.samplesPerSec === 'number' && Number.isFinite(p.samplesPerSec))
        this.samplesPerSec.set({ activity, stage }, p.samplesPerSec);
      if (typeof p.tokensPerSec === 'number' && Number.isFinite(p.tokensPerSec))
        this.tokensPerSec.set({ activity, stage }, p.tokensPerSec);
    });
  }

  /** Times every activity the worker runs (WorkerOptions.interceptors.activity). */
  interceptor(): ActivityInterceptorsFactory {
    return (ctx) => ({
      inbound: {
        execute: async (input, next) => {
          const activity = ctx.info.activityType;
          const end = this.activitySeconds.startTimer({ activity });
          this.activitiesRunning.inc({ activity });
          let outcome = 'failed';
          try {
            const r = await next(input);
            outcome = 'completed';
            return r;
          } catch (e) {
            if (ctx.cancellationSignal.aborted) outcome = 'cancelled';
            throw e;
          } finally {
            this.activitiesRunning.dec({ activity });
            end({ outcome });
          }
        },
      },
    });
  }

  dispose(): void {
    this.stopObserving();
  }
}

/** A free loopback port for the SDK core's exporter, which only this process scrapes. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export interface MetricsEndpoint {
  /** http://host:port/metrics */
  url: string;
  close(): Promise<void>;
}

/**
 * One scrape target per worker process: `GET /metrics` answers our registry followed by the SDK core's
 * exposition (task latencies, slots, polls: `temporal_*`), fetched from the loopback address the core
 * binds. One target rather than two keeps the Prometheus config to one line per worker; the names cannot
 * clash (ours are corella_worker_*, the core's temporal_*). A core that does not answer costs its half only.
 */
export async function serveWorkerMetrics(opts: {
  address: string;
  metrics: WorkerMetrics;
  sdkMetricsUrl?: string;
}): Promise<MetricsEndpoint> {
  const { host, port } = parseAddress(opts.address);
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404).end('not found: GET /metrics\n');
      return;
    }
    void (async () => {
      let body = await opts.metrics.registry.metrics();
      if (opts.sdkMetricsUrl) {
        try {
          const r = await fetch(opts.sdkMetricsUrl, { signal: AbortSignal.timeout(2_000) });
          if (r.ok) body += `\n${await r.text()}`;
        } catch {
          // the SDK half is missing from this scrape; ours is still worth returning
        }
      }
      res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(body);
    })().catch((e: unknown) => {
      res.writeHead(500).end(String(e));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  const bound = typeof a === 'object' && a ? a.port : port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
