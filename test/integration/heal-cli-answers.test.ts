import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../db/connection.js';
import { RunRepository } from '../../db/repositories/runs.js';
import type { RunRow } from '../../db/schema/index.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { movielensLines, writeMovielens } from '../helpers/datasets.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

describe('honest answers: exit codes of a bad dataset, run id prefixes, attempts, a home without a database', () => {
  const procs: CliProcess[] = [];
  let dir = '';
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const run = async (
    args: string[],
    env: NodeJS.ProcessEnv,
  ): Promise<{ code: number | null; out: string; err: string }> => {
    const p = startCli(args, env);
    procs.push(p);
    const { code } = await p.exited();
    return { code, out: p.stdout(), err: p.stderr() };
  };

  it('a bad dataset exits 4 under up and retrain --wait; the re-run keeps the first attempt; runs show takes a prefix', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-cli-'));
    const home = join(dir, 'home');
    const env = cliEnv(home);

    // A read-only command on a home where nothing ran says so, and creates no database.
    const empty = await run(['runs', 'list'], env);
    expect(empty.code, empty.err).toBe(3);
    expect(empty.err).toMatch(/no database in .* yet: nothing has run on this home/);
    expect(existsSync(join(home, 'pg'))).toBe(false);

    // One malformed line in ratings.dat: the ingest activity rejects it (bad input, exit 4).
    const lines = movielensLines({ users: 10, movies: 20 });
    lines.ratings[3] = '1::2::five::978300760';
    const data = await writeMovielens(join(dir, 'bad'), lines);
    const model = join(dir, 'tiny.gguf');
    writeTinyGguf(model, { seed: 3 });
    const config = join(dir, 'tiny.json');
    await writeFile(config, JSON.stringify(tinyPipelineConfig(model)));
    const runArgs = ['--data-dir', data, '--model', model, '--config', config];

    const up = await run(['up', ...runArgs], env);
    expect(up.code, up.err.slice(-3000)).toBe(4);
    expect(up.out).toMatch(/FAILED: .*ratings\.dat:4/);

    const stack = startCli(['up', '--no-run'], env);
    procs.push(stack);
    const ready = await stack.ready(180_000);
    const again = await run(['retrain', '--wait', ...runArgs], env);
    expect(again.code, again.err.slice(-3000)).toBe(4);
    expect(again.out).toMatch(/ratings\.dat:4/);

    const h = openDatabase((await readFile(ready.databaseUrlFile, 'utf8')).trim());
    try {
      const rows = await new RunRepository(h.db).list();
      if (rows.length !== 1)
        console.log(
          JSON.stringify(
            rows.map((r) => ({
              id: r.id,
              workflowId: r.workflowId,
              kind: r.kind,
              status: r.status,
              attempt: r.attempt,
              error: r.error?.slice(0, 200),
            })),
          ),
          '\n--- up:\n',
          up.out,
          '\n--- retrain --wait:\n',
          again.err.slice(-3000),
          again.out,
        );
      expect(rows).toHaveLength(1);
      const row = rows[0] as RunRow;
      if (row.attempt !== 2)
        console.log(JSON.stringify(row), '\n--- retrain --wait:\n', again.err.slice(-3000), again.out);
      // The second attempt failed too, and the first attempt's error is kept beside it.
      expect(row).toMatchObject({ status: 'failed', attempt: 2 });
      expect(row.error).toMatch(/^BAD_DATASET: .*ratings\.dat:4/);
      expect(row.attempts).toHaveLength(1);
      expect(row.attempts[0]).toMatchObject({ attempt: 1, status: 'failed' });
      expect(row.attempts[0].error).toMatch(/^BAD_DATASET: .*ratings\.dat:4/);

      // The 8 characters `runs list` prints are enough for `runs show`.
      const shown = await run(['runs', 'show', row.id.slice(0, 8), '--json'], env);
      expect(shown.code, shown.err).toBe(0);
      expect((JSON.parse(shown.out) as { run: { id: string } }).run.id).toBe(row.id);

      // A prefix two runs share is refused, naming both.
      const other = await new RunRepository(h.db).start({ workflowId: 'retrain-probe', kind: 'probe' });
      const ambiguous = await run(['runs', 'show', 'retrain-'], env);
      expect(ambiguous.code).toBe(4);
      expect(ambiguous.err).toContain('is ambiguous');
      expect(ambiguous.err).toContain(row.id.slice(0, 8));
      expect(ambiguous.err).toContain(other.id.slice(0, 8));
      const none = await run(['runs', 'show', 'zzzz'], env);
      expect(none.code).toBe(4);
      expect(none.err).toContain('no run zzzz');
    } finally {
      await h.close();
      stack.child.kill('SIGTERM');
      await stack.exited();
    }
  }, 400_000);
});
