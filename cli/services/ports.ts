import { createHash } from 'node:crypto';
import { createServer } from 'node:net';

/** True when nothing listens on host:port (we can bind it). */
export function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** An ephemeral port the OS considers free right now. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** `preferred` when free, otherwise the next free one above it (a few tries), otherwise an ephemeral one. */
export async function choosePort(preferred: number, host = '127.0.0.1'): Promise<number> {
  for (let p = preferred; p < preferred + 20; p++) {
    if (await isPortFree(p, host)) return p;
  }
  return freePort(host);
}

/**
 * Whether process `pid` holds a listening TCP socket on `port`, read from /proc (Linux); undefined where
 * that cannot be told (no /proc, or the process's fds are not ours to read). Why: a free port checked now
 * can be taken before our server binds it, and a server without auth (the Temporal dev server) on that port
 * answers a readiness probe just as well. Two stacks on one machine would then share one Temporal silently.
 */
export async function listensOn(pid: number, port: number): Promise<boolean | undefined> {
  const { readFile, readdir, readlink } = await import('node:fs/promises');
  const inodes = new Set<string>();
  try {
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      const text = await readFile(table, 'utf8').catch(() => '');
      for (const line of text.split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        // local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode.
        if (f.length > 9 && f[3] === '0A' && parseInt(f[1].split(':')[1] ?? '', 16) === port)
          inodes.add(f[9]);
      }
    }
    if (inodes.size === 0) return false;
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1])) return true;
    }
    return false;
  } catch {
    return undefined;
  }
}

/**
 * The port a service of the stack in `dir` asks for first: `base` for the default home, else one of 500
 * even ports above it chosen by the folder's hash. Why: every stack on a machine used to ask for the same
 * port (7233), so when one stack's server died for a few seconds, another stack starting just then took
 * its port, and the dead server's workers, still polling that address, took the other stack's tasks (seen
 * in parallel tests: one stack's run row written into the other's database). With a port of its own, a
 * stack's restart gets its port back and other stacks never want it.
 */
export function preferredPort(dir: string, base: number, defaultDir?: string): number {
  if (defaultDir !== undefined && dir === defaultDir) return base;
  const h = createHash('sha256').update(dir).digest().readUInt32BE(0);
  return base + 2 * (h % 500);
}
