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
