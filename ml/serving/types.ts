/**
 * The online scoring contract: what the HTTP service (serve/) and batch scoring (activities/) hand to the
 * serving engine, and what they get back. Plain data only, so the same shapes can be validated at the HTTP
 * edge, logged to Postgres and written to JSON lines.
 */

/** A past interaction supplied with a request (oldest first); `rating` defaults to a positive rating. */
export interface HistoryEvent {
  item: string;
  rating?: number;
  /** Seconds since epoch. */
  ts?: number;
}

export interface ScoreRequest {
  user: {
    id: string;
    /** Values of the dataset's user attributes by field name (e.g. gender, age); unknown values are OOV. */
    features?: Record<string, string>;
  };
  candidates: { item: string }[];
  /** When absent, the user's latest history known to the model's dataset plus the feedback since. */
  history?: HistoryEvent[];
  /** Deadline for this request's LLM work, in ms from arrival; past it routed candidates keep the CRM. */
  budgetMs?: number;
}

/**
 * `crm`: entropy at or below the threshold. `llm`: routed and answered by the LLM branch. `crm-fallback`:
 * routed, but the LLM budget (concurrency, queue, deadline) or the LLM itself failed it, so the CRM answered.
 */
export type Route = 'crm' | 'llm' | 'crm-fallback';

export interface CandidateScore {
  item: string;
  /** The served click probability. */
  p: number;
  route: Route;
  /** Routing entropy in nats (ln 2 for a cold item when the version routes cold items). */
  entropy: number;
  pCrm: number;
  /** Present when the LLM branch answered. */
  pLlm?: number;
  /** The item (or user) is not in the CRM's vocabulary. */
  cold: boolean;
}

export interface ScoreTimings {
  totalMs: number;
  /** Waiting for and running the (micro-batched) CRM. */
  crmMs: number;
  /** Queueing for and running the LLM branch; 0 when nothing was routed. */
  llmMs: number;
}

export interface LlmUsage {
  /** Candidates above the threshold. */
  routed: number;
  /** Routed candidates that the LLM answered. */
  answered: number;
  fallbacks: number;
  /** Why the fallbacks happened: 'deadline' | 'queue-full' | 'llm-unavailable' | 'llm-error'. */
  fallbackReason?: string;
  /** Tokens of the answered candidates' full prompts, and tokens actually evaluated (prefix sharing). */
  promptTokens: number;
  evaluatedTokens: number;
}

export interface ScoreResult {
  candidates: CandidateScore[];
  timings: ScoreTimings;
  llm: LlmUsage;
}

/** Limits on the LLM half, per process. */
export interface LlmBudget {
  /** LLM requests (one per scored request with routed candidates) running at once. */
  maxConcurrency: number;
  /** Requests waiting for an LLM slot; past it, new routed candidates fall back at once. */
  maxQueue: number;
  /** Default per-request deadline when the request names none. */
  defaultBudgetMs: number;
}

export interface ServingLimits {
  /** Candidates per request (default 500). */
  maxCandidates: number;
  /** Items per supplied history. */
  maxHistory: number;
}

/** What the engine exposes to the service. */
export interface Scorer {
  readonly modelVersion: string;
  readonly threshold: number;
  score(req: ScoreRequest, opts?: { signal?: AbortSignal }): Promise<ScoreResult>;
  /** Feedback received while serving extends the user's known history (used when a request has none). */
  observe(event: { user: string; item: string; rating: number; ts: number }): void;
  /** Current LLM queue depth (for metrics). */
  llmQueueDepth(): number;
  dispose(): Promise<void>;
}
