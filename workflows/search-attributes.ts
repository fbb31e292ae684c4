/**
 * Search attributes the workflows set, so runs can be filtered in the Temporal UI.
 * Shared by the workflow code (which may not import Node built-ins) and the dev-server launcher.
 */
export const SEARCH_ATTRIBUTES = {
  CorellaDataset: 'Keyword',
  CorellaStage: 'Keyword',
  CorellaModelVersion: 'Keyword',
  CorellaOutcome: 'Keyword',
} as const;

export type CorellaSearchAttribute = keyof typeof SEARCH_ATTRIBUTES;

export const NAMESPACE_DEFAULT = 'corella';
export const TASK_QUEUE_CPU = 'corella-cpu';
export const TASK_QUEUE_GPU = 'corella-gpu';
