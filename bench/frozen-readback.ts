/**
 * What one read-back of a frozen LoRA entry costs, stage by stage, for each form a named entry can have on
 * disk: the JSON envelope (`named/1`, the body as base64), the binary envelope (`named/2`, header + raw
 * bytes) and a legacy plain file (no checksum). A bounded FrozenPrefixCache makes one such read per training
 * sample that misses (docs/llm-branch.md), so this is the per-sample price of a memory budget.
 *
 *   npx tsx bench/frozen-readback.ts [--rounds 200] [--tokens 197] [--embd 576] [--keep 1]
 *
 * Default shape: a SmolLM2-135M entry of the pipeline's average prompt (197 tokens × 576 f32 + one kept
 * last-token row, ~450 KB). Rounds alternate the forms, so a load spike hits all of them alike; the files
 * stay in the page cache (the bench's case: the frozen pass wrote them minutes earlier). Prints one JSON line:
 * per form the median and mean wall-ms and the CPU-ms per read, for the whole FrozenOutputStore.getSync and
 * for each stage, plus node's sha256 rate. Writes only under a fresh temporary folder, removed at the end.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  BINARY_HEADER_BYTES,
  openNamed,
  sealNamedBinary,
  sealNamedJson,
} from '../ml/artifacts/named-envelope.js';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { CorellaError, isCorellaError } from '../ml/errors.js';
import type { FrozenEntry } from '../ml/llm/tf/frozen-prefix.js';
import { decodeFrozenEntry, encodeFrozenEntry, FrozenOutputStore } from '../ml/llm/tf/frozen-store.js';

function positiveInt(flag: string, raw: string | undefined, dflt: number, min = 1): number {
  if (raw === undefined) return dflt;
  const v = Number(raw);
  if (!(Number.isInteger(v) && v >= min))
    throw new CorellaError('BAD_CONFIG', `--${flag} ${raw}: expected an integer ≥ ${min}`, {
      details: { field: `--${flag}` },
    });
  return v;
}

function flags() {
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({
      options: {
        rounds: { type: 'string' },
        tokens: { type: 'string' },
        embd: { type: 'string' },
        keep: { type: 'string' },
      },
    }).values;
  } catch (e) {
    throw new CorellaError('BAD_CONFIG', (e as Error).message, { details: { field: 'argv' } });
  }
  return {
    rounds: positiveInt('rounds', values.rounds, 200),
    tokens: positiveInt('tokens', values.tokens, 197),
    embd: positiveInt('embd', values.embd, 576),
    keep: positiveInt('keep', values.keep, 1, 0),
  };
}

type Stage = { wallMs: number[]; cpuMs: number };
const stage = (): Stage => ({ wallMs: [], cpuMs: 0 });

function timed<T>(s: Stage, fn: () => T): T {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const out = fn();
  s.wallMs.push(performance.now() - t0);
  const c = process.cpuUsage(c0);
  s.cpuMs += (c.user + c.system) / 1000;
  return out;
}

function summary(s: Stage) {
  const w = [...s.wallMs].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return {
    medianMs: r(w[Math.floor(w.length / 2)]),
    meanMs: r(w.reduce((a, b) => a + b, 0) / w.length),
    cpuMsPerRead: r(s.cpuMs / w.length),
  };
}

/** decodeFrozenEntry as it was before the binary envelope: an aligned copy, then a slice per row block. */
function decodeWithCopies(buf: Buffer, T: number, E: number, nKeep: number): number {
  const words = new Uint32Array(new Uint8Array(buf).buffer);
  const f = new Float32Array(words.buffer);
  const o = 6 + nKeep + T;
  let n = f.slice(o, o + T * E).length;
  for (let k = 0; k < nKeep; k++) n += f.slice(o + T * E + k * E, o + T * E + (k + 1) * E).length;
  return n;
}

function sameBits(a: FrozenEntry, b: FrozenEntry): boolean {
  const eq = (x: Float32Array, y: Float32Array) =>
    Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(
      Buffer.from(y.buffer, y.byteOffset, y.byteLength),
    );
  if (!eq(a.input, b.input) || a.lastHidden.size !== b.lastHidden.size) return false;
  for (const [l, v] of a.lastHidden) if (!b.lastHidden.has(l) || !eq(v, b.lastHidden.get(l)!)) return false;
  return true;
}

async function main() {
  const { rounds, tokens: T, embd: E, keep } = flags();
  const dir = mkdtempSync(join(tmpdir(), 'corella-frozen-readback-'));
  try {
    const tokens = Array.from({ length: T }, (_, i) => (i * 7919) % 49152);
    const rand = (n: number) =>
      new Float32Array(randomBytes(4 * n).buffer).map((x) => (Number.isFinite(x) ? x : 0));
    const entry: FrozenEntry = {
      input: rand(T * E),
      lastHidden: new Map(Array.from({ length: keep }, (_, l) => [l, rand(E)] as [number, Float32Array])),
    };
    const firstLayer = 28;
    const body = encodeFrozenEntry(tokens, entry, E, firstLayer);
    const forms = ['json', 'binary', 'plain'] as const;
    const sealed: Record<(typeof forms)[number], Uint8Array | string> = {
      json: sealNamedJson(body),
      binary: sealNamedBinary(body),
      plain: body,
    };
    const stores = Object.fromEntries(
      forms.map((f) => {
        const store = new FileArtifactStore(join(dir, f));
        const fs = new FrozenOutputStore(
          store,
          { modelSha256: 'b'.repeat(64), firstLayer, keepLayers: [...entry.lastHidden.keys()] },
          E,
        );
        const path = join(store.namedDir, fs.name(tokens));
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, sealed[f]);
        return [f, { fs, path }];
      }),
    ) as Record<(typeof forms)[number], { fs: FrozenOutputStore; path: string }>;

    const st = {
      json: {
        getSyncBefore: stage(),
        getSync: stage(),
        readFile: stage(),
        jsonParse: stage(),
        base64: stage(),
        sha256: stage(),
        decode: stage(),
      },
      binary: {
        getSync: stage(),
        readFile: stage(),
        sha256: stage(),
        decode: stage(),
        decodeWithCopies: stage(),
      },
      plain: { getSync: stage(), readFile: stage(), decode: stage() },
    };
    const identical: Record<string, boolean> = {};
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    for (let r = 0; r < rounds; r++) {
      for (const f of forms) {
        const { fs, path } = stores[f];
        const got = timed(st[f].getSync, () => fs.getSync(tokens)!);
        // The whole read as it was before the binary envelope: JSON envelope, then the copying decode.
        if (f === 'json')
          timed(st.json.getSyncBefore, () => {
            const o = openNamed(readFileSync(path));
            if (!o.ok) throw new Error(o.reason);
            return decodeWithCopies(o.body, T, E, keep);
          });
        if (r === 0) identical[f] = sameBits(got, entry);
        const raw = timed(st[f].readFile, () => readFileSync(path));
        if (f === 'json') {
          const s = st.json;
          const env = timed(s.jsonParse, () => JSON.parse(raw.toString('utf8')) as { base64: string });
          const b = timed(s.base64, () => Buffer.from(env.base64, 'base64'));
          timed(s.sha256, () => sha(b));
          timed(s.decode, () => decodeFrozenEntry(b, tokens, E, firstLayer, 'bench'));
        } else if (f === 'binary') {
          const s = st.binary;
          const b = raw.subarray(BINARY_HEADER_BYTES);
          timed(s.sha256, () => sha(b));
          timed(s.decode, () => decodeFrozenEntry(b, tokens, E, firstLayer, 'bench'));
          timed(s.decodeWithCopies, () => decodeWithCopies(b, T, E, keep));
        } else timed(st.plain.decode, () => decodeFrozenEntry(raw, tokens, E, firstLayer, 'bench'));
      }
    }
    // node's sha256 rate on this machine, per CPU-second (the machine is shared: wall time would measure the
    // scheduler), over the entry's own body.
    const hashing = stage();
    for (let r = 0; r < Math.max(rounds, 100); r++) timed(hashing, () => sha(body));
    const sha256MBps = Math.round(body.byteLength / 1e6 / (hashing.cpuMs / 1000 / hashing.wallMs.length));
    const out = {
      bench: 'frozen-readback',
      rounds,
      entry: { tokens: T, nEmbd: E, keepLayers: keep, bodyBytes: body.byteLength },
      fileBytes: Object.fromEntries(forms.map((f) => [f, Buffer.byteLength(sealed[f])])),
      identical,
      sha256MBps,
      loadAvg: (await import('node:os')).loadavg().map((x) => Math.round(x * 100) / 100),
      forms: Object.fromEntries(
        forms.map((f) => [f, Object.fromEntries(Object.entries(st[f]).map(([k, s]) => [k, summary(s)]))]),
      ),
    };
    console.log(JSON.stringify(out));
    if (!Object.values(identical).every(Boolean)) process.exitCode = 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(isCorellaError(e) ? `${e.code}: ${e.message}` : e);
  process.exitCode = 2;
});
