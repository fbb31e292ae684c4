import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BINARY_HEADER_BYTES,
  openNamed,
  sealNamed,
  sealNamedBinary,
  sealNamedJson,
} from '../../../ml/artifacts/named-envelope.js';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { CorellaError } from '../../../ml/errors.js';

/**
 * The named-entry envelope in both forms: binary (`named/2`) for bodies that are not UTF-8, the readable
 * JSON form (`named/1`) for text, and what older code left on disk (JSON envelopes with base64 bodies,
 * plain bytes). Every damaged binary entry must be ARTIFACT_CORRUPT naming the entry, in both reads.
 */
const root = mkdtempSync(join(tmpdir(), 'corella-named-envelope-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
const freshStore = () => new FileArtifactStore(join(root, `s${n++}`));
const fileOf = (store: FileArtifactStore, name: string) => join(store.namedDir, name);
/** A ~450 KB body that is not UTF-8, like a frozen-prefix entry (f32 rows). */
const bigBody = () => Buffer.concat([Buffer.from([0xff, 0xfe]), randomBytes(457_006)]);

function flip(buf: Buffer, at: number): Buffer {
  const out = Buffer.from(buf);
  out[at] ^= 0x01;
  return out;
}

function corruptError(fn: () => unknown): CorellaError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CorellaError);
    return e as CorellaError;
  }
  throw new Error('expected ARTIFACT_CORRUPT, the read succeeded');
}

async function corruptErrorAsync(p: Promise<unknown>): Promise<CorellaError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CorellaError);
    return e as CorellaError;
  }
  throw new Error('expected ARTIFACT_CORRUPT, the read succeeded');
}

describe('binary named envelope', () => {
  it.each([
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from([0xff])],
    ['450 KB', bigBody()],
  ])('round-trips a %s body bit for bit', (_, body) => {
    const sealed = sealNamedBinary(body);
    expect(sealed.byteLength).toBe(BINARY_HEADER_BYTES + body.byteLength);
    const opened = openNamed(sealed);
    expect(opened).toMatchObject({ ok: true, legacy: false });
    expect(opened.ok && opened.body.equals(body)).toBe(true);
  });

  it('the stores write a non-UTF-8 body in the binary form: header + the raw bytes, no base64', async () => {
    const store = freshStore();
    const body = bigBody();
    await store.putNamed('lora-frozen/m/k/a.bin', body);
    const raw = await readFile(fileOf(store, 'lora-frozen/m/k/a.bin'));
    expect(raw.byteLength).toBe(BINARY_HEADER_BYTES + body.byteLength);
    expect(raw.subarray(BINARY_HEADER_BYTES).equals(body)).toBe(true);
    expect(raw.subarray(8, 40).toString('hex')).toBe(createHash('sha256').update(body).digest('hex'));
    expect((await store.getNamed('lora-frozen/m/k/a.bin'))!.equals(body)).toBe(true);
    expect(store.getNamedSync('lora-frozen/m/k/a.bin')!.equals(body)).toBe(true);
    // Idempotent: writing the same bytes again leaves the same file.
    await store.putNamed('lora-frozen/m/k/a.bin', body);
    expect((await readFile(fileOf(store, 'lora-frozen/m/k/a.bin'))).equals(raw)).toBe(true);
  });

  const body = bigBody();
  const sealed = sealNamedBinary(body);
  it.each([
    ['a flipped body byte', flip(sealed, BINARY_HEADER_BYTES + 200_000), /hashes to/],
    ['a flipped last body byte', flip(sealed, sealed.length - 1), /hashes to/],
    ['a flipped magic byte', flip(sealed, 0), /damaged header/],
    ['a flipped magic byte (middle)', flip(sealed, 4), /damaged header/],
    ['a flipped checksum byte', flip(sealed, 20), /checksum says/],
    ['a flipped length byte', flip(sealed, 40), /holds 457008 bytes, its checksum says/],
    ['truncation inside the body', sealed.subarray(0, sealed.length - 1), /holds 457007 bytes/],
    ['truncation inside the header', sealed.subarray(0, BINARY_HEADER_BYTES - 1), /shorter than its/],
    ['truncation inside the magic', sealed.subarray(0, 3), /shorter than its/],
  ])('%s is ARTIFACT_CORRUPT naming the entry, in getNamed and getNamedSync', async (_, damaged, why) => {
    const store = freshStore();
    const name = 'lora-frozen/m/k/b.bin';
    await store.putNamed(name, body);
    const path = fileOf(store, name);
    await writeFile(path, damaged);
    for (const e of [
      corruptError(() => store.getNamedSync(name)),
      await corruptErrorAsync(store.getNamed(name)),
    ]) {
      expect(e.code).toBe('ARTIFACT_CORRUPT');
      expect(e.message).toContain(name);
      expect(e.message).toContain(path);
      expect(e.message).toMatch(why);
    }
    // The read changed nothing on disk; writing the entry again repairs it.
    expect((await readFile(path)).equals(damaged)).toBe(true);
    await store.putNamed(name, body);
    expect(store.getNamedSync(name)!.equals(body)).toBe(true);
  });
});

describe('entries already on disk', () => {
  it('an entry in the JSON envelope (base64 body) by older code still reads, bit for bit', async () => {
    const store = freshStore();
    const name = 'lora-frozen/m/k/old.bin';
    await mkdir(dirname(fileOf(store, name)), { recursive: true });
    // Written by hand as the older sealNamed did, so a change of sealNamedJson cannot hide a regression.
    const old =
      '{"corella":"named/1","sha256":"1b82cca7c9ff5995b00909dd364155a21eaed212387702734ba93cb3150a2f8e","bytes":3,"base64":"/wCJ"}';
    await writeFile(fileOf(store, name), old);
    const want = Buffer.from([0xff, 0x00, 0x89]);
    expect((await store.getNamed(name))!.equals(want)).toBe(true);
    expect(store.getNamedSync(name)!.equals(want)).toBe(true);
    // And a real-sized one through sealNamedJson.
    const big = bigBody();
    await writeFile(fileOf(store, name), sealNamedJson(big));
    expect(store.getNamedSync(name)!.equals(big)).toBe(true);
    // Its checksum is still checked.
    await writeFile(fileOf(store, name), old.replace('/wCJ', '/wCK'));
    expect(corruptError(() => store.getNamedSync(name)).code).toBe('ARTIFACT_CORRUPT');
  });

  it('legacy plain entries (no envelope) read as they are: JSON text and frozen-entry bytes', async () => {
    const store = freshStore();
    const frozen = Buffer.concat([Buffer.from('CLFZ', 'latin1'), randomBytes(1000)]);
    const pointer = Buffer.from(JSON.stringify({ sha256: 'a'.repeat(64), epoch: 1 }));
    for (const [name, bytes] of [
      ['lora-frozen/m/k/legacy.bin', frozen],
      ['runs/r1/crm', pointer],
    ] as const) {
      await mkdir(dirname(fileOf(store, name)), { recursive: true });
      await writeFile(fileOf(store, name), bytes);
      expect((await store.getNamed(name))!.equals(bytes)).toBe(true);
      expect(store.getNamedSync(name)!.equals(bytes)).toBe(true);
    }
  });

  it('text bodies (JSON manifests) keep the readable JSON envelope', async () => {
    const store = freshStore();
    const manifest = JSON.stringify({ versionId: 'v1', title: 'Amélie (2001)' });
    await store.putNamed('datasets/v1.json', manifest);
    await store.putNamed('datasets/v2.json', Buffer.from(manifest, 'utf8'));
    for (const name of ['datasets/v1.json', 'datasets/v2.json']) {
      const raw = (await readFile(fileOf(store, name))).toString('utf8');
      expect(raw.startsWith('{"corella":"named/1"')).toBe(true);
      expect(JSON.parse(raw)).toMatchObject({ text: manifest });
      expect((await store.getNamed(name))!.toString('utf8')).toBe(manifest);
    }
    expect(typeof sealNamed(manifest)).toBe('string');
    expect(Buffer.isBuffer(sealNamed(Buffer.from([0xff])))).toBe(true);
  });
});
