/**
 * listensOn tells whose socket a port is: ours, another process's, or nobody's. The dev-server start-up
 * relies on it so that a port taken between our free-port check and our server's bind is never mistaken for
 * our server being ready (two stacks on one machine would then share one Temporal).
 */
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, listensOn } from '../../../cli/services/ports.js';

const linux = process.platform === 'linux';

describe.runIf(linux)('listensOn', () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    while (cleanups.length) cleanups.pop()!();
  });

  it('is true for our own listener and false for a port nobody listens on', async () => {
    const srv: Server = createServer();
    await new Promise<void>((r) => srv.listen({ port: 0, host: '127.0.0.1' }, r));
    cleanups.push(() => srv.close());
    const port = (srv.address() as { port: number }).port;
    expect(await listensOn(process.pid, port)).toBe(true);
    const unused = await freePort();
    expect(await listensOn(process.pid, unused)).toBe(false);
  });

  it('is false for a port another process listens on, and true for that process', async () => {
    const child = spawn(
      process.execPath,
      ['-e', "const s=require('net').createServer().listen(0,'127.0.0.1',()=>console.log(s.address().port))"],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    cleanups.push(() => child.kill('SIGKILL'));
    const port = await new Promise<number>((resolve) =>
      child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
    expect(await listensOn(process.pid, port)).toBe(false);
    expect(await listensOn(child.pid!, port)).toBe(true);
  });
});
