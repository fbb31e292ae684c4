import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileArtifactStore, sha256Hex } from '../../ml/artifacts/store.js';
import { CorellaError } from '../../ml/errors.js';

async function failure(p: Promise<unknown>): Promise<CorellaError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof CorellaError) return e;
    throw e;
  }
  throw new Error('expected a CorellaError, got success');
}

function flipByte(buf: Buffer, at: number): Buffer {
  const copy = Buffer.from(buf);
  copy[at] ^= 0x01;
  return copy;
}

describe('FileArtifactStore repairs itself and verifies named entries', () => {
  let root: string;
  let store: FileArtifactStore;
  let umask: number;
  beforeEach(async () => {
    // A permissive umask, so the modes checked below are the store's doing.
    umask = process.umask(0o022);
    root = join(await mkdtemp(join(tmpdir(), 'corella-repair-')), 'artifacts');
    store = new FileArtifactStore(root);
  });
  afterEach(async () => {
    process.umask(umask);
    await rm(join(root, '..'), { recursive: true, force: true });
  });

  it('put of an existing hash rewrites a corrupt file, and reads then succeed', async () => {
    const data = Buffer.from('a dataset split, say');
    const ref = await store.put(data);
    const path = join(root, ref.sha256);
    await writeFile(path, flipByte(data, 3));
    expect((await failure(store.get(ref.sha256))).code).toBe('ARTIFACT_CORRUPT');
    await store.put(data);
    expect(await readFile(path)).toEqual(data);
    expect((await store.get(ref.sha256)).equals(data)).toBe(true);
  });

  it('putFile of an existing hash rewrites a truncated file', async () => {
    const data = Buffer.alloc(200_000, 9);
    const src = join(root, '..', 'src.bin');
    await writeFile(src, data);
    const ref = await store.putFile(src);
    await writeFile(join(root, ref.sha256), data.subarray(0, 1000));
    expect((await failure(store.localPath(ref.sha256))).code).toBe('ARTIFACT_CORRUPT');
    await store.putFile(src);
    expect(await store.localPath(ref.sha256)).toBe(join(root, ref.sha256));
  });

  it('a corrupt read names the file, the kind of object and the command that repairs it', async () => {
    const ref = await store.put('weights');
    const path = join(root, ref.sha256);
    await writeFile(path, 'weightz');
    const e = await failure(store.get(ref.sha256, 'dataset split train'));
    expect(e.code).toBe('ARTIFACT_CORRUPT');
    expect(e.message).toContain(path);
    expect(e.message).toContain('dataset split train');
    expect(e.message).toContain('corella retrain');
    expect(e.details).toMatchObject({ path, expected: ref.sha256, actual: sha256Hex('weightz') });
    const viaPath = await failure(store.localPath(ref.sha256, 'CRM model'));
    expect(viaPath.message).toContain(path);
    expect(viaPath.message).toContain('CRM model');
  });

  it('put of an intact existing blob refreshes its mtime (gc keeps young blobs)', async () => {
    const ref = await store.put('shared content');
    const path = join(root, ref.sha256);
    const old = new Date(Date.now() - 30 * 86_400_000);
    await utimes(path, old, old);
    await store.put('shared content');
    expect((await stat(path)).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
  });

  it('named entries carry a checksum: a flipped byte is ARTIFACT_CORRUPT naming the file', async () => {
    const manifest = JSON.stringify({ versionId: 'v1', splitArtifacts: { train: 'a'.repeat(64) } });
    await store.putNamed('datasets/v1.json', manifest);
    expect((await store.getNamed('datasets/v1.json'))?.toString()).toBe(manifest);
    const path = join(root, 'named', 'datasets', 'v1.json');
    const raw = await readFile(path);
    // Flip a byte inside the body (the manifest's version id), past the envelope's header.
    const at = raw.indexOf('v1', raw.indexOf('"text"'));
    await writeFile(path, flipByte(raw, at));
    const e = await failure(store.getNamed('datasets/v1.json'));
    expect(e.code).toBe('ARTIFACT_CORRUPT');
    expect(e.message).toContain(path);
    expect(e.message).toContain('dataset manifest');
    // Writing it again (what a re-ingestion does) repairs it.
    await store.putNamed('datasets/v1.json', manifest);
    expect((await store.getNamed('datasets/v1.json'))?.toString()).toBe(manifest);
  });

  it('a truncated named entry is corrupt, not silently parsed', async () => {
    await store.putNamed('runs/r1/crm', JSON.stringify({ sha256: 'b'.repeat(64), epoch: 2 }));
    const path = join(root, 'named', 'runs', 'r1', 'crm');
    const raw = await readFile(path);
    await writeFile(path, raw.subarray(0, raw.length - 5));
    expect((await failure(store.getNamed('runs/r1/crm'))).code).toBe('ARTIFACT_CORRUPT');
  });

  it('reads a pointer written by older code (plain JSON, no checksum)', async () => {
    await mkdir(join(root, 'named', 'runs', 'old'), { recursive: true });
    const legacy = JSON.stringify({ sha256: 'c'.repeat(64), epoch: 1 });
    await writeFile(join(root, 'named', 'runs', 'old', 'crm'), legacy);
    expect((await store.getNamed('runs/old/crm'))?.toString()).toBe(legacy);
  });

  it('named entries keep binary bytes exactly', async () => {
    const bin = Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x41]);
    await store.putNamed('bin/x', bin);
    expect((await store.getNamed('bin/x'))?.equals(bin)).toBe(true);
  });

  it('creates its folders 0700 and its files 0600, and tightens an existing root', async () => {
    const ref = await store.put('private');
    await store.putNamed('runs/r/crm', '{}');
    const src = join(root, '..', 'f.bin');
    await writeFile(src, 'streamed');
    const streamed = await store.putFile(src);
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    for (const dir of [root, join(root, 'tmp'), join(root, 'named'), join(root, 'named', 'runs', 'r')])
      expect(await mode(dir), dir).toBe(0o700);
    for (const file of [ref.sha256, streamed.sha256, 'named/runs/r/crm'])
      expect(await mode(join(root, file)), file).toBe(0o600);

    const oldRoot = join(root, '..', 'old-store');
    await mkdir(oldRoot, { mode: 0o755 });
    await new FileArtifactStore(oldRoot).put('x');
    expect(await mode(oldRoot)).toBe(0o700);
  });
});
