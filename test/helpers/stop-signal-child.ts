/**
 * A command whose clean stop hangs, for the stop-signal test: it listens with `listenForStop`, prints
 * "ready", prints "stopping" on the first signal and then never finishes, so only the second signal's forced
 * exit can end it. Usage: node --import tsx stop-signal-child.ts
 */
import { listenForStop } from '../../cli/stop-signal.js';

const stop = listenForStop((signal) => process.stdout.write(`stopping ${signal}\n`));
setInterval(() => undefined, 1_000);
process.stdout.write('ready\n');
await stop.stopped;
process.stdout.write(`requested ${String(stop.requested)}\n`);
