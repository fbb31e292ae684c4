#!/usr/bin/env node
// Runs the compiled CLI in dist/ when it is at least as new as every source file, else the TypeScript
// sources through tsx: an installed corella starts in a fraction of a second (tsx's on-the-fly compile took
// ~3 s for `--help`), and a developer who edits a .ts file runs that edit, never stale JavaScript.
// CORELLA_TSX=1 forces tsx. We set it for our children when we chose tsx, so `corella up`'s workers run the
// same code as their parent; when we chose dist/ they check freshness themselves (and so never run stale JS).
import { distStaleness } from './dist-state.mjs';

function staleness() {
  if (process.env.CORELLA_TSX === '1') return 'CORELLA_TSX=1';
  try {
    return distStaleness();
  } catch (e) {
    return `cannot tell whether dist/ is fresh (${e.message})`; // when in doubt, run the sources
  }
}
const stale = staleness();
let main;
if (stale === undefined) {
  if (process.env.CORELLA_DEBUG) process.stderr.write('corella: running dist/ (compiled)\n');
  ({ main } = await import('../dist/cli/main.js'));
} else {
  if (process.env.CORELLA_DEBUG) process.stderr.write(`corella: running the sources through tsx: ${stale}\n`);
  process.env.CORELLA_TSX = '1';
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../cli/main.ts'));
}
const code = await main(process.argv.slice(2));
// The command has finished its work and closed what it opened; native libraries (llama.cpp, tfjs) may still
// hold the event loop open, so exit explicitly (stdout/stderr writes are synchronous on Linux pipes and files).
process.exit(code);
