import { ScheduleOverlapPolicy, type ScheduleSpec } from '@temporalio/client';
import { TASK_QUEUE_CPU } from '../../workflows/search-attributes.js';
import { EXIT, parse, parseDuration, UsageError } from '../args.js';
import { connectClient } from '../client.js';
import { makeOutput } from '../output.js';

const DEFAULT_ID = 'corella-recalibrate';

/** `corella schedule create|pause|unpause|trigger|delete`: a Temporal Schedule for recalibrateWorkflow. */
export async function schedule(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    every: { type: 'string' },
    cron: { type: 'string' },
    id: { type: 'string' },
    catchup: { type: 'string' },
    model: { type: 'string' },
    'max-routed': { type: 'string' },
    note: { type: 'string' },
    'task-queue': { type: 'string' },
    'window-days': { type: 'string' },
    source: { type: 'string' },
    'shadow-rows': { type: 'string' },
  });
  const out = makeOutput(Boolean(values.json));
  const [action, idArg] = positionals;
  const id = idArg ?? values.id ?? DEFAULT_ID;
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
        const maxRouted = values['max-routed'] !== undefined ? Number(values['max-routed']) : undefined;
        const source = values.source;
        if (source !== undefined && source !== 'dataset' && source !== 'served')
          throw new UsageError(`--source must be dataset or served, got ${JSON.stringify(source)}`);
        const shadowRows = values['shadow-rows'] !== undefined ? Number(values['shadow-rows']) : undefined;
        if (shadowRows !== undefined && !(Number.isInteger(shadowRows) && shadowRows >= 0))
          throw new UsageError(`--shadow-rows must be an integer >= 0, got ${values['shadow-rows']}`);
        await schedules.create({
          scheduleId: id,
          spec,
          action: {
            type: 'startWorkflow',
            workflowType: 'recalibrateWorkflow',
            taskQueue: values['task-queue'] ?? TASK_QUEUE_CPU,
            workflowId: `recalibrate-${id}`,
            args: [
              {
                modelVersionId: values.model,
                maxRoutedFraction: maxRouted,
                windowDays: values['window-days'] !== undefined ? Number(values['window-days']) : undefined,
                queues: values['task-queue'] ? { cpu: values['task-queue'] } : undefined,
                source,
                shadowRows,
              },
            ],
          },
          policies: {
            overlap: ScheduleOverlapPolicy.SKIP,
            catchupWindow: values.catchup ? parseDuration(values.catchup) : '1h',
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
