import os from 'node:os';
import { CorellaError } from '../errors.js';

/** `crm.threads`: a thread count, or 'auto' to take what the machine has free when training starts. */
export type CrmThreads = number | 'auto';

/**
 * The most threads 'auto' picks. The kernels cut a 1024-row step into at most 4 chunks of 256 rows (row
 * blocks below that run sgemm measurably slower), so a fifth thread would find nothing to do.
 */
export const AUTO_THREADS_CAP = 4;

export interface ThreadChoice {
  threads: number;
  /** One line for the log: what was asked and, for 'auto', what it saw. */
  reason: string;
}

export interface MachineView {
  /** Cores this process may run on (os.availableParallelism: the affinity mask on Linux). */
  cores: number;
  /** The 1-minute load average. */
  load1: number;
}

function machineNow(): MachineView {
  return { cores: os.availableParallelism(), load1: os.loadavg()[0] };
}

/**
 * Resolves `crm.threads` once, when training starts. 'auto' takes every core this process may use, at most
 * AUTO_THREADS_CAP, whatever the load average says: the pool's workers sleep rather than spin, and the
 * caller never waits for a worker that lost its core (it steals the chunks), so on a busy machine a
 * second thread costs no extra CPU per step and only adds throughput. Measured at load average 12–14 on
 * 2 cores (normal priority, bench shape, docs/crm-speed.md): 1 thread 35–40k samples/s at 7.9–8.8 CPU ms
 * a step, 2 threads 52–61k at 8.6–8.8. The load is still logged with the choice. The choice never changes
 * results: the native kernels are bit-identical at any thread count.
 */
export function chooseCrmThreads(setting: CrmThreads, machine: MachineView = machineNow()): ThreadChoice {
  if (setting !== 'auto') {
    if (!Number.isInteger(setting) || setting < 1 || setting > 64)
      throw new CorellaError(
        'BAD_CONFIG',
        `CRM threads ${JSON.stringify(setting)} is not 'auto' or an integer 1..64 (field threads)`,
        { details: { field: 'threads' } },
      );
    return { threads: setting, reason: `crm.threads ${setting}` };
  }
  const threads = Math.max(1, Math.min(AUTO_THREADS_CAP, machine.cores));
  return {
    threads,
    reason:
      `crm.threads auto: ${threads} (${machine.cores} cores available, load average ` +
      `${machine.load1.toFixed(2)}, cap ${AUTO_THREADS_CAP})`,
  };
}
