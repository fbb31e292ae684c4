/**
 * The serving engine's LLM half with a real tiny GGUF through node-llama-cpp, a real DCNv2 and a stored
 * adapter: offline equivalence with HybridPredictor, prefix sharing, the per-user sequence LRU, the budget
 * (deadline, queue, errors) and shadow scoring.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { HybridPredictor, routingEntropies } from '../../../ml/corella/routing.js';
import { LlmFeatureExtractor } from '../../../ml/llm/features.js';
import { ServingEngine } from '../../../ml/serving/engine.js';
import type { ScoreRequest } from '../../../ml/serving/types.js';
import { rawUser, requestOfRow, servedWorld, type ServedWorld } from './fixtures.js';

let w: ServedWorld;
let engine: ServingEngine;
let extractor: LlmFeatureExtractor;
let adapter: LlmAdapter;

beforeAll(async () => {
  w = await servedWorld({ itemAffinity: true });
  extractor = await LlmFeatureExtractor.open(w.llm, w.store);
  adapter = LlmAdapter.deserialize(await w.store.get(w.adapterArtifact));
}, 180_000);
afterAll(async () => {
  await engine?.dispose();
  await extractor?.dispose();
  adapter?.dispose();
  await w?.cleanup();
});

function knownUserRows(limit: number): number[] {
  const s = w.dataset.splits.test;
  const out: number[] = [];
  for (let r = 0; r < s.size && out.length < limit; r++) if (rawUser(w.dataset, 'test', r)) out.push(r);
  return out;
}

/** A known user with a full history window, and `n` distinct known items as candidates. */
function slate(n: number, userRow = knownUserRows(1)[0]): ScoreRequest {
  const user = rawUser(w.dataset, 'test', userRow)!;
  return { user: { id: user }, candidates: w.dataset.items.ids.slice(0, n).map((item) => ({ item })) };
}

describe('ServingEngine, LLM path', () => {
  it('matches the offline HybridPredictor on test rows: same route, p within 1e-5, same prompt tokens', async () => {
    const split = w.dataset.splits.test;
    const rows = knownUserRows(24);
    const pCrm = await w.crm.predict(split, rows);
    const h = Array.from(routingEntropies(pCrm, split, rows, true)).sort((a, b) => a - b);
    // Half the rows above the threshold, so both routes are compared.
    const threshold = (h[Math.floor(h.length / 2) - 1] + h[Math.floor(h.length / 2)]) / 2;
    engine = await ServingEngine.load(w.store, w.bundle({ threshold, coldItems: true }), {
      budget: { defaultBudgetMs: 60_000, maxQueue: 100 },
    });
    expect(engine.llmUnavailable).toBeUndefined();
    const offline = await new HybridPredictor({
      crm: w.crm,
      adapter,
      llm: extractor,
      items: w.dataset.items,
      threshold,
      coldItems: true,
    }).predict(split, rows);
    const routedOffline = new Set(offline.routedRows);
    expect(routedOffline.size).toBeGreaterThan(0);
    expect(routedOffline.size).toBeLessThan(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const req = requestOfRow(w.dataset, 'test', rows[i]);
      const res = await engine.score(req);
      const c = res.candidates[0];
      expect(c.route).toBe(routedOffline.has(rows[i]) ? 'llm' : 'crm');
      expect(Math.abs(c.p - offline.p[i])).toBeLessThan(1e-5);
      expect(Math.abs(c.pCrm - offline.pCrm[i])).toBeLessThan(1e-5);
      if (c.route === 'llm') expect(Math.abs(c.pLlm! - offline.pLlm[i])).toBeLessThan(1e-5);
      const enc = engine.encoder.encode(req);
      const live = engine.llm!.prompts(enc.history, enc.targets)[0].tokens;
      expect(live).toEqual((await extractor.prompt(split, w.dataset.items, rows[i])).tokens);
    }
  });

  it('routes cold items to the LLM when the version routes them, whatever the CRM says', async () => {
    const user = rawUser(w.dataset, 'test', knownUserRows(1)[0])!;
    const known = w.dataset.items.ids[w.dataset.splits.train.targetItemRows[0]];
    const res = await engine.score({
      user: { id: user },
      candidates: [{ item: 'an-item-nobody-has-seen' }, { item: known }],
    });
    const [cold, warm] = res.candidates;
    expect(cold).toMatchObject({ cold: true, route: 'llm' });
    expect(cold.entropy).toBeCloseTo(Math.LN2, 6);
    expect(cold.p).toBe(cold.pLlm);
    expect(warm.cold).toBe(false);
    expect(warm.entropy).toBeLessThan(Math.LN2);
  });

  it('shares the prompt prefix within a request and keeps it for the user’s next request', async () => {
    await engine?.dispose();
    // Two sequences: the LRU keeps the two most recent users' prefixes.
    engine = await ServingEngine.load(w.store, w.bundle({ threshold: -1 }), {
      budget: { defaultBudgetMs: 60_000 },
      llmSequences: 2,
    });
    const req = slate(50);
    expect(engine.encoder.knownHistory(req.user.id).length).toBe(20);
    const others = knownUserRows(60)
      .map((r) => rawUser(w.dataset, 'test', r)!)
      .filter((u, i, all) => u !== req.user.id && all.indexOf(u) === i);
    const other = { ...slate(50), user: { id: others[0] } };
    const third = { ...slate(50), user: { id: others[1] } };
    // Warms the item vectors (the extractor's cache) so the requests below measure prompt work only; then two
    // other users push this user's prefix out of both sequences.
    await engine.shadowScore(req);
    await engine.score(other);
    await engine.score(third);
    const first = await engine.score(req);
    expect(first.llm.routed).toBe(50);
    expect(first.llm.answered).toBe(50);
    const perCandidate = first.llm.evaluatedTokens / 50;
    const fullPrompt = first.llm.promptTokens / 50;
    expect(perCandidate).toBeLessThanOrEqual(0.3 * fullPrompt);
    // Another user in between takes the other sequence; this user's prefix stays cached on theirs.
    await engine.score(other);
    const second = await engine.score(req);
    expect(second.llm.answered).toBe(50);
    expect(second.llm.evaluatedTokens).toBeLessThan(first.llm.evaluatedTokens);
    expect(second.candidates.map((c) => c.p)).toEqual(first.candidates.map((c) => c.p));
  });

  it('shadowScore answers every candidate whatever the threshold, as the LLM route would', async () => {
    const req = slate(6);
    const routedAll = await engine.score(req);
    const none = await ServingEngine.load(w.store, w.bundle({ threshold: Math.LN2 }), {
      llmSequences: 1,
    });
    try {
      const served = await none.score(req);
      expect(served.candidates.every((c) => c.route === 'crm')).toBe(true);
      const shadow = await none.shadowScore(req);
      expect(shadow.map((s) => s.item)).toEqual(req.candidates.map((c) => c.item));
      shadow.forEach((s, i) => expect(Math.abs(s.pLlm - routedAll.candidates[i].pLlm!)).toBeLessThan(1e-5));
    } finally {
      await none.dispose();
    }
  });

  it('a deadline returns on time: finished prompts answer, the rest fall back, the job runs on', async () => {
    const big = await ServingEngine.load(w.store, w.bundle({ threshold: -1 }), {
      limits: { maxCandidates: 2000 },
      budget: { defaultBudgetMs: 60_000 },
      llmSequences: 1,
    });
    try {
      const req = slate(w.dataset.items.ids.length);
      // Twice: the first one also computes item vectors, which the timed run below finds cached.
      await big.score(req);
      const full = await big.score({ ...req, history: [{ item: w.dataset.items.ids[5], rating: 4 }] });
      expect(full.llm.answered).toBe(req.candidates.length);
      // A budget well inside the time the LLM needs for this slate.
      const budgetMs = Math.max(full.timings.crmMs + 5, full.timings.llmMs / 8);
      expect(full.timings.llmMs).toBeGreaterThan(budgetMs);
      const history = [{ item: w.dataset.items.ids[5], rating: 4 }];
      const res = await big.score({ ...req, history, budgetMs });
      // The prompts finished by the deadline are answered (exactly as without one), the rest fall back.
      const n = req.candidates.length;
      expect(res.llm.fallbackReason).toBe('deadline');
      expect(res.llm.fallbacks).toBeGreaterThan(0);
      expect(res.llm.answered).toBeGreaterThan(0);
      expect(res.llm.answered + res.llm.fallbacks).toBe(n);
      res.candidates.forEach((c, i) => {
        if (c.route === 'llm') expect(Math.abs(c.pLlm! - full.candidates[i].pLlm!)).toBeLessThan(1e-6);
        else {
          expect(c).toMatchObject({ route: 'crm-fallback', p: c.pCrm });
          expect(c.pLlm).toBeUndefined();
        }
      });
      expect(res.candidates.filter((c) => c.route === 'llm')).toHaveLength(res.llm.answered);
      // Nearer the budget than the whole slate's LLM time; a fixed 25 ms margin failed at load average 27,
      // where timers alone run late by that much.
      expect(res.timings.totalMs).toBeLessThan(budgetMs + Math.max(25, (full.timings.llmMs - budgetMs) / 2));
      // The job was still running when the request returned; it stops at its next prompt.
      expect(big.limiter.running).toBe(1);
      expect(big.limiter.fallbacks.deadline).toBe(1);
      // ... and stops soon after, far from finishing the whole slate.
      const t0 = performance.now();
      while (big.limiter.running > 0) await new Promise((r) => setTimeout(r, 2));
      expect(performance.now() - t0).toBeLessThan(full.timings.llmMs / 2);
    } finally {
      await big.dispose();
    }
  });

  it('a full queue and an LLM error give crm-fallback with their reasons, never an error', async () => {
    const tight = await ServingEngine.load(w.store, w.bundle({ threshold: -1 }), {
      budget: { maxConcurrency: 1, maxQueue: 0, defaultBudgetMs: 60_000 },
      llmSequences: 1,
    });
    try {
      const reqs = [slate(30), slate(30, knownUserRows(30)[20])];
      const res = await Promise.all(reqs.map((r) => tight.score(r)));
      const reasons = res.map((r) => r.llm.fallbackReason ?? 'answered').sort();
      expect(reasons).toEqual(['answered', 'queue-full']);
      const full = res.find((r) => r.llm.fallbackReason === 'queue-full')!;
      expect(full.candidates.every((c) => c.route === 'crm-fallback' && c.p === c.pCrm)).toBe(true);
      // A title far longer than the context: the prompt cannot be built, the request still answers.
      const huge = 'x'.repeat(5000);
      const err = await tight.score({ user: { id: 'u' }, candidates: [{ item: huge }] });
      expect(err.llm.fallbackReason).toBe('llm-error');
      expect(err.candidates[0].route).toBe('crm-fallback');
      expect(tight.limiter.fallbacks).toMatchObject({ 'queue-full': 1, 'llm-error': 1 });
      // Beside a normal candidate, only the unbuildable one falls back.
      const mixed = await tight.score({ ...slate(1), candidates: [{ item: huge }, ...slate(1).candidates] });
      expect(mixed.candidates.map((c) => c.route)).toEqual(['crm-fallback', 'llm']);
      expect(mixed.llm).toMatchObject({ routed: 2, answered: 1, fallbacks: 1, fallbackReason: 'llm-error' });
    } finally {
      await tight.dispose();
    }
  });

  it('warmItemVectors caches every item vector while requests keep being answered', async () => {
    // Another item prompt: a cache of its own, so nothing earlier tests computed counts here.
    const llm = { ...w.llm, itemAffinity: { prompt: 'Film: {title}. Genre:', referenceItems: 16 } };
    const warm = await ServingEngine.load(w.store, w.bundle({ threshold: -1, llm }), {
      budget: { defaultBudgetMs: 60_000 },
      llmSequences: 1,
    });
    try {
      const warming = warm.warmItemVectors({ chunk: 8 });
      const during = await warm.score(slate(3));
      expect(during.llm.answered).toBe(3);
      expect(await warming).toBe(w.dataset.items.ids.length);
      const check = await LlmFeatureExtractor.open(llm, w.store);
      try {
        const all = w.dataset.items.ids.map((_, i) => i);
        const { vectors } = await check.itemUnitVectors(w.dataset.items, all);
        expect(vectors.size).toBe(all.length);
        expect(check.modelLoaded).toBe(false);
      } finally {
        await check.dispose();
      }
    } finally {
      await warm.dispose();
    }
  });

  it('an LLM that cannot load leaves the CRM serving, routed candidates fall back as llm-unavailable', async () => {
    const logs: string[] = [];
    const broken = await ServingEngine.load(
      w.store,
      w.bundle({ threshold: -1, llm: { ...w.llm, model: `${w.dir}/missing.gguf` } }),
      { log: (m) => logs.push(m) },
    );
    try {
      expect(logs.join('\n')).toMatch(/missing\.gguf/);
      const res = await broken.score(slate(3));
      expect(res.candidates.every((c) => c.route === 'crm-fallback')).toBe(true);
      expect(res.llm.fallbackReason).toBe('llm-unavailable');
      await expect(broken.shadowScore(slate(2))).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    } finally {
      await broken.dispose();
    }
  });
});
