/**
 * Prediction-log benchmark, printing one JSON object: what `append` costs on the request path (validation,
 * JSON encoding and the synchronous spool write) for slates of 1 and 50 candidates, and how fast the
 * flusher drains a backlog into Postgres (a replay after an outage).
 *
 * Usage: npx tsx bench/prediction-log.ts [--requests 5000] [--database-url URL] [--fsync-ms 50] [--max-batch 500]
 *   Without a URL (or DATABASE_URL) it starts an embedded Postgres in a temp dir.
 * --alloc (with NODE_OPTIONS="--expose-gc --max-semi-space-size=512"): instead, what the flusher allocates
 *   per stored prediction, by stage (read the segment, + decode its lines, + store them: the whole drain),
 *   for segments of 40 50-candidate requests (one 200 ms rotation at 200 requests/s).
 * Target (issue 14): appending a 50-candidate request costs well under the 10 ms p99 of a CRM-only request.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../db/connection.js';
import { startEmbeddedPostgres } from '../cli/services/embedded-postgres.js';
import { migrateDatabase } from '../db/migrate.js';
import { ModelRepository, RunRepository } from '../db/repositories/index.js';
import { writeFileSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import { PredictionLog, type PredictionLogEntry } from '../serve/prediction-log.js';
import { decodeRecord, encodeRecord, SpoolDrainer } from '../serve/spool-drainer.js';
import { SegmentReader, Spool } from '../serve/spool.js';
import type { Database } from '../db/connection.js';

function arg(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const requests = Number(arg('requests', '5000'));
// The spool's background fsync period: an fsync running on the segment can hold up the next write(2).
const fsyncMs = Number(arg('fsync-ms', '50'));
// Requests per flusher transaction (the server's default is serve/storage.ts's).
const maxBatch = Number(arg('max-batch', '500'));
const round = (x: number, d = 3) => Number(x.toFixed(d));

function entry(i: number, version: number, slate: number, prefix: number): PredictionLogEntry {
  return {
    requestId: `${prefix.toString(16).padStart(8, '0')}-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
    at: Date.now(),
    modelVersionId: version,
    user: `u${i % 997}`,
    history: null,
    budgetMs: 200,
    threshold: 0.55,
    candidates: Array.from({ length: slate }, (_, k) => ({
      item: `item-${(i * 31 + k) % 3_000}`,
      p: 0.31,
      pCrm: 0.31,
      route: 'crm' as const,
      entropy: 0.62,
      cold: false,
      latencyMs: 1.7,
    })),
  };
}

/**
 * Bytes the drain allocates per stored prediction, counted as the growth of V8's heap (all spaces) and of
 * ArrayBuffer memory over `reps` segments with nothing collected meanwhile (Node 20 has no
 * `total_allocated_bytes`; a stage in which a GC ran is flagged). Segment files are written before each
 * count starts, so only the flusher's side is counted.
 */
async function allocation(db: Database, version: number, dir: string) {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('--alloc needs NODE_OPTIONS="--expose-gc --max-semi-space-size=512"');
  const perSegment = 40;
  const slate = 50;
  const reps = Number(arg('reps', '25'));
  const allocDir = join(dir, 'alloc');
  let prefix = 100;
  const writeSegment = (seq: number) => {
    prefix++;
    const lines = Array.from({ length: perSegment }, (_, i) => {
      const e = entry(i, version, slate, prefix);
      return encodeRecord({
        requestId: e.requestId,
        at: new Date(e.at),
        modelVersionId: version,
        userId: e.user,
        history: null,
        budgetMs: e.budgetMs,
        threshold: e.threshold,
        candidates: e.candidates.map((c) => ({ ...c, latencyMs: c.latencyMs! })),
      });
    });
    writeFileSync(join(allocDir, `${String(seq).padStart(12, '0')}.jsonl`), lines.join('\n') + '\n');
  };
  const { mkdirSync } = await import('node:fs');
  mkdirSync(allocDir, { recursive: true });
  // Every space, not only new space: a segment read as one string is a large object, allocated outside it.
  const newSpace = () => v8.getHeapSpaceStatistics().reduce((n, x) => n + x.space_used_size, 0);
  const drainer = new SpoolDrainer(db, allocDir, maxBatch, () => {});
  let gcs = 0;
  const obs = new PerformanceObserver((l) => (gcs += l.getEntries().length));
  const stage = async (name: string, fn: (seq: number) => Promise<unknown>) => {
    let seq = 1;
    for (let i = 0; i < 5; i++) {
      writeSegment(seq);
      await fn(seq++); // JIT, pools, prepared plans
    }
    let heap = 0;
    let buffers = 0;
    let collected = false;
    for (let r = 0; r < reps; r++) {
      writeSegment(seq);
      gc();
      gcs = 0;
      obs.observe({ entryTypes: ['gc'] });
      const h0 = newSpace();
      const a0 = process.memoryUsage().arrayBuffers;
      await fn(seq++);
      heap += newSpace() - h0;
      buffers += process.memoryUsage().arrayBuffers - a0;
      await new Promise((res) => setImmediate(res));
      obs.disconnect();
      collected ||= gcs > 0;
    }
    for (const s of Spool.listIn(allocDir)) Spool.remove(s);
    const n = reps * perSegment * slate;
    return {
      stage: name,
      heapBytesPerPrediction: round(heap / n, 1),
      arrayBufferBytesPerPrediction: round(buffers / n, 1),
      collected,
    };
  };
  const seg = (seq: number) => ({ seq, path: join(allocDir, `${String(seq).padStart(12, '0')}.jsonl`) });
  const reader = new SegmentReader();
  const stages = [
    // As the drainer reads: one reused Buffer, a line decoded when its batch is.
    await stage('read segment', async (seq) => {
      reader.load(seg(seq));
      for (let i = 0; i < reader.lineCount; i++) reader.line(i);
    }),
    await stage('+ decode lines', async (seq) => {
      reader.load(seg(seq));
      for (let i = 0; i < reader.lineCount; i++) decodeRecord(reader.line(i));
    }),
    await stage('+ store (the whole drain)', (seq) => drainer.drain(seq + 1)),
  ];
  return { perSegment, slate, reps, stages };
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const dir = await mkdtemp(join(tmpdir(), 'corella-bench-plog-'));
const url0 = arg('database-url') ?? process.env.DATABASE_URL;
const pg = url0 ? undefined : await startEmbeddedPostgres({ dataDir: join(dir, 'pg'), port: 0 });
const handle = openDatabase(url0 ?? pg!.url, { onIdleError: () => undefined });
try {
  await migrateDatabase(handle.db);
  const run = await new RunRepository(handle.db).start({
    workflowId: `bench-plog-${Date.now()}`,
    kind: 'bench',
  });
  const version = (await new ModelRepository(handle.db).register({ sourceRunId: run.id, artifacts: {} }))
    .version.id;
  const out: Record<string, unknown> = { requests, fsyncMs, maxBatch };
  if (process.argv.includes('--alloc')) {
    out.loadAverage = (await import('node:os')).loadavg().map((x) => round(x, 2));
    out.alloc = await allocation(handle.db, version, dir);
  }
  for (const [s, slate] of (process.argv.includes('--alloc') ? [] : [1, 50]).entries()) {
    // Append cost with the flusher stopped (a long interval): a Postgres outage, the spool only grows.
    const spoolDir = join(dir, `spool-${slate}`);
    const log = await PredictionLog.open({
      db: handle.db,
      spoolDir,
      flushIntervalMs: 3_600_000,
      fsyncIntervalMs: fsyncMs,
      maxBatch,
    });
    const times = new Float64Array(requests);
    const entries = Array.from({ length: requests }, (_, i) => entry(i, version, slate, s + 1));
    for (let i = 0; i < requests; i++) {
      const t0 = performance.now();
      log.append(entries[i]);
      times[i] = performance.now() - t0;
      // 200 requests/s, as in the serving benchmark, so background fsyncs interleave with the appends.
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 50));
    }
    times.sort();
    // Then the replay: every spooled request into Postgres.
    const t1 = performance.now();
    await log.flush();
    const drainMs = performance.now() - t1;
    const c = log.counters();
    await log.close();
    out[`slate${slate}`] = {
      appendP50Us: round(quantile(times, 0.5) * 1000, 1),
      appendP99Us: round(quantile(times, 0.99) * 1000, 1),
      appendMaxUs: round(times[times.length - 1] * 1000, 1),
      drainRequestsPerSec: round((c.flushed / drainMs) * 1000, 0),
      drainPredictionsPerSec: round(((c.flushed * slate) / drainMs) * 1000, 0),
      flushed: c.flushed,
      pending: c.pending,
    };
  }
  console.log(JSON.stringify(out, null, 2));
} finally {
  await handle.close();
  await pg?.stop();
  await rm(dir, { recursive: true, force: true });
}
