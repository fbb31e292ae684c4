import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorellaError } from '../errors.js';
import { BlobReadCache, DEFAULT_CACHE_BYTES } from './read-cache.js';
import { S3ArtifactStore, s3ClientConfigFromEnv } from './s3-store.js';
import { FileArtifactStore, type ArtifactStore } from './store.js';

/** Where a home's store lives when CORELLA_ARTIFACTS is unset (unchanged from before S3 existed). */
export function defaultArtifactsDir(home: string): string {
  return join(home, 'artifacts');
}

/** Where an S3 store's read-through cache lives: on the worker's own disk, under its home. */
export function artifactCacheDir(home: string): string {
  return join(home, 'cache', 'artifacts');
}

function cacheBytesFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = env.CORELLA_ARTIFACT_CACHE_BYTES;
  if (raw === undefined || raw === '') return DEFAULT_CACHE_BYTES;
  const n = Number(raw);
  if (!(Number.isSafeInteger(n) && n > 0)) {
    throw new CorellaError(
      'BAD_CONFIG',
      `CORELLA_ARTIFACT_CACHE_BYTES must be a positive whole number of bytes, got ${JSON.stringify(raw)}`,
      { details: { field: 'CORELLA_ARTIFACT_CACHE_BYTES', value: raw } },
    );
  }
  return n;
}

/**
 * The artifact store a process of this home uses. CORELLA_ARTIFACTS picks it: `s3://bucket/prefix` (object
 * storage with the standard AWS_* settings, shared by workers on different machines), `file:///dir` or a
 * plain path (a folder, e.g. a shared mount), or unset (the home's own `artifacts/` folder, the default of
 * a single machine). Every process of a deployment must name the same store, or a worker would look for
 * blobs another one wrote elsewhere.
 */
export function openArtifactStore(home: string, env: NodeJS.ProcessEnv = process.env): ArtifactStore {
  const spec = env.CORELLA_ARTIFACTS?.trim();
  if (!spec) return new FileArtifactStore(defaultArtifactsDir(home));
  if (spec.startsWith('s3://')) {
    return new S3ArtifactStore({
      url: spec,
      clientConfig: s3ClientConfigFromEnv(env),
      cache: new BlobReadCache(artifactCacheDir(home), cacheBytesFromEnv(env)),
    });
  }
  if (spec.startsWith('file://')) return new FileArtifactStore(fileURLToPath(spec));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) {
    throw new CorellaError(
      'BAD_CONFIG',
      `CORELLA_ARTIFACTS must be s3://bucket/prefix, file:///dir or a folder, got ${JSON.stringify(spec)}`,
      { details: { field: 'CORELLA_ARTIFACTS', value: spec } },
    );
  }
  return new FileArtifactStore(resolve(spec));
}

/** Whether this process's store is on another machine's disk (objects must be uploaded, not referenced). */
export function isRemoteStore(store: ArtifactStore): store is S3ArtifactStore {
  return store instanceof S3ArtifactStore;
}
