import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadNative } from '../../../ml/tf/native.js';

/**
 * 1 and 2 pool threads give the same bits under each of OpenBLAS's x86 sgemm kernels that this CPU can run,
 * not only the one OpenBLAS picks here. Its Haswell kernel (what it runs on AMD EPYC) gives a row other bits
 * in a 1024-row call than in a 256-row one; its SkylakeX kernel does not. So the bit-identity tests of the
 * other files passed on an Intel machine while a thread-count-dependent cut made 1 and 2 threads train
 * different models on an AMD one. Forcing each kernel guards the cut on either machine.
 */
const CHILD = fileURLToPath(new URL('../../helpers/blas-core-child.ts', import.meta.url));
const flags = (() => {
  try {
    return new Set(/^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1].split(/\s+/) ?? []);
  } catch {
    return new Set<string>();
  }
})();
const cores: [string, boolean][] = [
  ['Haswell', flags.has('avx2') && flags.has('fma')],
  ['SkylakeX', ['avx512f', 'avx512bw', 'avx512dq', 'avx512vl'].every((f) => flags.has(f))],
];
const built = loadNative().addon !== undefined;
const child = (env: Record<string, string>) =>
  spawnSync(process.execPath, ['--import', 'tsx', CHILD], {
    env: { ...process.env, ...env, OPENBLAS_VERBOSE: '2' },
    encoding: 'utf8',
  });
// Only an OpenBLAS built with DYNAMIC_ARCH (Debian's, CI's) picks its kernel at load, says which, and takes
// OPENBLAS_CORETYPE; a build for one target cannot be made to run another kernel, so there is nothing to force.
const probe = built && process.arch === 'x64' ? child({}) : undefined;
const dynamicArch = probe !== undefined && /^Core: /m.test(`${probe.stdout}${probe.stderr}`);

describe.runIf(dynamicArch)('row-cut products under each OpenBLAS kernel', () => {
  for (const [core, runs] of cores) {
    it.runIf(runs)(`${core}: matmul and the cross layer give the same bits at 1 and 2 threads`, () => {
      const run = child({ OPENBLAS_CORETYPE: core });
      expect(run.status, run.stderr).toBe(0);
      // OPENBLAS_VERBOSE=2 prints the kernel it loaded ("Core: Haswell"), so a core type it ignored shows.
      expect(`${run.stdout}${run.stderr}`).toMatch(new RegExp(`^Core: ${core}$`, 'm'));
      const lines = run.stdout.trim().split('\n');
      const result = JSON.parse(lines.at(-1)!) as { differ: string[]; checked: string[] };
      expect(result.checked).toHaveLength(5);
      expect(result.differ).toEqual([]);
    });
  }
});
