import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Route, ScoreResult } from '../ml/serving/types.js';

const ROUTES: Route[] = ['crm', 'llm', 'crm-fallback'];

/**
 * Latency buckets: fine below 25 ms, where the CRM-only p99 target (10 ms) sits, so a scrape tells the
 * server's own share of a client's tail (bench/serve.ts reads them); coarse above, where LLM answers land.
 */
const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0065, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.05,
  0.1, 0.25, 0.5, 1, 2.5, 5,
];

/**
 * The service's Prometheus metrics, in a registry of its own (two servers in one test process must not share
 * counters). Routed fraction and fallbacks are counted per candidate, because that is the unit of LLM cost.
 */
export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'endpoint' | 'status'>;
  readonly latency: Histogram<'endpoint'>;
  readonly candidates: Counter<'route'>;
  readonly candidateLatency: Histogram<'route'>;
  readonly fallbacks: Counter<'reason'>;
  readonly llmQueueDepth: Gauge;
  readonly routedFraction: Gauge;
  readonly modelVersion: Gauge<'version'>;
  readonly evaluatedTokensPerRouted: Histogram;
  readonly swaps: Counter<'outcome'>;
  readonly logPending: Gauge;
  private scored = 0;
  private routed = 0;

  constructor(opts: { queueDepth?: () => number; logPending?: () => number } = {}) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'corella_serve_process_' });
    this.requests = new Counter({
      name: 'corella_serve_requests_total',
      help: 'HTTP requests by endpoint and status code',
      labelNames: ['endpoint', 'status'],
      registers,
    });
    this.latency = new Histogram({
      name: 'corella_serve_request_seconds',
      help: 'HTTP request latency by endpoint',
      labelNames: ['endpoint'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.candidates = new Counter({
      name: 'corella_serve_candidates_total',
      help: 'Scored candidates by route (crm, llm, crm-fallback)',
      labelNames: ['route'],
      registers,
    });
    this.candidateLatency = new Histogram({
      name: 'corella_serve_route_seconds',
      help: 'Latency of /v1/score requests by the most expensive route they used',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.fallbacks = new Counter({
      name: 'corella_serve_llm_fallbacks_total',
      help: 'Routed candidates that kept the CRM answer, by reason',
      labelNames: ['reason'],
      registers,
    });
    const queueDepth = opts.queueDepth;
    this.llmQueueDepth = new Gauge({
      name: 'corella_serve_llm_queue_depth',
      help: 'LLM jobs waiting for a slot',
      registers,
      collect() {
        if (queueDepth) this.set(queueDepth());
      },
    });
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.routedFraction = new Gauge({
      name: 'corella_serve_routed_fraction',
      help: 'Fraction of scored candidates above the threshold since start (llm + crm-fallback)',
      registers,
      collect() {
        this.set(self.scored > 0 ? self.routed / self.scored : 0);
      },
    });
    this.modelVersion = new Gauge({
      name: 'corella_serve_model_version',
      help: 'The model version being served (value 1 on its label)',
      labelNames: ['version'],
      registers,
    });
    this.evaluatedTokensPerRouted = new Histogram({
      name: 'corella_serve_llm_evaluated_tokens_per_candidate',
      help: 'LLM tokens evaluated per answered candidate, per request (prefix sharing keeps it small)',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers,
    });
    this.swaps = new Counter({
      name: 'corella_serve_model_swaps_total',
      help: 'Model version swaps by outcome',
      labelNames: ['outcome'],
      registers,
    });
    const pending = opts.logPending;
    this.logPending = new Gauge({
      name: 'corella_serve_prediction_log_pending',
      help: 'Logged predictions not yet in Postgres (spooled locally)',
      registers,
      collect() {
        if (pending) this.set(pending());
      },
    });
    for (const r of ROUTES) this.candidates.inc({ route: r }, 0);
  }

  served(version: string): void {
    this.modelVersion.reset();
    this.modelVersion.set({ version }, 1);
  }

  scoredRequest(result: ScoreResult, seconds: number): void {
    let worst: Route = 'crm';
    // Counted here and added once per route: a labelled inc hashes its labels, 50 times per slate otherwise.
    let crm = 0;
    let llm = 0;
    let fallback = 0;
    for (const c of result.candidates) {
      if (c.route === 'crm') crm++;
      else if (c.route === 'llm') llm++;
      else fallback++;
    }
    if (llm > 0) worst = 'llm';
    else if (fallback > 0) worst = 'crm-fallback';
    this.routed += llm + fallback;
    if (crm > 0) this.candidates.inc({ route: 'crm' }, crm);
    if (llm > 0) this.candidates.inc({ route: 'llm' }, llm);
    if (fallback > 0) this.candidates.inc({ route: 'crm-fallback' }, fallback);
    this.scored += result.candidates.length;
    this.candidateLatency.observe({ route: worst }, seconds);
    if (result.llm.fallbacks > 0)
      this.fallbacks.inc({ reason: result.llm.fallbackReason ?? 'unknown' }, result.llm.fallbacks);
    if (result.llm.answered > 0)
      this.evaluatedTokensPerRouted.observe(result.llm.evaluatedTokens / result.llm.answered);
  }
}
