import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Prng } from '../random.js';
import { GENRE_WORDS, GENRES } from './synthetic-words.js';

export interface SyntheticOptions {
  seed?: number;
  users?: number;
  items?: number;
  /** Mean ratings per user (each user gets between half and twice as many, at least 10). */
  ratingsPerUser?: number;
  /** Share of items that form the planted text-only segment (default 0.06). */
  plantedShare?: number;
}

export interface SyntheticMovielens {
  dir: string;
  users: number;
  items: number;
  ratings: number;
  /** Items of the planted segment: rated only late (cold for a model trained on earlier data). */
  plantedItemIds: string[];
  /** The genre a planted item's title evokes (its listed genres deliberately say something else). */
  plantedTextGenre: Record<string, string>;
  /** Favourite genres per user id, the ground truth behind the planted labels. */
  favouriteGenres: Record<string, string[]>;
  /** Ratings of planted items. */
  plantedRatings: number;
}

const T0 = 956_703_932; // 2000-04-26, as in MovieLens-1M
const SPAN = 3 * 365 * 86_400;
/** Planted ratings happen in the last part of the timeline, after most of the training period. */
const PLANTED_FROM = 0.8;
const AGES = [1, 18, 25, 35, 45, 50, 56];

interface User {
  id: number;
  favourites: number[];
  /** Genre whose appeal grows over the user's time (taste drift). */
  drift: number;
  bias: number;
  start: number;
  end: number;
  count: number;
}

interface Item {
  id: number;
  genres: number[];
  title: string;
  year: number;
  quality: number;
  popularity: number;
  planted: boolean;
  textGenre: number;
}

function titleFor(r: Prng, genres: number[], year: number): string {
  const a = r.pick(GENRE_WORDS[GENRES[genres[0]]]);
  const other = GENRE_WORDS[GENRES[genres.length > 1 && r.next() < 0.5 ? genres[1] : genres[0]]];
  let b = r.pick(other);
  if (b === a) b = other[(other.indexOf(a) + 1) % other.length];
  const pattern = r.int(3);
  const core = pattern === 0 ? `The ${a} ${b}` : pattern === 1 ? `${a} of the ${b}` : `${a} ${b}`;
  return `${core} (${year})`;
}

/**
 * Writes ratings.dat, movies.dat and users.dat in the MovieLens-1M format, so the real ingestion path
 * runs end to end. Structure:
 * - long-tail item popularity (Zipf over a random order of items);
 * - each user has 1–2 favourite genres plus noise, a personal bias, and a "drift" genre whose appeal
 *   grows over the user's active period; a global drift lowers ratings slowly over time;
 * - titles are built from per-genre word lists plus a year, so titles carry genre information;
 * - planted segment: rare items, rated only in the last part of the timeline (cold for a model trained
 *   on earlier data), whose titles use words of one genre while their listed genres are another.
 *   Their ratings follow the title: high when that genre is one of the user's favourites, low otherwise
 *   (with 5% noise). Ids and metadata carry no signal; the text does.
 * Same seed and options → identical bytes.
 */
export async function generateSyntheticMovielens(
  dir: string,
  opts: SyntheticOptions = {},
): Promise<SyntheticMovielens> {
  const r = new Prng(opts.seed ?? 42);
  const nUsers = opts.users ?? 3000;
  const nItems = opts.items ?? 2000;
  const mean = opts.ratingsPerUser ?? 40;
  const nPlanted = Math.max(1, Math.round(nItems * (opts.plantedShare ?? 0.06)));
  const G = GENRES.length;

  // Genre popularity is skewed too (dramas and comedies are common, film-noir rare).
  const genreWeight = GENRES.map((_, g) => 1 / (1 + g * 0.35));
  const genreOrder = r.shuffle(GENRES.map((_, g) => g));
  const drawGenre = (): number => {
    const total = genreWeight.reduce((s, w) => s + w, 0);
    let x = r.next() * total;
    for (let k = 0; k < G; k++) {
      x -= genreWeight[k];
      if (x <= 0) return genreOrder[k];
    }
    return genreOrder[G - 1];
  };

  const items: Item[] = [];
  const plantedIdx = new Set(r.shuffle(Array.from({ length: nItems }, (_, i) => i)).slice(0, nPlanted));
  const popRank = r.shuffle(Array.from({ length: nItems }, (_, i) => i));
  for (let i = 0; i < nItems; i++) {
    const year = 1930 + Math.floor(70 * Math.sqrt(r.next()));
    const planted = plantedIdx.has(i);
    const first = drawGenre();
    const genres = [first];
    if (r.next() < 0.45) {
      const second = drawGenre();
      if (second !== first) genres.push(second);
    }
    let textGenre = first;
    if (planted) {
      // The title speaks of textGenre; the listed genre is a different, uninformative one.
      textGenre = r.int(G);
      let listed = r.int(G);
      if (listed === textGenre) listed = (listed + 1 + r.int(G - 1)) % G;
      genres.length = 0;
      genres.push(listed);
    }
    items.push({
      id: i + 1,
      genres,
      title: titleFor(r, planted ? [textGenre] : genres, year),
      year,
      quality: 0.5 * r.normal(),
      popularity: 1 / Math.pow(popRank[i] + 1, 0.9),
      planted,
      textGenre,
    });
  }

  const users: User[] = [];
  for (let u = 0; u < nUsers; u++) {
    const favourites = [drawGenre()];
    if (r.next() < 0.6) {
      const g = drawGenre();
      if (g !== favourites[0]) favourites.push(g);
    }
    const start = T0 + Math.floor(r.next() * 0.75 * SPAN);
    const end = start + Math.floor((0.1 + 0.9 * r.next()) * (T0 + SPAN - start));
    const count = Math.max(10, Math.round(mean * (0.5 + 1.5 * r.next() * r.next())));
    users.push({ id: u + 1, favourites, drift: r.int(G), bias: 0.3 * r.normal(), start, end, count });
  }

  // Normal ratings: items drawn by popularity × taste, without replacement.
  const normal = items.filter((it) => !it.planted);
  const ratings: [number, number, number, number][] = [];
  for (const u of users) {
    const fav = new Set(u.favourites);
    const weights = normal.map((it) => it.popularity * (it.genres.some((g) => fav.has(g)) ? 3 : 1));
    const cum = new Float64Array(weights.length);
    let total = 0;
    weights.forEach((w, k) => (cum[k] = total += w));
    const chosen = new Set<number>();
    const n = Math.min(u.count, normal.length);
    for (let guard = 0; chosen.size < n && guard < n * 50; guard++) {
      const x = r.next() * total;
      let lo = 0;
      let hi = cum.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cum[mid] < x) lo = mid + 1;
        else hi = mid;
      }
      chosen.add(lo);
    }
    const times = Array.from(chosen, () => u.start + Math.floor(r.next() * (u.end - u.start))).sort(
      (a, b) => a - b,
    );
    let k = 0;
    for (const idx of chosen) {
      const it = normal[idx];
      const t = times[k++];
      const frac = (t - T0) / SPAN;
      const own = (t - u.start) / Math.max(1, u.end - u.start);
      const match = it.genres.some((g) => fav.has(g)) ? 1.2 : -0.3;
      const drift = it.genres.includes(u.drift) ? 1.0 * own : 0;
      const s = 3.3 + it.quality + u.bias + match + drift - 0.5 * frac + 0.8 * r.normal();
      ratings.push([u.id, it.id, Math.min(5, Math.max(1, Math.round(s))), t]);
    }
  }

  // Planted ratings: late, few per item, half by users who like the title's genre.
  const late = T0 + Math.floor(PLANTED_FROM * SPAN);
  const lovers: number[][] = GENRES.map(() => []);
  const others: number[][] = GENRES.map(() => []);
  for (let u = 0; u < nUsers; u++) {
    for (let g = 0; g < G; g++) (users[u].favourites.includes(g) ? lovers : others)[g].push(u);
  }
  let plantedRatings = 0;
  for (const it of items) {
    if (!it.planted) continue;
    const raters = new Set<number>();
    const want = 6 + r.int(10);
    for (let k = 0; k < want * 4 && raters.size < want; k++) {
      const pool = k % 2 === 0 && lovers[it.textGenre].length ? lovers[it.textGenre] : others[it.textGenre];
      if (pool.length) raters.add(pool[r.int(pool.length)]);
    }
    for (const u of raters) {
      const likes = users[u].favourites.includes(it.textGenre) !== r.next() < 0.05;
      const rating = likes ? 4 + r.int(2) : 1 + r.int(2);
      const t = late + Math.floor(r.next() * (T0 + SPAN - late));
      ratings.push([users[u].id, it.id, rating, t]);
      plantedRatings++;
    }
  }

  // MovieLens orders ratings.dat by user; within a user the original order is arbitrary: keep time order.
  ratings.sort((a, b) => a[0] - b[0] || a[3] - b[3] || a[1] - b[1]);
  await mkdir(dir, { recursive: true });
  const lines = (xs: string[]) => Buffer.from(xs.join('\n') + '\n', 'latin1');
  await writeFile(join(dir, 'ratings.dat'), lines(ratings.map((x) => x.join('::'))));
  await writeFile(
    join(dir, 'movies.dat'),
    lines(items.map((it) => `${it.id}::${it.title}::${it.genres.map((g) => GENRES[g]).join('|')}`)),
  );
  await writeFile(
    join(dir, 'users.dat'),
    lines(
      users.map((u) => {
        const gender = r.next() < 0.7 ? 'M' : 'F';
        const zip = String(10000 + r.int(89999));
        return `${u.id}::${gender}::${r.pick(AGES)}::${r.int(21)}::${zip}`;
      }),
    ),
  );
  const planted = items.filter((it) => it.planted);
  return {
    dir,
    users: nUsers,
    items: nItems,
    ratings: ratings.length,
    plantedItemIds: planted.map((it) => String(it.id)),
    plantedTextGenre: Object.fromEntries(planted.map((it) => [String(it.id), GENRES[it.textGenre]])),
    favouriteGenres: Object.fromEntries(users.map((u) => [String(u.id), u.favourites.map((g) => GENRES[g])])),
    plantedRatings,
  };
}
