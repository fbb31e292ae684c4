import { describe, expect, it } from 'vitest';
import { CorellaError } from '../../../../ml/errors.js';
import { parseFinetuneConfig } from '../../../../ml/llm/tf/finetune-config.js';

function fieldOf(raw: unknown): string {
  try {
    parseFinetuneConfig(raw);
  } catch (e) {
    expect(e).toBeInstanceOf(CorellaError);
    expect((e as CorellaError).code).toBe('BAD_CONFIG');
    return (e as CorellaError).details.field as string;
  }
  throw new Error('accepted');
}

describe('llm.finetune', () => {
  it('defaults to the frozen LLM and reads a LoRA spec', () => {
    expect(parseFinetuneConfig(undefined)).toEqual({ method: 'none' });
    expect(parseFinetuneConfig({ method: 'none' })).toEqual({ method: 'none' });
    expect(
      parseFinetuneConfig({ method: 'lora', layers: 4, rank: 8, alpha: 16, targets: ['q', 'v', 'o'] }),
    ).toEqual({
      method: 'lora',
      layers: 4,
      rank: 8,
      alpha: 16,
      targets: ['q', 'v', 'o'],
    });
    expect(parseFinetuneConfig({ method: 'lora', layers: 'all' })).toEqual({ method: 'lora', layers: 'all' });
    expect(parseFinetuneConfig({ method: 'lora', frozenThreads: 1 })).toEqual({
      method: 'lora',
      frozenThreads: 1,
    });
    expect(parseFinetuneConfig({ method: 'lora', frozenMemoryMb: 512 })).toEqual({
      method: 'lora',
      frozenMemoryMb: 512,
    });
  });

  it('names the bad field', () => {
    expect(fieldOf({ method: 'qlora' })).toBe('finetune.method');
    expect(fieldOf({ method: 'lora', layers: 0 })).toBe('finetune.layers');
    expect(fieldOf({ method: 'lora', rank: 2.5 })).toBe('finetune.rank');
    expect(fieldOf({ method: 'lora', alpha: 0 })).toBe('finetune.alpha');
    expect(fieldOf({ method: 'lora', targets: ['q', 'wq'] })).toBe('finetune.targets');
    expect(fieldOf({ method: 'lora', targets: ['q', 'q'] })).toBe('finetune.targets');
    expect(fieldOf({ method: 'lora', ranks: 8 })).toBe('finetune.ranks');
    expect(fieldOf({ method: 'none', rank: 8 })).toBe('finetune.rank');
    expect(fieldOf([])).toBe('finetune.method');
    expect(fieldOf({ method: 'lora', frozenMemoryMb: 0 })).toBe('finetune.frozenMemoryMb');
    expect(fieldOf({ method: 'lora', frozenMemoryMb: '2GB' })).toBe('finetune.frozenMemoryMb');
    expect(fieldOf({ method: 'lora', threads: 0 })).toBe('finetune.threads');
    expect(fieldOf({ method: 'lora', threads: 1.5 })).toBe('finetune.threads');
    expect(fieldOf({ method: 'lora', threads: 17 })).toBe('finetune.threads');
    expect(fieldOf({ method: 'lora', frozenThreads: 0 })).toBe('finetune.frozenThreads');
    expect(fieldOf({ method: 'lora', frozenThreads: 1.5 })).toBe('finetune.frozenThreads');
    expect(fieldOf({ method: 'lora', frozenThreads: 17 })).toBe('finetune.frozenThreads');
    expect(fieldOf({ method: 'lora', frozenThreads: '2' })).toBe('finetune.frozenThreads');
  });
});
