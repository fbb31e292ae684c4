import type { LogLevel, LogMetadata, Logger } from '@temporalio/worker';
import { pino, type DestinationStream, type Logger as Pino } from 'pino';

const PINO_LEVEL: Record<LogLevel, pino.Level> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

/**
 * The Temporal logger interface on pino: one JSON object per line. The SDK passes the context as metadata:
 * workflow logs carry workflowId, runId and workflowType, activity logs also activityId and activityType,
 * core logs their own fields. They become top-level JSON fields, so a log pipeline can group by run without
 * parsing messages. Writes go to stderr (fd 2), because stdout is the CLI's machine-readable output.
 */
export class PinoTemporalLogger implements Logger {
  readonly pino: Pino;

  constructor(level: LogLevel, destination?: DestinationStream) {
    this.pino = pino(
      {
        level: PINO_LEVEL[level] ?? 'warn',
        base: { pid: process.pid, service: 'corella-worker' },
        timestamp: pino.stdTimeFunctions.isoTime,
        formatters: { level: (label) => ({ level: label }) },
      },
      destination ?? pino.destination({ fd: 2, sync: true }),
    );
  }

  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    this.pino[PINO_LEVEL[level] ?? 'info'](meta ?? {}, message);
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}

/** CORELLA_LOG_FORMAT: `json` (pino lines) or `text` (the SDK's default logger); anything else is an error. */
export function logFormatFromEnv(env: NodeJS.ProcessEnv = process.env): 'json' | 'text' {
  const f = (env.CORELLA_LOG_FORMAT ?? 'text').toLowerCase();
  if (f !== 'json' && f !== 'text') {
    throw new Error(`CORELLA_LOG_FORMAT must be json or text, got ${JSON.stringify(env.CORELLA_LOG_FORMAT)}`);
  }
  return f;
}
