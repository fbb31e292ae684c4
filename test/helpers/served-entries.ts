import type { PredictionLogEntry } from '../../serve/prediction-log.js';

/** A request id that encodes its index, so a test can tell which appended entries reached Postgres. */
export function servedRequestId(i: number): string {
  return `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
}

export function servedIndex(requestId: string): number {
  return parseInt(requestId.slice(24), 16);
}

/** The i-th logged request of a stream: `candidates` scored items, every third routed to the LLM. */
export function servedEntry(i: number, modelVersionId: number, candidates = 3): PredictionLogEntry {
  return {
    requestId: servedRequestId(i),
    at: Date.now(),
    modelVersionId,
    user: `u${i % 17}`,
    history: i % 2 === 0 ? [{ item: `h${i % 5}`, rating: 4, ts: 1_000 + i }] : null,
    budgetMs: 150,
    threshold: i % 5 === 0 ? Infinity : i % 7 === 0 ? -Infinity : 0.55,
    candidates: Array.from({ length: candidates }, (_, k) => {
      const pCrm = ((i * 7 + k * 13) % 97) / 100 + 0.005;
      const llm = k % 3 === 0;
      return {
        item: `i${(i + k) % 41}`,
        p: llm ? 0.5 : pCrm,
        pCrm,
        ...(llm ? { pLlm: 0.5 } : {}),
        route: llm ? ('llm' as const) : ('crm' as const),
        entropy: 0.3 + k * 0.01,
        cold: k === 1,
        latencyMs: 2 + k,
      };
    }),
  };
}
