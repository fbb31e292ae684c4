import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPipelineConfig } from '../../../cli/config.js';
import { repoRoot } from '../../../cli/services/paths.js';
import { pipelineJsonSchema } from '../../../schema/json-schema.js';
import { resolvePipelineConfig } from '../../../schema/pipeline.js';

const configDir = join(repoRoot, 'config');

async function shippedConfigs(): Promise<string[]> {
  return (await readdir(configDir)).filter((f) => f.endsWith('.json') && f !== 'schema.json');
}

describe('shipped configs', () => {
  it('every config in config/ validates, points at the schema, and resolves', async () => {
    const files = await shippedConfigs();
    expect(files).toEqual(expect.arrayContaining(['default.json', 'ml-1m-cpu.json']));
    for (const f of files) {
      const raw = JSON.parse(await readFile(join(configDir, f), 'utf8')) as Record<string, unknown>;
      expect(raw.$schema, f).toBe('./schema.json');
      const config = await loadPipelineConfig(join(configDir, f));
      expect(config).not.toHaveProperty('$schema');
      const resolved = resolvePipelineConfig(config, f);
      expect(resolved.crm.kind, f).toBe('dcnv2');
      expect(resolved.llm.threads, f).toBe(1);
    }
  });

  it('config/schema.json is what `corella config schema` prints', async () => {
    const committed: unknown = JSON.parse(await readFile(join(configDir, 'schema.json'), 'utf8'));
    expect(committed).toEqual(pipelineJsonSchema());
    const r = spawnSync(process.execPath, [join(repoRoot, 'bin', 'corella.mjs'), 'config', 'schema'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(committed);
  }, 150_000);

  it('the JSON Schema is strict and carries the defaults editors show', () => {
    const s = pipelineJsonSchema() as {
      additionalProperties: boolean;
      properties: Record<
        string,
        { additionalProperties?: boolean; properties?: Record<string, { default?: unknown }> }
      >;
    };
    expect(s.additionalProperties).toBe(false);
    expect(Object.keys(s.properties).sort()).toEqual([
      '$schema',
      'calibration',
      'crm',
      'joint',
      'llm',
      'promotion',
    ]);
    expect(s.properties.crm.additionalProperties).toBe(false);
    expect(s.properties.crm.properties?.epochs.default).toBe(3);
    expect(s.properties.llm.properties?.threads.default).toBe('auto');
  });

  it('`corella config show` prints the resolved config; a bad file exits 4 naming the file and the field', () => {
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [join(repoRoot, 'bin', 'corella.mjs'), 'config', ...args], {
        encoding: 'utf8',
        timeout: 120_000,
      });
    const ok = cli(['show', '--config', 'ml-1m-cpu']);
    expect(ok.status).toBe(0);
    const shown = JSON.parse(ok.stdout) as ReturnType<typeof resolvePipelineConfig>;
    // Defaults resolved, including the cross-section ones (the calibration pool's seed and user blocks are
    // the LLM pools' unless set; its size is set: 10,000 rows, the LLM answering the top 20%).
    expect(shown.joint.stage2.crmLearningRate).toBe(1e-4);
    expect(shown.calibration).toMatchObject({
      maxRows: 10000,
      curveMaxFraction: 0.2,
      seed: 11,
      poolBlock: 8,
    });
    expect(shown.joint.poolBlock).toBe(8);
    expect(shown.promotion).toEqual({ metric: 'calibration.hybrid.auc', margin: 0 });

    const bad = join(tmpdir(), `corella-bad-${process.pid}.json`);
    writeFileSync(bad, JSON.stringify({ llm: { historyBlok: 8 } }));
    try {
      const r = cli(['show', '--config', bad]);
      expect(r.status).toBe(4);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(bad);
      expect(r.stderr).toContain('llm.historyBlok: unknown key; did you mean historyBlock?');
    } finally {
      rmSync(bad, { force: true });
    }
  }, 150_000);
});
