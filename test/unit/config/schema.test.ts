import { describe, expect, it } from 'vitest';
import { METRIC_PREFIX } from '../../../activities/metric-keys.js';
import { DEFAULT_PROMOTION, PROMOTION_METRICS } from '../../../ml/corella/promotion-config.js';
import { didYouMean, editDistance } from '../../../ml/config/did-you-mean.js';
import { resolveCalibrationConfig } from '../../../ml/corella/calibration.js';
import { DEFAULT_JOINT_CONFIG, resolveJointConfig } from '../../../ml/corella/joint.js';
import { defaultCrmConfig, resolveCrmConfig } from '../../../ml/crm/config.js';
import { ConfigError } from '../../../schema/errors.js';
import { parsePipelineConfig, resolvePipelineConfig } from '../../../schema/pipeline.js';

function problems(config: unknown): string[] {
  try {
    parsePipelineConfig(config, 'c.json');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error(`accepted ${JSON.stringify(config)}`);
}

describe('did you mean', () => {
  it('finds the closest known key, and nothing when none is close', () => {
    expect(editDistance('epoch', 'epochs')).toBe(1);
    expect(editDistance('lr', 'rl')).toBe(1);
    expect(didYouMean('epoch', ['epochs', 'batchSize'])).toBe('epochs');
    expect(didYouMean('flashattention', ['flashAttention', 'hidden'])).toBe('flashAttention');
    expect(didYouMean('banana', ['epochs', 'batchSize'])).toBeUndefined();
  });
});

describe('pipeline schema', () => {
  it('reports every problem with its path, not only the first', () => {
    expect(
      problems({ crm: { epochs: 0, mlp: [8, 'x'] }, joint: { stage3: { batchsize: 4 } } }).sort(),
    ).toEqual([
      'crm.epochs: expected a number ≥ 1, got 0',
      'crm.mlp[1]: expected a number, got "x"',
      'joint.stage3.batchsize: unknown key; did you mean batchSize?',
    ]);
  });

  it('checks ranges and enums in every section', () => {
    expect(problems({ calibration: { maxRoutedFraction: 1.5 } })[0]).toMatch(
      /^calibration\.maxRoutedFraction: expected a number ≤ 1/,
    );
    expect(problems({ joint: { subset: 'hrd' } })[0]).toBe(
      'joint.subset: expected "random" or "hard", got "hrd"; did you mean hard?',
    );
    expect(problems({ llm: { template: 'papr' } })[0]).toMatch(
      /^llm\.template: expected "paper" or .*got "papr"; did you mean paper\?/,
    );
    expect(problems({ llm: { finetune: { method: 'lora', rank: 0 } } })[0]).toMatch(
      /^llm\.finetune\.rank: expected a number ≥ 1/,
    );
    expect(problems({ llm: { pools: { vaild: 3 } } })[0]).toBe(
      'llm.pools.vaild: unknown key; did you mean valid?',
    );
    expect(problems({ joint: { alpha: 0, beta: 0, gamma: 0 } })[0]).toMatch(/^joint\.alpha: .*all zero/);
  });

  it('cross-section rules', () => {
    expect(problems({ joint: { adapter: { inputTail: 4 } } })[0]).toMatch(
      /^joint\.adapter\.inputTail: .*llm\.itemAffinity/,
    );
    expect(problems({ joint: { adapter: { skipInputs: 4 } } })[0]).toMatch(
      /^joint\.adapter\.skipInputs: .*llm\.itemAffinity/,
    );
    expect(() =>
      parsePipelineConfig({ llm: { itemAffinity: true }, joint: { adapter: { inputTail: 4 } } }),
    ).not.toThrow();
    expect(() => parsePipelineConfig({ joint: { adapter: { inputTail: 1 } } })).not.toThrow();
    expect(problems({ llm: { hidden: false, itemAffinity: true } })[0]).toMatch(
      /^llm\.itemAffinity: .*hidden/,
    );
    expect(problems({ promotion: { metric: 'calibration.hybrid.logloss' } })[0]).toMatch(
      /^promotion\.metric: .*lower is better/,
    );
    expect(problems({ promotion: { metric: 'calibration.hybrid.auk' } })[0]).toMatch(
      /did you mean calibration\.hybrid\.auc\?/,
    );
    expect(problems({ promotion: { metric: 'lr.test.auc' }, crm: { baseline: false } })[0]).toMatch(
      /^promotion\.metric: lr\.test\.auc is not produced/,
    );
    expect(problems({ promotion: { metric: 'lr.test.auc' }, crm: { kind: 'lr' } })[0]).toMatch(
      /^promotion\.metric/,
    );
    expect(() => parsePipelineConfig({ promotion: { metric: 'lr.test.auc' } })).not.toThrow();
    expect(
      problems({
        crm: { kind: 'lr' },
        joint: { alignment: { pairs: [{ crm: 'cross_0', llm: 'adapter_0' }] } },
      })[0],
    ).toMatch(/^joint\.alignment\.pairs: /);
  });

  it('promotion metrics carry the prefixes the workflow gives stage metrics', () => {
    const prefixes: string[] = Object.values(METRIC_PREFIX);
    for (const m of PROMOTION_METRICS) expect(prefixes, m).toContain(m.split('.')[0]);
    expect(PROMOTION_METRICS.some((m) => /logloss/i.test(m))).toBe(false);
    expect(PROMOTION_METRICS).toContain(DEFAULT_PROMOTION.metric);
  });

  it('llm.pools.hybridTest: a count of rows, 0 by default; anything else is a BAD_CONFIG naming the field', () => {
    expect(resolvePipelineConfig({}).llm.pools.hybridTest).toBe(0);
    expect(resolvePipelineConfig({ llm: { pools: { hybridTest: 10000 } } }).llm.pools.hybridTest).toBe(10000);
    for (const bad of [-1, 2.5, '10000']) {
      const attempt = () => resolvePipelineConfig({ llm: { pools: { hybridTest: bad } } } as never);
      expect(attempt).toThrow(/llm\.pools\.hybridTest/);
      expect(attempt).toThrow(expect.objectContaining({ code: 'BAD_CONFIG' }));
    }
  });

  it('resolves cross-section defaults once, and an explicit value wins', () => {
    const r = resolvePipelineConfig({ llm: { historyBlock: 4, pools: { valid: 70, seed: 5 } } });
    expect([r.calibration.maxRows, r.calibration.seed, r.calibration.poolBlock, r.joint.poolBlock]).toEqual([
      70, 5, 4, 4,
    ]);
    const own = resolvePipelineConfig({
      llm: { historyBlock: 4 },
      calibration: { maxRows: 9, poolBlock: 1 },
      joint: { poolBlock: 2 },
    });
    expect([own.calibration.maxRows, own.calibration.poolBlock, own.joint.poolBlock]).toEqual([9, 1, 2]);
    // Resolving is idempotent: a resolved config is a valid config that resolves to itself.
    expect(resolvePipelineConfig(r)).toEqual(r);
  });

  it('the ML resolvers parse with the same schemas (one set of defaults)', () => {
    expect(resolveJointConfig({})).toEqual(DEFAULT_JOINT_CONFIG);
    expect(() => resolveJointConfig({ stage2: { sample: 3 } } as never)).toThrow(
      /joint config field stage2\.sample: unknown key; did you mean samples\?/,
    );
    expect(() => resolveCalibrationConfig({ maxRoutedFractoin: 0.1 } as never)).toThrow(/maxRoutedFraction/);
    expect(resolveCrmConfig(defaultCrmConfig('lr', { seed: 3 }))).toMatchObject({
      kind: 'lr',
      embeddingDim: 1,
      mlp: [],
      seed: 3,
    });
    expect(() => resolveCrmConfig({ ...defaultCrmConfig(), epochs: 3 } as never)).toThrow(
      /CRM config field epochs: unknown key/,
    );
  });
});
