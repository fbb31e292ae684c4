#!/usr/bin/env node
// Runs the TypeScript CLI directly through tsx, so there is no build step between a checkout and a run.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
const code = await main(process.argv.slice(2));
// The command has finished its work and closed what it opened; native libraries (llama.cpp, tfjs) may still
// hold the event loop open, so exit explicitly (stdout/stderr writes are synchronous on Linux pipes and files).
process.exit(code);
