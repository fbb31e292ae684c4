import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { activityRunOptions } from '../../../activities/heartbeat.js';
import { parseAddress, WorkerMetrics } from '../../../workers/metrics.js';

describe('WorkerMetrics', () => {
  it('turns the progress activities report into samples/s and LLM tokens/s gauges', async () => {
    const metrics = new WorkerMetrics();
    try {
      const env = new MockActivityEnvironment({ activityType: 'extractLlmFeatures' });
      await env.run(async () => {
        const run = activityRunOptions('llm-features');
        await run.onProgress?.({
          stage: 'llm-features:valid',
          done: 10,
          samplesPerSec: 12.5,
          tokensPerSec: 840,
        });
        await run.onProgress?.({ stage: 'llm-features:valid', done: 20, samplesPerSec: 14 });
      });
      const text = await metrics.registry.metrics();
      expect(text).toContain(
        'corella_worker_samples_per_second{activity="extractLlmFeatures",stage="llm-features:valid"} 14',
      );
      expect(text).toContain(
        'corella_worker_llm_tokens_per_second{activity="extractLlmFeatures",stage="llm-features:valid"} 840',
      );
      expect(text).toContain('corella_worker_progress_reports_total{activity="extractLlmFeatures"} 2');
    } finally {
      metrics.dispose();
    }
  });

  it('stops observing when disposed', async () => {
    const metrics = new WorkerMetrics();
    metrics.dispose();
    await new MockActivityEnvironment({ activityType: 'trainCrm' }).run(async () => {
      await activityRunOptions('crm').onProgress?.({ stage: 'crm', done: 1, samplesPerSec: 5 });
    });
    expect(await metrics.registry.metrics()).not.toContain('activity="trainCrm"');
  });

  it('parses metrics addresses and refuses others', () => {
    expect(parseAddress('0.0.0.0:9464')).toEqual({ host: '0.0.0.0', port: 9464 });
    expect(parseAddress(':9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseAddress('9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(() => parseAddress('localhost')).toThrow(/CORELLA_METRICS_ADDRESS/);
    expect(() => parseAddress('h:70000')).toThrow(/CORELLA_METRICS_ADDRESS/);
  });
});
