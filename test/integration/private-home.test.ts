import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateSyntheticMovielens } from '../../ml/data/index.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

/** Every file and folder under `root` whose permission bits are not 0700 (folders) / 0600 (files). */
async function notPrivate(root: string): Promise<string[]> {
  const bad: string[] = [];
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p).catch(() => undefined);
    if (!st || st.isSymbolicLink()) return;
    const mode = st.mode & 0o777;
    if (st.isDirectory()) {
      if (mode !== 0o700) bad.push(`${p} ${mode.toString(8)}`);
      for (const name of await readdir(p).catch(() => [] as string[])) await walk(join(p, name));
    } else if (st.isFile() && mode !== 0o600) bad.push(`${p} ${mode.toString(8)}`);
  };
  await walk(root);
  return bad;
}

async function waitFor(
  cond: () => boolean,
  what: string,
  proc: CliProcess,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (proc.child.exitCode !== null)
      throw new Error(`exited ${proc.child.exitCode} before ${what}:\n${proc.stderr()}`);
    if (Date.now() > deadline) throw new Error(`no ${what} after ${timeoutMs} ms:\n${proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('the home is private and no command prints the database password', () => {
  const procs: CliProcess[] = [];
  let dir = '';
  const umask = process.umask(0o022); // what a default shell has: corella must not depend on the caller's
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    process.umask(umask);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('up, doctor, runs, models, gc and serve never show it; everything under the home is 0700/0600', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-private-'));
    const home = join(dir, 'home');
    const data = join(dir, 'data');
    await generateSyntheticMovielens(data, { seed: 9, users: 80, items: 120, ratingsPerUser: 30 });
    const model = join(dir, 'tiny.gguf');
    writeTinyGguf(model, { seed: 5 });
    const config = join(dir, 'tiny.json');
    await writeFile(config, JSON.stringify(tinyPipelineConfig(model)));
    const env = cliEnv(home);

    const up = startCli(
      [
        'up',
        '--data-dir',
        data,
        '--model',
        model,
        '--config',
        config,
        '--keep-alive',
        '--serve',
        '--serve-port',
        '0',
      ],
      env,
    );
    procs.push(up);
    const ready = await up.ready(180_000);
    const fullUrl = (await readFile(ready.databaseUrlFile, 'utf8')).trim();
    const password = decodeURIComponent(new URL(fullUrl).password);
    expect(password.length).toBeGreaterThanOrEqual(16);
    expect(ready.databaseUrlFile).toBe(join(home, 'database-url'));
    expect(ready.databaseUrl).toBe(fullUrl.replace(`:${new URL(fullUrl).password}@`, ':***@'));

    // The run completes and the scoring service comes up: the spool and the artifact store now exist too.
    await waitFor(() => /corella serve: (http:\/\/\S+)/.test(up.stderr()), 'serve', up, 400_000);
    const serveUrl = /corella serve: (http:\/\/\S+)/.exec(up.stderr())![1];
    const scored = await fetch(`${serveUrl}/v1/score`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: { id: '1' }, candidates: [{ item: '1' }, { item: '2' }] }),
    });
    expect(scored.status, await scored.text()).toBe(200);

    const outputs: Record<string, string> = {};
    const stdouts: Record<string, string> = {};
    const commands: string[][] = [
      ['doctor'],
      ['doctor', '--json'],
      ['runs', 'list'],
      ['runs', 'list', '--json'],
      ['models', 'list'],
      ['models', 'list', '--json'],
      ['models', 'show', '1'],
      ['gc', '--dry-run', '--json'],
    ];
    for (const args of commands) {
      const p = startCli(args, env);
      procs.push(p);
      const { code } = await p.exited();
      outputs[args.join(' ')] = p.stdout() + p.stderr();
      stdouts[args.join(' ')] = p.stdout();
      expect(code, `${args.join(' ')}: ${p.stderr()}`).toBe(0);
    }
    const runId = (JSON.parse(stdouts['runs list --json']) as { id: string }[])[0]?.id;
    expect(runId).toBeDefined();
    for (const args of [
      ['runs', 'show', runId],
      ['runs', 'show', runId, '--json'],
    ]) {
      const p = startCli(args, env);
      procs.push(p);
      await p.exited();
      outputs[args.join(' ')] = p.stdout() + p.stderr();
    }
    // A second server beside the first: whether it comes up or refuses, its words are checked too.
    const serve = startCli(['serve', '--port', '0', '--model', '1'], env);
    procs.push(serve);
    await Promise.race([serve.exited(), new Promise((r) => setTimeout(r, 20_000))]);
    if (serve.child.exitCode === null) serve.child.kill('SIGTERM');
    await serve.exited();
    outputs['serve'] = serve.stdout() + serve.stderr();

    up.child.kill('SIGTERM');
    expect((await up.exited()).code, up.stderr()).toBe(0);
    outputs['up'] = up.stdout() + up.stderr();

    for (const [name, text] of Object.entries(outputs)) {
      expect(text.length, name).toBeGreaterThan(0);
      expect(text.includes(password), `${name} prints the database password`).toBe(false);
    }
    expect(outputs.up).toContain('databaseUrlFile');

    // Files and folders under the home: the home itself, Postgres (its data, the password in its metadata),
    // Temporal's SQLite, the artifact store, the serve spool, the database-url file, lock and process files.
    for (const p of [
      home,
      join(home, 'database-url'),
      join(home, 'artifacts'),
      join(home, 'serve-spool'),
      join(home, 'temporal', 'temporal.sqlite'),
      join(home, 'pg', 'corella-embedded.json'),
    ])
      expect((await lstat(p)).isFile() || (await lstat(p)).isDirectory(), p).toBe(true);
    // As root, PostgreSQL runs as a dedicated system user, and cli/services/embedded-postgres.ts grants it search-only
    // permission (o+x: no listing, no reading) on the folders above its data dir: the home may be 0701, and
    // nothing else may differ.
    const asRoot = process.getuid?.() === 0;
    expect(await notPrivate(home)).toEqual(asRoot ? [`${home} 701`] : []);
  }, 600_000);
});
