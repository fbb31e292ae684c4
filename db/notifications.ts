/**
 * What the `corella_models` trigger of migration 0002 sends with pg_notify, so a server following an alias
 * learns of a promotion or an applied recalibration at commit instead of at its next poll.
 */

export const MODEL_NOTIFY_CHANNEL = 'corella_models';

export interface ModelNotification {
  modelName: string;
  /** null for a threshold change: it concerns the version whichever alias points at it. */
  alias: string | null;
  versionId: number;
  /** 'alias': an alias was set or moved to versionId; 'alias-removed': it pointed at versionId and is gone. */
  kind: 'alias' | 'alias-removed' | 'threshold';
  /** The new calibrated threshold, for kind 'threshold' (null when cleared). */
  threshold?: number | null;
}

/** Parses a notification payload; undefined for anything that is not one of ours (never throws). */
export function parseModelNotification(payload: string | undefined): ModelNotification | undefined {
  if (!payload) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const kinds = ['alias', 'alias-removed', 'threshold'];
  if (typeof o.modelName !== 'string' || typeof o.versionId !== 'number' || !kinds.includes(o.kind as string))
    return undefined;
  if (o.alias !== null && typeof o.alias !== 'string') return undefined;
  return {
    modelName: o.modelName,
    alias: o.alias,
    versionId: o.versionId,
    kind: o.kind as ModelNotification['kind'],
    ...(o.kind === 'threshold' ? { threshold: typeof o.threshold === 'number' ? o.threshold : null } : {}),
  };
}
