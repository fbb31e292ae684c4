import { join } from 'node:path';

/** Where the .html copy of a run's report goes by default (the artifact store keeps the blob itself). */
export function reportPath(home: string, runId: string): string {
  return join(home, 'reports', `run-${runId}.html`);
}
