/**
 * A trained LoRA branch as a model version stores it (issue 19): the GGUF LoRA adapter that llama.cpp
 * loads with the base model, and the small branch artifact (a LoraHead) that says which GGUF, which base
 * and the click head a·z + b. Both go to the artifact store by content, so a retried export writes the
 * same two blobs again (the GGUF writer is deterministic).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ArtifactRef, ArtifactStore } from '../artifacts/store.js';
import { exportLoraGguf } from '../llm/tf/lora-gguf.js';
import type { LoraBranch } from '../llm/tf/lora-branch.js';
import { LoraHead } from './llm-branch-model.js';

export interface ExportedLoraBranch {
  /** The GGUF LoRA adapter file. */
  gguf: ArtifactRef;
  /** The branch artifact (LoraHeadFile JSON), stored in place of the adapter artifact. */
  head: ArtifactRef;
  model: LoraHead;
}

export async function exportLoraBranch(
  store: ArtifactStore,
  branch: LoraBranch<string>,
  base: { modelSha256: string; template: string },
): Promise<ExportedLoraBranch> {
  const dir = await mkdtemp(join(tmpdir(), 'corella-lora-export-'));
  try {
    const path = join(dir, 'lora.gguf');
    await exportLoraGguf(branch.adapter, path, { name: `corella-lora-${base.modelSha256.slice(0, 12)}` });
    const gguf = await store.putFile(path);
    const c = branch.adapter.config;
    const model = new LoraHead({
      kind: 'corella-llm-branch',
      version: 1,
      branch: 'lora',
      loraSha256: gguf.sha256,
      baseModelSha256: base.modelSha256,
      template: base.template,
      head: branch.output,
      lora: { firstLayer: c.firstLayer, rank: c.rank, alpha: c.alpha, targets: [...c.targets] },
    });
    const head = await store.put(model.serialize());
    return { gguf, head, model };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
