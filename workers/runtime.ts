import { DefaultLogger, Runtime, type LogLevel, type Logger } from '@temporalio/worker';
import { logFormatFromEnv, PinoTemporalLogger } from './logging.js';
import { freeLoopbackPort, serveWorkerMetrics, WorkerMetrics, type MetricsEndpoint } from './metrics.js';

let installed = false;

function levelFromEnv(level?: LogLevel): LogLevel {
  return (level ??
    (process.env.CORELLA_LOG_LEVEL?.toUpperCase() as LogLevel | undefined) ??
    'WARN') as LogLevel;
}

/** The SDK's logger: its text DefaultLogger, or pino JSON lines when CORELLA_LOG_FORMAT=json. */
function workerLogger(level: LogLevel): Logger {
  return logFormatFromEnv() === 'json' ? new PinoTemporalLogger(level) : new DefaultLogger(level);
}

/** In JSON mode core (Rust) logs are forwarded to the same logger, so stderr has no stray text lines. */
function coreLogging(level: LogLevel): {
  logging?: { forward: object; filter: { core: LogLevel; other: LogLevel } };
} {
  return logFormatFromEnv() === 'json'
    ? { logging: { forward: {}, filter: { core: level, other: level } } }
    : {};
}

/**
 * Worker SDK logging at CORELLA_LOG_LEVEL (default WARN: state changes of every worker are noise to users),
 * in the format CORELLA_LOG_FORMAT says. The Runtime can be installed once per process, so a second call
 * (or one after installWorkerObservability) does nothing.
 */
export function installWorkerRuntime(level?: LogLevel): void {
  if (installed) return;
  installed = true;
  const lvl = levelFromEnv(level);
  Runtime.install({
    logger: workerLogger(lvl),
    telemetryOptions: coreLogging(lvl),
  });
}

export interface WorkerObservability {
  /** Our metrics, when CORELLA_METRICS_ADDRESS asked for them (workers time activities through it). */
  metrics?: WorkerMetrics;
  endpoint?: MetricsEndpoint;
  close(): Promise<void>;
}

/**
 * installWorkerRuntime plus, when CORELLA_METRICS_ADDRESS is set (`host:port`, `:port`), a Prometheus
 * endpoint there with the SDK runtime's metrics (the core's exporter, bound to a private loopback port and
 * relayed; see serveWorkerMetrics) and ours. Unset, nothing listens: a laptop's `corella up` opens no ports.
 */
export async function installWorkerObservability(level?: LogLevel): Promise<WorkerObservability> {
  const address = process.env.CORELLA_METRICS_ADDRESS?.trim();
  if (!address || installed) {
    installWorkerRuntime(level);
    return { close: async () => undefined };
  }
  installed = true;
  const lvl = levelFromEnv(level);
  const corePort = await freeLoopbackPort();
  Runtime.install({
    logger: workerLogger(lvl),
    telemetryOptions: {
      ...coreLogging(lvl),
      metrics: {
        prometheus: {
          bindAddress: `127.0.0.1:${corePort}`,
          countersTotalSuffix: true,
          useSecondsForDurations: true,
        },
      },
    },
  });
  const metrics = new WorkerMetrics();
  const endpoint = await serveWorkerMetrics({
    address,
    metrics,
    sdkMetricsUrl: `http://127.0.0.1:${corePort}/metrics`,
  });
  return {
    metrics,
    endpoint,
    async close() {
      await endpoint.close();
      metrics.dispose();
    },
  };
}
