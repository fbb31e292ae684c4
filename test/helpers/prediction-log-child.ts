/**
 * A serving process stand-in for the SIGKILL test: appends served requests with deterministic ids to a
 * PredictionLog in a loop, printing `appended <index>` after each append returns, until it is killed.
 * Usage: node --import tsx prediction-log-child.ts <databaseUrl> <spoolDir> <modelVersionId> <candidates> <firstIndex>
 */
import { writeSync } from 'node:fs';
import { openDatabase } from '../../db/connection.js';
import { PredictionLog } from '../../serve/prediction-log.js';
import { servedEntry } from './served-entries.js';

const [url, spoolDir, version, candidates, first] = process.argv.slice(2);

/**
 * A synchronous write to stdout that waits out a full pipe. The log's flusher thread makes Node set up
 * process.stdout (to forward the worker's output), which puts fd 1 in non-blocking mode, so a parent that
 * reads slowly under load gets EAGAIN here instead of a blocked write.
 */
function say(line: string): void {
  for (;;) {
    try {
      writeSync(1, line);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
}
const handle = openDatabase(url, { onIdleError: () => undefined });
const log = await PredictionLog.open({ db: handle.db, spoolDir, flushIntervalMs: 50, maxBatch: 40 });
say(`flusher ${log.flusherThread}\n`);
for (let i = 0; ; i++) {
  log.append(servedEntry(Number(first) + i, Number(version), Number(candidates)));
  // Synchronous, so the parent never reads a count ahead of what was appended.
  say(`appended ${Number(first) + i}\n`);
  if (i % 10 === 9) await new Promise((r) => setTimeout(r, 2));
}
