import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileArtifactStore, sha256Hex } from '../../ml/artifacts/store.js';
import { CorellaError } from '../../ml/errors.js';

describe('FileArtifactStore', () => {
  let root: string;
  let store: FileArtifactStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'corella-store-'));
    store = new FileArtifactStore(root);
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  async function code(p: Promise<unknown>): Promise<string | undefined> {
    try {
      await p;
      return undefined;
    } catch (e) {
      return e instanceof CorellaError ? e.code : `not typed: ${String(e)}`;
    }
  }

  it('stores content under its sha256, idempotently, and reads it back verified', async () => {
    const ref = await store.put('hello corella');
    expect(ref.sha256).toBe(sha256Hex('hello corella'));
    expect(ref.bytes).toBe(13);
    expect(ref.uri).toBe(`file://${join(root, ref.sha256)}`);
    expect((await store.get(ref.sha256)).toString()).toBe('hello corella');
    await store.put('hello corella');
    // One blob, no temp files left behind.
    expect((await readdir(root)).filter((n) => n !== 'tmp' && n !== 'named')).toEqual([ref.sha256]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('stores a file by streaming it', async () => {
    const src = join(root, 'src.bin');
    const data = Buffer.alloc(300_000, 7);
    await writeFile(src, data);
    const ref = await store.putFile(src);
    expect(ref).toMatchObject({ sha256: sha256Hex(data), bytes: data.length });
    expect(await store.localPath(ref.sha256)).toBe(join(root, ref.sha256));
  });

  it('detects a corrupted blob on read', async () => {
    const ref = await store.put('precious weights');
    await writeFile(join(root, ref.sha256), 'tampered');
    expect(await code(store.get(ref.sha256))).toBe('ARTIFACT_CORRUPT');
    expect(await code(store.localPath(ref.sha256))).toBe('ARTIFACT_CORRUPT');
  });

  it('says which artifact is missing', async () => {
    expect(await code(store.get('0'.repeat(64)))).toBe('ARTIFACT_NOT_FOUND');
    expect(await store.has('0'.repeat(64))).toBe(false);
  });

  it('rejects names that could escape the store', async () => {
    for (const bad of ['../x', 'a/../../x', '/etc/passwd', 'a/./b', '', '..', 'a//b']) {
      expect(await code(store.putNamed(bad, 'x')), bad).toBe('BAD_ARTIFACT_NAME');
      expect(await code(store.getNamed(bad)), bad).toBe('BAD_ARTIFACT_NAME');
    }
    for (const bad of ['../etc', 'A'.repeat(64), 'abc'])
      expect(await code(store.get(bad)), bad).toBe('BAD_ARTIFACT_NAME');
  });

  it('keeps small named pointers that can be replaced and deleted', async () => {
    await store.putNamed('runs/r1/crm-checkpoint', 'v1');
    await store.putNamed('runs/r1/crm-checkpoint', 'v2');
    expect((await store.getNamed('runs/r1/crm-checkpoint'))?.toString()).toBe('v2');
    await store.deleteNamed('runs/r1/crm-checkpoint');
    expect(await store.getNamed('runs/r1/crm-checkpoint')).toBeUndefined();
  });
});
