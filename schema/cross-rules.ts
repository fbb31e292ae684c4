/**
 * Rules that span sections: each section's schema checks its own fields, but these combinations pass every
 * section and still run a different experiment than the one written (or fail hours in).
 */
import type { z } from 'zod';
import type { CrmSection } from '../ml/crm/config.js';
import type { LlmSection } from '../ml/llm/config.js';
import { AFFINITY_FEATURES } from '../ml/llm/item-affinity.js';
import type { jointSectionSchema } from '../ml/corella/joint-config.js';
import type { PromotionConfig } from '../ml/corella/promotion-config.js';

interface Sections {
  crm: CrmSection;
  llm: LlmSection;
  joint: z.output<typeof jointSectionSchema>;
  promotion: PromotionConfig;
}

export function checkCrossRules(c: Sections, ctx: z.RefinementCtx): void {
  const affinity = Boolean(c.llm.itemAffinity);
  // The adapter's trailing inputs are the log-odds and, with itemAffinity, the affinity features before it;
  // without them a tail past the log-odds silently reads the last dimensions of the hidden state.
  for (const key of ['inputTail', 'skipInputs'] as const) {
    const n = c.joint.adapter[key];
    if (n !== undefined && n > 1 && !affinity)
      ctx.addIssue({
        code: 'custom',
        path: ['joint', 'adapter', key],
        message: `${n} trailing inputs need llm.itemAffinity (the ${AFFINITY_FEATURES.length} affinity features before the log-odds); without it only 1 (the log-odds) is meaningful`,
      });
  }
  // lr.* metrics exist only when the LR baseline is trained beside a DCNv2 model.
  if (c.promotion.metric.startsWith('lr.') && (!c.crm.baseline || c.crm.kind === 'lr'))
    ctx.addIssue({
      code: 'custom',
      path: ['promotion', 'metric'],
      message: `${c.promotion.metric} is not produced: the LR baseline is trained only with crm.kind dcnv2 and crm.baseline true`,
    });
  if (c.crm.kind === 'lr' && c.joint.alignment.pairs?.length)
    ctx.addIssue({
      code: 'custom',
      path: ['joint', 'alignment', 'pairs'],
      message: "crm.kind 'lr' has no layers to align with the adapter",
    });
}
