import { ScheduleOverlapPolicy, type ScheduleSpec } from '@temporalio/client';
import type { RecalibrateInput } from '../../activities/types.js';
import { TASK_QUEUE_CPU } from '../../workflows/search-attributes.js';
import { EXIT, parseDuration, UsageError, type ArgsOf } from '../args.js';
import { connectClient } from '../client.js';
import { makeOutput } from '../output.js';
import type { scheduleSpec } from '../specs/schedule.js';

type Flags = Record<string, string | boolean | undefined>;

function numberFlag(
  values: Flags,
  name: string,
  ok: (n: number) => boolean,
  what: string,
): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !ok(n))
    throw new UsageError(`--${name} must be ${what}, got ${JSON.stringify(raw)}`);
  return n;
}

/** The recalibrateWorkflow input a `schedule create` starts, checked before anything connects. */
export function recalibrateInputFrom(values: Flags): RecalibrateInput {
  const source = values.source;
  if (source !== undefined && source !== 'dataset' && source !== 'served')
    throw new UsageError(`--source must be dataset or served, got ${JSON.stringify(source)}`);
  const taskQueue = typeof values['task-queue'] === 'string' ? values['task-queue'] : undefined;
  return {
    modelVersionId: typeof values.model === 'string' ? values.model : undefined,
    maxRoutedFraction: numberFlag(values, 'max-routed', (n) => n >= 0 && n <= 1, 'a fraction in [0, 1]'),
    windowDays: numberFlag(values, 'window-days', (n) => n > 0, 'a number of days > 0'),
    queues: taskQueue ? { cpu: taskQueue } : undefined,
    source,
    shadowRows: numberFlag(values, 'shadow-rows', (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0'),
  };
}

/** `corella schedule create|pause|unpause|trigger|delete`: a Temporal Schedule for recalibrateWorkflow. */
export async function schedule({ values, positionals }: ArgsOf<typeof scheduleSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const [action, idArg] = positionals;
  const id = idArg ?? values.id;
  const input = action === 'create' ? recalibrateInputFrom(values) : undefined;
  const tc = await connectClient();
  try {
    const schedules = tc.client.schedule;
    switch (action) {
      case 'create': {
        if (Boolean(values.every) === Boolean(values.cron))
          throw new UsageError('give exactly one of --every or --cron');
        const spec: ScheduleSpec = values.every
          ? { intervals: [{ every: parseDuration(values.every) }] }
          : { cronExpressions: [values.cron as string] };
        await schedules.create({
          scheduleId: id,
          spec,
          action: {
            type: 'startWorkflow',
            workflowType: 'recalibrateWorkflow',
            taskQueue: values['task-queue'] ?? TASK_QUEUE_CPU,
            workflowId: `recalibrate-${id}`,
            args: [input],
          },
          policies: {
            overlap: ScheduleOverlapPolicy.SKIP,
            catchupWindow: parseDuration(values.catchup),
          },
          state: { note: values.note ?? 'created by corella schedule create' },
        });
        out.result({ scheduleId: id, created: true }, () => `schedule ${id} created`);
        return EXIT.ok;
      }
      case 'pause':
        await schedules.getHandle(id).pause(values.note ?? 'paused by corella');
        break;
      case 'unpause':
        await schedules.getHandle(id).unpause(values.note ?? 'unpaused by corella');
        break;
      case 'trigger':
        await schedules.getHandle(id).trigger(ScheduleOverlapPolicy.ALLOW_ALL);
        break;
      case 'delete':
        await schedules.getHandle(id).delete();
        break;
      case 'show': {
        const d = await schedules.getHandle(id).describe();
        out.result(
          d,
          () =>
            `${id}: ${d.state.paused ? 'paused' : 'active'}, next ${d.info.nextActionTimes[0]?.toISOString() ?? '-'}`,
        );
        return EXIT.ok;
      }
      default:
        throw new UsageError('schedule create|show|pause|unpause|trigger|delete [ID]');
    }
    out.result({ scheduleId: id, action }, () => `schedule ${id}: ${action} done`);
    return EXIT.ok;
  } finally {
    await tc.close();
  }
}
