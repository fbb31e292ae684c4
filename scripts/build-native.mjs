#!/usr/bin/env node
/**
 * Builds native/corella_native.c and native/crm_infer.c (one Node-API addon over OpenBLAS) into native/build/corella_native.node.
 * Runs from `npm install`/`npm ci` (postinstall) and by hand: `node scripts/build-native.mjs [--strict]`.
 *
 * The addon is an optional speed-up: without a C compiler, Node's headers or OpenBLAS (Debian:
 * `apt-get install libopenblas-dev`), the build is skipped with a warning and the CRM runs on plain wasm.
 * Only --strict (or CORELLA_NATIVE_STRICT=1) turns a skipped build into a failure.
 * CORELLA_NATIVE_BUILD=0 skips the build outright.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// crm_infer.c (the fused inference forward) shares corella_native.c's thread pool through native/pool.h.
const srcs = ['corella_native.c', 'crm_infer.c'].map((f) => join(root, 'native', f));
const outDir = join(root, 'native', 'build');
const out = join(outDir, 'corella_native.node');
const strict = process.argv.includes('--strict') || process.env.CORELLA_NATIVE_STRICT === '1';

function skip(reason) {
  const msg = `[corella] native CRM kernels not built: ${reason}. The CRM will use the plain wasm backend.`;
  if (strict) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(`warning: ${msg}`);
  process.exit(0);
}

if (process.env.CORELLA_NATIVE_BUILD === '0') skip('CORELLA_NATIVE_BUILD=0');
if (process.platform !== 'linux') skip(`only Linux builds are set up (this is ${process.platform})`);

/** Node's own headers: next to the node binary (official tarballs, Debian/NodeSource packages). */
const headerDirs = [
  process.env.CORELLA_NODE_HEADERS,
  join(dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);
const headers = headerDirs.find((d) => existsSync(join(d, 'node_api.h')));
if (!headers) skip(`node_api.h not found in ${headerDirs.join(', ')} (set CORELLA_NODE_HEADERS)`);

const cc = process.env.CC || 'cc';
try {
  execFileSync(cc, ['--version'], { stdio: 'ignore' });
} catch {
  skip(`no C compiler (${cc})`);
}

// The shared library is enough (we declare the few CBLAS functions ourselves): prefer the -dev symlink,
// else the runtime soname.
const libs = ['-lopenblas', '-l:libopenblas.so.0'];
mkdirSync(outDir, { recursive: true });
const tmp = `${out}.${process.pid}.tmp`;
const errors = [];
for (const lib of libs) {
  const args = [
    '-O3',
    '-fPIC',
    '-shared',
    '-std=c11',
    // No FMA contraction: the Adam loop must round exactly as the JS one it replaces.
    '-ffp-contract=off',
    '-fno-math-errno',
    // No -Werror: a newer compiler's new warning must not turn the build into a silent fallback.
    '-Wall',
    // The kernels' thread pool (pthreads; part of libc from glibc 2.34, a separate library before).
    '-pthread',
    '-fvisibility=hidden',
    `-I${headers}`,
    ...srcs,
    '-o',
    tmp,
    lib,
    '-lm',
    '-Wl,--as-needed',
  ];
  try {
    execFileSync(cc, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    renameSync(tmp, out);
    // Nothing else is written under native/build: `prettier --check .` would see a JSON file there.
    console.log(`[corella] built ${out} (OpenBLAS via ${lib}, node_api.h from ${headers})`);
    process.exit(0);
  } catch (e) {
    errors.push(
      `${lib}: ${String(e.stderr ?? e.message)
        .trim()
        .split('\n')
        .slice(-3)
        .join(' | ')}`,
    );
    rmSync(tmp, { force: true });
  }
}
skip(`compiling against OpenBLAS failed (install libopenblas-dev): ${errors.join('; ')}`);
