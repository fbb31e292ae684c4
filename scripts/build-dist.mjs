#!/usr/bin/env node
/**
 * Compiles the runtime code to dist/ with tsc (tsconfig.build.json) so that bin/corella.mjs runs
 * JavaScript instead of compiling TypeScript on every start. Runs from `npm ci`/`npm install` (prepare) and
 * by hand: `npm run build`.
 *
 * dist/ mirrors the source tree one level down, so what the code finds relative to its own file must be
 * there too: the native addon (native/build), the migrations and package.json are linked, not copied, so that a rebuild
 * of the addon or a new migration needs no rebuild of dist/; worker-boot.mjs (not TypeScript) is copied.
 * Without TypeScript (`npm ci --omit=dev`) the build is skipped with a notice and the CLI runs through tsx.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { distDir, root, stampPath } from '../bin/dist-state.mjs';

const started = new Date();
rmSync(stampPath, { force: true }); // a failed or interrupted build must not look fresh

let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  console.warn(
    '[corella] dist/ not built: TypeScript is not installed (dev dependency); the CLI runs through tsx.',
  );
  process.exit(0);
}
try {
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], {
    stdio: 'inherit',
    cwd: root,
  });
} catch {
  console.error('[corella] tsc -p tsconfig.build.json failed; dist/ is not used until a build succeeds.');
  process.exit(1);
}

function link(target, at) {
  const path = join(distDir, at);
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { recursive: true, force: true });
  symlinkSync(relative(dirname(path), join(root, target)), path);
}
link('native', 'native');
link('db/migrations', 'db/migrations');
// activities/code-version.ts falls back to ../package.json (an installed copy without .git).
link('package.json', 'package.json');
copyFileSync(join(root, 'ml/crm/worker-boot.mjs'), join(distDir, 'ml/crm/worker-boot.mjs'));
if (!existsSync(join(distDir, 'cli', 'main.js'))) {
  console.error('[corella] tsc emitted no dist/cli/main.js; check tsconfig.build.json');
  process.exit(1);
}
writeFileSync(stampPath, `${JSON.stringify({ builtFrom: started.toISOString() })}\n`);
utimesSync(stampPath, started, started);
