import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { FileArtifactStore } from './store.js';

/** One content-addressed file on disk. */
export interface StoredBlob {
  sha256: string;
  path: string;
  bytes: number;
  mtimeMs: number;
}

export interface GcPlan {
  /** Blobs nothing references and no writer may still be using: what gc removes. */
  remove: StoredBlob[];
  /** Left-over temp files of writes that never finished (a killed process), older than the cutoff. */
  staleTmp: string[];
  kept: { referenced: number; young: number };
  /** Blobs modified at or after this are kept whatever references them. */
  cutoff: Date;
}

const SHA256_RE = /^[0-9a-f]{64}$/;
const SHA256_ANYWHERE = /[0-9a-f]{64}/g;

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export async function listBlobs(store: FileArtifactStore): Promise<StoredBlob[]> {
  const out: StoredBlob[] = [];
  for (const name of await listDir(store.root)) {
    if (!SHA256_RE.test(name)) continue;
    const path = join(store.root, name);
    const st = await stat(path).catch(() => undefined);
    if (st?.isFile()) out.push({ sha256: name, path, bytes: st.size, mtimeMs: st.mtimeMs });
  }
  return out.sort((a, b) => a.sha256.localeCompare(b.sha256));
}

/**
 * sha256s mentioned by named entries (checkpoint pointers, manifests, feature-cache indexes). The raw file
 * is scanned rather than parsed: whatever a pointer's format (envelope, older plain JSON, even a corrupt
 * one), a blob it names stays.
 */
export async function namedReferences(
  store: FileArtifactStore,
): Promise<{ refs: Set<string>; files: string[] }> {
  const refs = new Set<string>();
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) await walk(p);
      else if (entry.isFile()) {
        files.push(relative(store.namedDir, p));
        for (const m of (await readFile(p, 'latin1')).matchAll(SHA256_ANYWHERE)) refs.add(m[0]);
      }
    }
  };
  await walk(store.namedDir);
  return { refs, files };
}

/**
 * What to remove: blobs referenced by nothing and older than the cutoff. The cutoff is the earlier of
 * `now - olderThanMs` and the start of the oldest running run, because a running workflow writes blobs
 * before anything durable names them (an activity's result travels in workflow history only).
 */
export async function planGc(
  store: FileArtifactStore,
  opts: { referenced: Set<string>; olderThanMs: number; oldestRunningStart?: Date; now?: Date },
): Promise<GcPlan> {
  const now = (opts.now ?? new Date()).getTime();
  let cutoff = now - opts.olderThanMs;
  if (opts.oldestRunningStart) cutoff = Math.min(cutoff, opts.oldestRunningStart.getTime());
  const named = await namedReferences(store);
  const plan: GcPlan = {
    remove: [],
    staleTmp: [],
    kept: { referenced: 0, young: 0 },
    cutoff: new Date(cutoff),
  };
  for (const b of await listBlobs(store)) {
    if (opts.referenced.has(b.sha256) || named.refs.has(b.sha256)) plan.kept.referenced++;
    else if (b.mtimeMs >= cutoff) plan.kept.young++;
    else plan.remove.push(b);
  }
  for (const name of await listDir(store.tmpDir)) {
    const p = join(store.tmpDir, name);
    const st = await stat(p).catch(() => undefined);
    if (st?.isFile() && st.mtimeMs < cutoff) plan.staleTmp.push(p);
  }
  return plan;
}

/**
 * Removes what the plan names. Each blob is stat'ed again just before removal: a writer that found the blob
 * already stored refreshes its mtime (FileArtifactStore.put), and such a blob is then spared.
 */
export async function sweep(
  plan: GcPlan,
): Promise<{ removed: StoredBlob[]; spared: StoredBlob[]; tmpRemoved: number }> {
  const removed: StoredBlob[] = [];
  const spared: StoredBlob[] = [];
  for (const b of plan.remove) {
    const st = await stat(b.path).catch(() => undefined);
    if (!st) continue;
    if (st.mtimeMs !== b.mtimeMs || st.mtimeMs >= plan.cutoff.getTime()) {
      spared.push(b);
      continue;
    }
    await rm(b.path, { force: true });
    removed.push(b);
  }
  let tmpRemoved = 0;
  for (const p of plan.staleTmp) {
    await rm(p, { force: true });
    tmpRemoved++;
  }
  return { removed, spared, tmpRemoved };
}
