import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, ListBucketsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll } from 'vitest';
import { repoRoot } from '../../cli/services/paths.js';
import { s3ClientConfigFromEnv } from '../../ml/artifacts/s3-store.js';

/**
 * The SeaweedFS binary that scripts/install-seaweedfs builds into .corella/tools, or CORELLA_WEED. No
 * binary is a test failure with the command that builds it, never a skip: CI runs the install first.
 */
export function weedBinary(): string {
  const explicit = process.env.CORELLA_WEED;
  if (explicit) return explicit;
  const tools = join(repoRoot, '.corella', 'tools');
  const dirs = existsSync(tools)
    ? readdirSync(tools).filter((d) => d.startsWith('seaweedfs-') && !d.endsWith('.tmp'))
    : [];
  for (const d of dirs.sort().reverse()) {
    const bin = join(tools, d, 'weed');
    if (existsSync(bin)) return bin;
  }
  throw new Error(
    `no SeaweedFS binary under ${tools}: run \`bash scripts/install-seaweedfs\` (.ci/run does), or set CORELLA_WEED`,
  );
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export interface SeaweedServer {
  /** http://127.0.0.1:<s3 port> */
  endpoint: string;
  /** The AWS_* variables a corella process needs to reach it (path-style; SeaweedFS without identities accepts any key). */
  env: Record<string, string>;
  client: S3Client;
  dir: string;
  /** Kills the server at once (SIGKILL: a crash, not a shutdown). */
  kill(): Promise<void>;
  /** Starts it again on the same ports and data folder. */
  restart(): Promise<void>;
  /** Teardown: SIGTERM, a grace period, then SIGKILL (weed does not exit within 5 s of SIGTERM). */
  stop(): Promise<void>;
  log(): Promise<string>;
}

/**
 * One real `weed server -s3` (master, volume, filer and S3 gateway in one process) on free ports of
 * 127.0.0.1, its data in `dir`, and `bucket` created. Each test file starts its own, so one that restarts
 * its server disturbs nobody else.
 */
export async function startSeaweed(opts: { dir: string; bucket: string }): Promise<SeaweedServer> {
  const bin = weedBinary();
  await mkdir(join(opts.dir, 'data'), { recursive: true });
  const names = [
    'master',
    'masterGrpc',
    'volume',
    'volumeGrpc',
    'filer',
    'filerGrpc',
    's3',
    's3Grpc',
  ] as const;
  const ports: Record<(typeof names)[number], number> = Object.fromEntries(
    await Promise.all(names.map(async (n) => [n, await freePort()] as const)),
  ) as Record<(typeof names)[number], number>;
  const args = [
    'server',
    '-ip=127.0.0.1',
    '-ip.bind=127.0.0.1',
    `-dir=${join(opts.dir, 'data')}`,
    `-master.port=${ports.master}`,
    `-master.port.grpc=${ports.masterGrpc}`,
    '-master.telemetry=false',
    '-master.volumeSizeLimitMB=64',
    `-volume.port=${ports.volume}`,
    `-volume.port.grpc=${ports.volumeGrpc}`,
    '-volume.max=16',
    `-filer.port=${ports.filer}`,
    `-filer.port.grpc=${ports.filerGrpc}`,
    `-filer.localSocket=${join(opts.dir, 'filer.sock')}`,
    '-s3',
    `-s3.port=${ports.s3}`,
    `-s3.port.grpc=${ports.s3Grpc}`,
    '-s3.port.iceberg=0',
    '-s3.port.lance=0',
    `-s3.localSocket=${join(opts.dir, 's3.sock')}`,
  ];
  const logPath = join(opts.dir, 'weed.log');
  const endpoint = `http://127.0.0.1:${ports.s3}`;
  const env = {
    AWS_ENDPOINT_URL: endpoint,
    AWS_ACCESS_KEY_ID: 'corella-test',
    AWS_SECRET_ACCESS_KEY: 'corella-test-secret',
    AWS_REGION: 'us-east-1',
    AWS_S3_FORCE_PATH_STYLE: 'true',
  };
  const client = new S3Client({
    ...s3ClientConfigFromEnv(env),
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
  });
  let child: ChildProcess | undefined;
  let bucketMade = false;

  const launch = async (): Promise<void> => {
    const log = await open(logPath, 'a');
    child = spawn(bin, args, { stdio: ['ignore', log.fd, log.fd], detached: false });
    await log.close();
    const c = child;
    const deadline = Date.now() + 120_000;
    let last: unknown;
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(
          `weed server exited (${c.exitCode ?? c.signalCode}) before S3 answered; log ${logPath}`,
        );
      }
      try {
        await client.send(new ListBucketsCommand({}));
        // S3 answers before the volume server has registered with the master; until then writes fail
        // with InternalError. Ready means a write goes through (once the bucket exists).
        if (bucketMade)
          await client.send(new PutObjectCommand({ Bucket: opts.bucket, Key: '.ready', Body: 'ok' }));
        break;
      } catch (e) {
        last = e;
      }
      if (Date.now() > deadline)
        throw new Error(`SeaweedFS S3 not ready after 120 s: ${String(last)}; log ${logPath}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  };

  const waitExit = (c: ChildProcess, ms: number): Promise<boolean> =>
    c.exitCode !== null || c.signalCode !== null
      ? Promise.resolve(true)
      : new Promise((resolve) => {
          const t = setTimeout(() => resolve(false), ms);
          c.once('exit', () => {
            clearTimeout(t);
            resolve(true);
          });
        });

  const kill = async (): Promise<void> => {
    const c = child;
    if (!c) return;
    child = undefined;
    c.kill('SIGKILL');
    await waitExit(c, 10_000);
  };

  await launch();
  // The filer may answer ListBuckets a moment before it accepts writes: retry creating the bucket.
  for (let i = 0; ; i++) {
    try {
      await client.send(new CreateBucketCommand({ Bucket: opts.bucket })).catch((e: unknown) => {
        if ((e as { name?: string }).name !== 'BucketAlreadyOwnedByYou') throw e;
      });
      await client.send(new PutObjectCommand({ Bucket: opts.bucket, Key: '.ready', Body: 'ok' }));
      break;
    } catch (e) {
      if (i >= 120) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  bucketMade = true;

  return {
    endpoint,
    env,
    client,
    dir: opts.dir,
    kill,
    async restart() {
      await kill();
      await launch();
    },
    async stop() {
      const c = child;
      if (!c) return;
      child = undefined;
      c.kill('SIGTERM');
      if (!(await waitExit(c, 3_000))) {
        c.kill('SIGKILL');
        await waitExit(c, 10_000);
      }
      client.destroy();
    },
    async log() {
      const { readFile } = await import('node:fs/promises');
      return readFile(logPath, 'utf8').catch(() => '');
    },
  };
}

/**
 * A test file's own SeaweedFS for its whole run: a temporary folder and a server with `bucket`, handed to
 * `ready` before the first test, stopped and removed after the last.
 */
export function useSeaweed(
  bucket: string,
  tmpPrefix: string,
  ready: (s: { dir: string; weed: SeaweedServer }) => void,
): void {
  let dir: string | undefined;
  let weed: SeaweedServer | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), tmpPrefix));
    weed = await startSeaweed({ dir: join(dir, 'weed'), bucket });
    ready({ dir, weed });
  }, 180_000);
  afterAll(async () => {
    await weed?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);
}
