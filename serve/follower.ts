import pg from 'pg';
import type { LoadedModel, ModelHolder } from './model-holder.js';

/** What the follower needs to know about the ref it follows right now. */
export interface ResolvedRef {
  versionId: number;
  threshold: number;
}

export interface FollowerOptions {
  databaseUrl: string;
  holder: ModelHolder;
  /** The version and threshold that the followed ref names now (undefined: it names none yet). */
  resolve(): Promise<ResolvedRef | undefined>;
  /** Loads a model for a resolved ref; may take seconds (the LLM), runs beside serving. */
  load(ref: ResolvedRef): Promise<LoadedModel>;
  /** Fallback poll when notifications are lost (a reconnect, a proxy that drops LISTEN). Default 5 s. */
  pollMs?: number;
  channel?: string;
  log?(msg: string): void;
  onSwap?(from: LoadedModel | undefined, to: LoadedModel): void;
  onSwapError?(e: unknown): void;
}

export const MODELS_CHANNEL = 'corella_models';

export function modelKey(r: ResolvedRef): string {
  return `${r.versionId}@${r.threshold}`;
}

/**
 * Keeps the holder on the version its ref (an alias or a version id) names. Postgres LISTEN/NOTIFY on alias
 * and threshold changes makes a promotion visible within milliseconds; the poll is the safety net. Any
 * notification just triggers a re-resolve, so a lost or duplicated one can do no harm.
 */
export class ModelFollower {
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: FollowerOptions) {}

  /** Resolves and loads the first model (if the ref names one), then starts listening and polling. */
  async start(): Promise<void> {
    await this.check();
    await this.listen();
    this.timer = setInterval(() => void this.check(), this.o.pollMs ?? 5_000);
    this.timer.unref();
  }

  /** Re-resolves the ref, and loads and installs a new model when it moved. Concurrent calls coalesce. */
  check(): Promise<void> {
    if (this.checking) {
      this.again = true;
      return this.checking;
    }
    this.checking = (async () => {
      do {
        this.again = false;
        try {
          const ref = await this.o.resolve();
          if (!ref || this.closed) continue;
          if (this.o.holder.current?.key === modelKey(ref)) continue;
          const model = await this.o.load(ref);
          if (this.closed) {
            await model.scorer.dispose();
            continue;
          }
          const from = this.o.holder.install(model);
          this.o.onSwap?.(from, model);
        } catch (e) {
          // Keep serving the current model; the next notification or poll tries again.
          this.o.onSwapError?.(e);
          this.o.log?.(`model follower: ${e instanceof Error ? e.message : String(e)}`);
        }
      } while (this.again && !this.closed);
    })().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.o.databaseUrl });
    client.on('error', () => this.reconnect(client));
    client.on('end', () => this.reconnect(client));
    client.on('notification', () => void this.check());
    try {
      await client.connect();
      await client.query(`LISTEN ${this.o.channel ?? MODELS_CHANNEL}`);
      this.client = client;
      // Something may have moved while we were not listening.
      void this.check();
    } catch {
      this.reconnect(client);
    }
  }

  private reconnect(client: pg.Client): void {
    if (this.closed || this.reconnectTimer) return;
    if (this.client === client) this.client = undefined;
    client.end().catch(() => undefined);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.listen();
    }, 1_000);
    this.reconnectTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    await this.checking?.catch(() => undefined);
    await this.client?.end().catch(() => undefined);
  }
}
