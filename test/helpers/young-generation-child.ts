/**
 * A `corella serve` stand-in for the young-generation re-exec test: re-executes itself under
 * `--max-semi-space-size` as the command does, then (in the child) prints its pid and node flags as JSON and
 * waits until it is signalled. SIGTERM ends it with code 0, like the server's graceful stop.
 * Usage: node --import tsx young-generation-child.ts <mb>
 */
import {
  followParent,
  reexecWithYoungGeneration,
  youngGenerationSet,
} from '../../cli/serve-young-generation.js';

const mb = Number(process.argv[2]);
if (!youngGenerationSet()) {
  process.exitCode = await reexecWithYoungGeneration(mb);
} else {
  followParent();
  // As bin/corella.mjs ends a command: an explicit exit (the IPC channel would keep the loop alive). Installed
  // before the report line: until it is, SIGTERM's default action kills the process outright (exit 143),
  // and the test sends SIGTERM as soon as it reads that line.
  process.once('SIGTERM', () => process.exit(0));
  setInterval(() => undefined, 1_000);
  process.stdout.write(`${JSON.stringify({ pid: process.pid, execArgv: process.execArgv })}\n`);
}
