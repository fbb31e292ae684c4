import { basename, join } from 'node:path';
import { DatasetError } from '../errors.js';
import type { BadLineSink } from './bad-lines.js';
import { decodeUtf8Strict, fileExists, readInputFile, type LoadedFile } from './input-files.js';
import {
  growF32,
  growF64,
  growI32,
  growU8,
  SPLIT_CODE,
  type Attr,
  type InputFile,
  type RawDataset,
} from './raw.js';
import type { SplitName } from './types.js';

/** RecBole atomic field types (https://recbole.io/docs/user_guide/data/atomic_files.html). */
type AtomicType = 'token' | 'token_seq' | 'float' | 'float_seq';
const ATOMIC_TYPES = new Set<string>(['token', 'token_seq', 'float', 'float_seq']);

interface AtomicField {
  name: string;
  type: AtomicType;
}

interface AtomicFile {
  file: LoadedFile;
  fields: AtomicField[];
  /** Data rows with their 1-based line numbers. */
  rows: { line: number; values: string[] }[];
}

/** Names reserved by the CTR feature layout; attributes with these names are not used as features. */
const RESERVED = new Set(['user_id', 'item_id', 'history']);

function parseAtomic(file: LoadedFile, sink: BadLineSink): AtomicFile {
  const text = decodeUtf8Strict(file).replace(/^\uFEFF/, '');
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  const headerAt = lines.findIndex((l) => l.trim() !== '');
  if (headerAt < 0)
    throw new DatasetError('empty atomic file (no header)', { file: file.path, reason: 'empty_file' });
  const fields: AtomicField[] = lines[headerAt].split('\t').map((h) => {
    const at = h.lastIndexOf(':');
    const name = at > 0 ? h.slice(0, at).trim() : '';
    const type = at > 0 ? h.slice(at + 1).trim() : '';
    if (!name || !ATOMIC_TYPES.has(type)) {
      throw new DatasetError(
        `header field must be name:type with type one of ${[...ATOMIC_TYPES].join(', ')}`,
        {
          file: file.path,
          line: headerAt + 1,
          field: h,
          excerpt: lines[headerAt],
          reason: 'bad_header',
        },
      );
    }
    return { name, type: type as AtomicType };
  });
  const rows: AtomicFile['rows'] = [];
  for (let i = headerAt + 1; i < lines.length; i++) {
    if (lines[i].trim() === '') continue;
    const values = lines[i].split('\t');
    if (values.length !== fields.length) {
      sink.bad('field_count', `expected ${fields.length} tab-separated fields, found ${values.length}`, {
        file: file.path,
        line: i + 1,
        excerpt: lines[i].slice(0, 80),
      });
      continue;
    }
    rows.push({ line: i + 1, values });
  }
  return { file, fields, rows };
}

function column(a: AtomicFile, name: string, required: boolean): number {
  const i = a.fields.findIndex((f) => f.name === name);
  if (i < 0 && required) {
    throw new DatasetError(`missing required column ${name}`, {
      file: a.file.path,
      line: 1,
      field: name,
      reason: 'missing_column',
    });
  }
  return i;
}

const TITLE_RE = /(^|_)title$/;
const GENRE_RE = /^(genre|genres|category|categories)$/;

/**
 * RecBole atomic files `<name>.inter` (or predefined `<name>.train.inter`, `.valid.inter`,
 * `.test.inter`), optional `<name>.user` and `<name>.item`. Required inter columns: user_id, item_id and
 * a rating and/or label column; timestamp is optional (file order is used when absent). `.user`/`.item`
 * token fields become categorical features, `.item` token_seq fields sequence features (split on
 * spaces); float fields are not used. The item title is the field named `title` or `*_title`.
 */
export async function readRecbole(
  dir: string,
  name: string | undefined,
  sink: BadLineSink,
): Promise<RawDataset> {
  const base = name ?? basename(dir);
  const p = (suffix: string) => join(dir, `${base}.${suffix}`);
  const predefined = await fileExists(p('train.inter'));
  const interSpecs: { suffix: string; split?: SplitName }[] = predefined
    ? (['train', 'valid', 'test'] as const).map((s) => ({ suffix: `${s}.inter`, split: s }))
    : [{ suffix: 'inter' }];
  const inputs: InputFile[] = [];
  const interFiles: { a: AtomicFile; split?: SplitName }[] = [];
  for (const spec of interSpecs) {
    const f = await readInputFile(p(spec.suffix), `RecBole ${spec.suffix}`);
    inputs.push(f.input);
    interFiles.push({ a: parseAtomic(f, sink), split: spec.split });
  }
  const userFile = (await fileExists(p('user')))
    ? await readInputFile(p('user'), 'RecBole .user')
    : undefined;
  const itemFile = (await fileExists(p('item')))
    ? await readInputFile(p('item'), 'RecBole .item')
    : undefined;
  if (userFile) inputs.push(userFile.input);
  if (itemFile) inputs.push(itemFile.input);

  // Items and users declared in .item / .user come first, in file order.
  const itemIndex = new Map<string, number>();
  const itemIds: string[] = [];
  const itemTitles: string[] = [];
  const itemGenres: string[] = [];
  const itemAttrs: Attr[] = [];
  if (itemFile) {
    const a = parseAtomic(itemFile, sink);
    const idCol = column(a, 'item_id', true);
    const titleCol = a.fields.findIndex((f) => TITLE_RE.test(f.name));
    const genreCol = a.fields.findIndex((f) => GENRE_RE.test(f.name));
    const attrCols = a.fields
      .map((f, i) => ({ f, i }))
      .filter(
        ({ f, i }) => i !== idCol && i !== titleCol && !RESERVED.has(f.name) && f.type.startsWith('token'),
      );
    const cat = attrCols.map(({ f }): Attr =>
      f.type === 'token'
        ? { name: f.name, kind: 'categorical', values: [] }
        : { name: f.name, kind: 'sequence', values: [] },
    );
    for (const row of a.rows) {
      const id = row.values[idCol].trim();
      const where = {
        file: itemFile.path,
        line: row.line,
        field: 'item_id',
        excerpt: row.values.join('\t').slice(0, 80),
      };
      if (id === '') {
        sink.bad('bad_id', 'empty item_id', where);
        continue;
      }
      if (itemIndex.has(id)) {
        sink.bad('duplicate_id', `duplicate item_id ${id}`, where);
        continue;
      }
      itemIndex.set(id, itemIds.length);
      itemIds.push(id);
      itemTitles.push(titleCol >= 0 && row.values[titleCol].trim() !== '' ? row.values[titleCol].trim() : id);
      itemGenres.push(
        genreCol >= 0 ? row.values[genreCol].trim().split(/\s+/).filter(Boolean).join(', ') : '',
      );
      attrCols.forEach(({ i }, k) => {
        const v = row.values[i].trim();
        const attr = cat[k];
        if (attr.kind === 'categorical') attr.values.push(v);
        else attr.values.push(v.split(/\s+/).filter(Boolean));
      });
    }
    itemAttrs.push(...cat);
  }
  const userIndex = new Map<string, number>();
  const userIds: string[] = [];
  const userAttrs: Attr[] = [];
  if (userFile) {
    const a = parseAtomic(userFile, sink);
    const idCol = column(a, 'user_id', true);
    const attrCols = a.fields
      .map((f, i) => ({ f, i }))
      .filter(({ f, i }) => i !== idCol && !RESERVED.has(f.name) && f.type === 'token');
    const cat = attrCols.map(({ f }) => ({
      name: f.name,
      kind: 'categorical' as const,
      values: [] as string[],
    }));
    for (const row of a.rows) {
      const id = row.values[idCol].trim();
      const where = {
        file: userFile.path,
        line: row.line,
        field: 'user_id',
        excerpt: row.values.join('\t').slice(0, 80),
      };
      if (id === '') {
        sink.bad('bad_id', 'empty user_id', where);
        continue;
      }
      if (userIndex.has(id)) {
        sink.bad('duplicate_id', `duplicate user_id ${id}`, where);
        continue;
      }
      userIndex.set(id, userIds.length);
      userIds.push(id);
      attrCols.forEach(({ i }, k) => cat[k].values.push(row.values[i].trim()));
    }
    userAttrs.push(...cat);
  }

  const users = growI32();
  const items = growI32();
  const ratings = growF32();
  const times = growF64();
  const labels = growF32();
  const splits = growU8();
  const first = interFiles[0].a;
  const hasLabel = first.fields.some((f) => f.name === 'label');
  const hasRating = interFiles.every(({ a }) => a.fields.some((f) => f.name === 'rating'));
  const hasTime = first.fields.some((f) => f.name === 'timestamp');
  let order = 0;
  for (const { a, split } of interFiles) {
    const cu = column(a, 'user_id', true);
    const ci = column(a, 'item_id', true);
    const cl = column(a, 'label', hasLabel);
    const cr = column(a, 'rating', !hasLabel);
    const ct = column(a, 'timestamp', hasTime);
    for (const row of a.rows) {
      const where = (field: string) => ({
        file: a.file.path,
        line: row.line,
        field,
        excerpt: row.values.join('\t').slice(0, 80),
      });
      const uid = row.values[cu].trim();
      const iid = row.values[ci].trim();
      if (uid === '') {
        sink.bad('bad_id', 'empty user_id', where('user_id'));
        continue;
      }
      if (iid === '') {
        sink.bad('bad_id', 'empty item_id', where('item_id'));
        continue;
      }
      let u = userIndex.get(uid);
      if (u === undefined) {
        if (userFile) {
          sink.bad('unknown_user', `user_id ${uid} is not in ${basename(userFile.path)}`, where('user_id'));
          continue;
        }
        u = userIds.length;
        userIndex.set(uid, u);
        userIds.push(uid);
      }
      let it = itemIndex.get(iid);
      if (it === undefined) {
        if (itemFile) {
          sink.bad('unknown_item', `item_id ${iid} is not in ${basename(itemFile.path)}`, where('item_id'));
          continue;
        }
        it = itemIds.length;
        itemIndex.set(iid, it);
        itemIds.push(iid);
        itemTitles.push(iid);
        itemGenres.push('');
      }
      const rating = cr >= 0 ? Number(row.values[cr].trim()) : NaN;
      if (cr >= 0 && (row.values[cr].trim() === '' || !Number.isFinite(rating))) {
        sink.bad('bad_rating', 'rating is not a number', where('rating'));
        continue;
      }
      let label = NaN;
      if (cl >= 0) {
        label = Number(row.values[cl].trim());
        if (label !== 0 && label !== 1) {
          sink.bad(
            'bad_label',
            `label must be 0 or 1, got ${JSON.stringify(row.values[cl])}`,
            where('label'),
          );
          continue;
        }
      }
      let ts = order;
      if (ct >= 0) {
        ts = Number(row.values[ct].trim());
        if (row.values[ct].trim() === '' || !Number.isFinite(ts)) {
          sink.bad('bad_timestamp', 'timestamp is not a number', where('timestamp'));
          continue;
        }
      }
      order++;
      users.push(u);
      items.push(it);
      ratings.push(rating);
      times.push(ts);
      labels.push(label);
      if (split) splits.push(SPLIT_CODE[split]);
    }
  }
  if (users.length === 0) {
    throw new DatasetError('no usable interactions', {
      file: interFiles[0].a.file.path,
      reason: 'empty_file',
    });
  }
  return {
    source: 'recbole',
    inputs,
    userIds,
    itemIds,
    itemTitles,
    itemGenres,
    userAttrs,
    itemAttrs,
    interactions: {
      n: users.length,
      user: users.toArray(),
      item: items.toArray(),
      rating: ratings.toArray(),
      timestamp: times.toArray(),
      ...(hasLabel ? { label: labels.toArray() } : {}),
      ...(predefined ? { split: splits.toArray() } : {}),
    },
    hasRating,
  };
}
