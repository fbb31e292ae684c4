import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const nodeBuiltins = [
  'assert',
  'buffer',
  'child_process',
  'cluster',
  'crypto',
  'dgram',
  'dns',
  'events',
  'fs',
  'fs/promises',
  'http',
  'http2',
  'https',
  'net',
  'os',
  'path',
  'perf_hooks',
  'process',
  'readline',
  'stream',
  'timers',
  'tls',
  'url',
  'util',
  'v8',
  'vm',
  'worker_threads',
  'zlib',
];

export default tseslint.config(
  { ignores: ['node_modules/**', '.corella/**', 'dist/**', 'db/migrations/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Workflow code is replayed: it must be deterministic and free of Node built-ins.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.flatMap((m) => [
            { name: m, message: 'Workflows must not import Node built-ins.' },
            { name: `node:${m}`, message: 'Workflows must not import Node built-ins.' },
          ]),
          patterns: [
            {
              group: ['../activities/*', '!../activities/types*', '!../activities/metric-keys*'],
              message: 'Workflows import activity types (and the pure metric-key constants) only.',
            },
            { group: ['../db/*', '../ml/*'], message: 'Workflows must not import db or ml code.' },
          ],
        },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'setTimeout', message: 'Use sleep() from @temporalio/workflow.' },
        { name: 'setInterval', message: 'Not deterministic in workflows.' },
        { name: 'process', message: 'Not available in workflows.' },
      ],
      'no-restricted-properties': [
        'error',
        {
          object: 'Math',
          property: 'random',
          message: 'Not deterministic in workflows (the SDK seeds it, prefer uuid4()).',
        },
        {
          object: 'Date',
          property: 'now',
          message: 'Use workflow time via Date from @temporalio/workflow context only with care.',
        },
      ],
    },
  },
  {
    // ml/ is pure model/data code.
    files: ['ml/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@temporalio/*'], message: 'ml/ must not import Temporal.' },
            {
              group: ['pg', 'drizzle-orm', 'drizzle-orm/*', '../db/*', '../../db/*'],
              message: 'ml/ must not import the database.',
            },
          ],
        },
      ],
    },
  },
  {
    // schema/ composes the pipeline config from the section schemas the ML modules own: nothing it imports
    // may reach a service, so the CLI and any client can validate a config before starting anything.
    files: ['schema/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '../activities/*',
                '../db/*',
                '../cli/*',
                '../workflows/*',
                '../serve/*',
                '../workers/*',
              ],
              message: 'schema/ may import the section schemas from ml/ and nothing from the service layers.',
            },
            {
              group: ['@temporalio/*', 'pg', 'drizzle-orm', 'drizzle-orm/*'],
              message: 'schema/ needs no services.',
            },
          ],
        },
      ],
    },
  },
  {
    // serve/ is the online service: Postgres and the artifact store, never Temporal, the CLI or workflow code.
    files: ['serve/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@temporalio/*'],
              message: 'serve/ needs no Temporal: it answers from Postgres and the store.',
            },
            {
              group: ['../cli/*', '../workflows/*'],
              message: 'serve/ must not import the CLI or workflows.',
            },
            {
              group: ['../activities/*', '!../activities/serving-bundle*', '!../activities/corella-config*'],
              message: 'serve/ may share only the serving bundle and config helpers with activities.',
            },
          ],
        },
      ],
    },
  },
  {
    // CLI commands are independent of each other: what two share (starting a retrain, the run summary, the
    // database for a short command) lives in its own module under cli/, so changing one command cannot
    // break another through a helper it happened to export.
    files: ['cli/commands/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['./*', '../commands/*'],
              message:
                'cli commands never import each other: move what they share to its own module in cli/.',
            },
          ],
        },
      ],
    },
  },
  {
    // Option definitions are what `corella --help` and a mistyped flag load: nothing heavy (Temporal, tfjs,
    // the database) may come in through them.
    files: ['cli/specs/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '../*',
                '!../args.js',
                '../../*',
                '@temporalio/*',
                'pg',
                'drizzle-orm',
                'drizzle-orm/*',
              ],
              message:
                'cli/specs/ holds option definitions only: import ../args.js and each other, nothing else.',
            },
          ],
        },
      ],
    },
  },
  {
    // Activities run the joint trainer through its public entry (ml/corella/joint.ts: trainJoint, its config
    // and result types) and draw rows from the row plan; its stage loops, checkpoint format and LLM branch are
    // internals that may change shape (a second LLM branch kind) without an activity noticing.
    files: ['activities/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['../ml/corella/joint-*', '!../ml/corella/joint-config*'],
              message:
                'Activities use the joint trainer through ml/corella/joint.ts (and joint-config.ts, row-plan.ts), not its internals.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
);
