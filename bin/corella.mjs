#!/usr/bin/env node
// Runs the TypeScript CLI directly through tsx, so there is no build step between a checkout and a run.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
const code = await main(process.argv.slice(2));
process.exitCode = code;
