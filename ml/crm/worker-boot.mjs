// Entry of CRM worker threads: workers do not inherit the main thread's tsx loader, so register it here
// before importing the TypeScript worker module named in workerData.entry.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.entry);
