import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';

let installed = false;

/** Worker SDK logging at CORELLA_LOG_LEVEL (default WARN: state changes of every worker are noise to users). */
export function installWorkerRuntime(level?: LogLevel): void {
  if (installed) return;
  installed = true;
  const lvl = (level ??
    (process.env.CORELLA_LOG_LEVEL?.toUpperCase() as LogLevel | undefined) ??
    'WARN') as LogLevel;
  Runtime.install({ logger: new DefaultLogger(lvl) });
}
