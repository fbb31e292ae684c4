import { pino, type DestinationStream, type Logger } from 'pino';
import { logFormatFromEnv } from '../workers/logging.js';

/**
 * The server's JSON logger under `CORELLA_LOG_FORMAT=json`, the same pino line format as the workers' (one
 * object per line on stderr, ISO time, `service` naming the process), so one log pipeline reads both. Fastify
 * adds `reqId` to every request's lines; it is the `requestId` the response carries and the prediction log
 * stores, so a served answer, its log lines and its stored predictions join on one key. `text` (the default)
 * keeps today's plain stderr lines and no per-request logging at all.
 */
export function serveLogger(
  env: NodeJS.ProcessEnv = process.env,
  destination?: DestinationStream,
): Logger | undefined {
  if (logFormatFromEnv(env) !== 'json') return undefined;
  return pino(
    {
      level: (env.CORELLA_LOG_LEVEL ?? 'info').toLowerCase(),
      base: { pid: process.pid, service: 'corella-serve' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}
