import { defineCommand } from '../args.js';

export const scheduleSpec = defineCommand({
  name: 'schedule',
  summary:
    'a Temporal Schedule that recalibrates the champion (create, show, pause, unpause, trigger, delete)',
  usage: ['create --every DURATION|--cron EXPR', 'show|pause|unpause|trigger|delete [ID]'],
  options: {
    every: { type: 'string', placeholder: 'DURATION', description: 'create: run every 24h, 30m, 2d, …' },
    cron: {
      type: 'string',
      placeholder: 'EXPR',
      description: 'create: run on a cron expression ("0 3 * * *")',
    },
    id: {
      type: 'string',
      placeholder: 'ID',
      description: "the schedule's id (a positional ID wins)",
      default: 'corella-recalibrate',
    },
    catchup: {
      type: 'string',
      placeholder: 'DURATION',
      description: 'create: how late a missed run may still start',
      default: '1h',
    },
    model: {
      type: 'string',
      placeholder: 'VERSION',
      description: 'create: recalibrate this model version',
      defaultText: 'the champion',
    },
    'max-routed': {
      type: 'string',
      placeholder: 'FRACTION',
      description: 'create: the largest share of requests the threshold may send to the LLM, in [0, 1]',
    },
    note: {
      type: 'string',
      placeholder: 'TEXT',
      description: "the schedule's note (create, pause, unpause)",
      defaultText: 'created/paused/unpaused by corella',
    },
    'task-queue': {
      type: 'string',
      placeholder: 'NAME',
      description: 'create: the task queue the workflow and its activities run on',
      defaultText: 'the cpu queue',
    },
    'window-days': {
      type: 'string',
      placeholder: 'DAYS',
      description: 'create: how many days of served traffic to recalibrate on (with --source served)',
    },
    source: {
      type: 'string',
      placeholder: 'dataset|served',
      description: "create: recalibrate on the dataset's calibration split or on logged served traffic",
      defaultText: 'dataset',
    },
    'shadow-rows': {
      type: 'string',
      placeholder: 'N',
      description: 'create: LLM shadow scores to collect for served recalibration',
    },
  },
  positionals: true,
  examples: [
    'corella schedule create --every 24h --source served --window-days 7',
    'corella schedule pause --note "holiday traffic"',
  ],
});
