// Entry of CRM worker threads: workers do not inherit the main thread's tsx loader, so register it here
// before importing the TypeScript worker module named in workerData.entry (compiled JS from dist/ needs none).
import { workerData } from 'node:worker_threads';

if (!workerData.entry.endsWith('.js')) (await import('tsx/esm/api')).register();
await import(workerData.entry);
