import type { Scorer } from '../ml/serving/types.js';

/** One loaded model version; `key` says which version and threshold it serves. */
export interface LoadedModel {
  key: string;
  versionId: number;
  threshold: number;
  scorer: Scorer;
}

interface Slot {
  model: LoadedModel;
  inflight: number;
  retired: boolean;
}

/** A request's hold on one model: everything it scores uses this model, then it must release it. */
export interface Lease {
  model: LoadedModel;
  release(): void;
}

/**
 * The model the server answers with, swapped atomically. A request leases the current model for its whole
 * life, so it never mixes two versions; a swap replaces the slot for new requests at once and disposes the
 * old model only when its last lease is released, so no in-flight request fails.
 */
export class ModelHolder {
  private slot: Slot | undefined;
  private readonly retiring = new Set<Slot>();

  get current(): LoadedModel | undefined {
    return this.slot?.model;
  }

  acquire(): Lease | undefined {
    const slot = this.slot;
    if (!slot) return undefined;
    slot.inflight++;
    let released = false;
    return {
      model: slot.model,
      release: () => {
        if (released) return;
        released = true;
        slot.inflight--;
        if (slot.retired && slot.inflight === 0) this.dispose(slot);
      },
    };
  }

  /** Installs `model` for new requests; the previous one is disposed once idle. */
  install(model: LoadedModel): LoadedModel | undefined {
    const old = this.slot;
    this.slot = { model, inflight: 0, retired: false };
    if (old) {
      old.retired = true;
      if (old.inflight === 0) this.dispose(old);
      else this.retiring.add(old);
    }
    return old?.model;
  }

  private dispose(slot: Slot): void {
    this.retiring.delete(slot);
    slot.model.scorer.dispose().catch(() => undefined);
  }

  /** Disposes everything (server shutdown, after the HTTP server stopped taking requests). */
  async close(): Promise<void> {
    const all = [...this.retiring, ...(this.slot ? [this.slot] : [])];
    this.slot = undefined;
    this.retiring.clear();
    await Promise.all(all.map((s) => s.model.scorer.dispose().catch(() => undefined)));
  }
}
