/**
 * The text-poor variant of issue 19's LoRA benchmark: the interactions of a MovieLens-1M folder rewritten as
 * RecBole atomic files that hold nothing but ids, titles and binary labels: no ratings, genres, year column or
 * user features. It reproduces the issue's RecBole case (where the frozen-LLM branch learned nothing) on the
 * same users and time order as the rich benchmark, so the two rows of the table differ only in the text.
 *
 *   npx tsx bench/text-poor.ts [--data ../shared/datasets/ml-1m-u2999] [--out ~/.cache/corella-bench-text-poor]
 *
 * then   npx tsx bench/lora.ts --format recbole --data <printed folder> ...
 *
 * Writes `<out>/<name>/<name>.inter` (user_id, item_id, label = rating ≥ 4, timestamp, in ratings.dat's line
 * order so the ingest's stable time sort breaks ties as for MovieLens) and `<name>.item` (item_id, title).
 * The output is derived from the dataset, so it goes to a cache folder, never into the repository. Prints
 * one JSON document naming the folder and the row counts.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { finished } from 'node:stream/promises';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const data = resolve(arg('data', '../shared/datasets/ml-1m-u2999'));
const outRoot = resolve(arg('out', join(homedir(), '.cache', 'corella-bench-text-poor')));
const name = `${basename(data)}-textpoor`;
const dir = join(outRoot, name);

/** A tab or newline inside a field would break the atomic file's columns. */
function clean(s: string): string {
  return s.replace(/[\t\r\n]+/g, ' ').trim();
}

async function main(): Promise<void> {
  await mkdir(dir, { recursive: true });
  // movies.dat is Latin-1 as GroupLens ships it; the atomic files are UTF-8 (the RecBole reader is strict).
  const movies = (await readFile(join(data, 'movies.dat'))).toString('latin1').split('\n');
  const itemLines = ['item_id:token\ttitle:token'];
  for (const line of movies) {
    if (line.trim() === '') continue;
    const [id, title] = line.replace(/\r$/, '').split('::');
    itemLines.push(`${id}\t${clean(title)}`);
  }
  await writeFile(join(dir, `${name}.item`), itemLines.join('\n') + '\n');

  const out = createWriteStream(join(dir, `${name}.inter`));
  out.write('user_id:token\titem_id:token\tlabel:float\ttimestamp:float\n');
  let rows = 0;
  let positives = 0;
  const lines = createInterface({ input: createReadStream(join(data, 'ratings.dat'), 'latin1') });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    const [user, item, rating, ts] = line.split('::');
    // The label rule the MovieLens ingest applies (rating ≥ 4); the rating itself is dropped.
    const label = Number(rating) >= 4 ? 1 : 0;
    positives += label;
    rows++;
    if (!out.write(`${user}\t${item}\t${label}\t${ts.trim()}\n`))
      await new Promise<void>((r) => out.once('drain', () => r()));
  }
  out.end();
  await finished(out);
  console.log(
    JSON.stringify(
      { bench: 'text-poor', dir, name, items: itemLines.length - 1, interactions: rows, positives },
      null,
      2,
    ),
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
