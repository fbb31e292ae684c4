import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Readable, Writable } from 'node:stream';

const run = promisify(execFile);
export const chromium = process.env.CORELLA_CHROMIUM ?? '/usr/bin/chromium';

function flags(profile: string): string[] {
  return [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--hide-scrollbars',
    `--user-data-dir=${profile}`,
  ];
}

/**
 * The page after its scripts ran, as headless Chromium serialises its DOM. Only for pages that go idle:
 * virtual time never runs out on a page that keeps polling (the Temporal UI of a running workflow); use
 * `openPage` there.
 */
export async function renderedPage(url: string, profile: string, budgetMs = 15_000): Promise<string> {
  const { stdout } = await run(
    chromium,
    [...flags(profile), `--virtual-time-budget=${budgetMs}`, '--dump-dom', url],
    { maxBuffer: 64 << 20, timeout: 90_000 },
  );
  return stdout;
}

export interface Page {
  /** Evaluates a JavaScript expression in the page and returns its (JSON) value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy; returns its value. */
  waitFor<T>(expression: string, timeoutMs?: number): Promise<T>;
  /** A PNG of the window, or with fullPage of the whole document (a page that scrolls itself stays a window). */
  screenshot(file: string, opts?: { fullPage?: boolean }): Promise<void>;
  close(): Promise<void>;
}

/**
 * A page driven over the DevTools protocol on Chromium's pipe (fds 3 and 4, NUL-separated JSON): no
 * WebSocket client needed, and the page can be inspected while it keeps polling.
 */
export async function openPage(
  url: string,
  profile: string,
  size = { width: 1400, height: 1000 },
): Promise<Page> {
  const child: ChildProcess = spawn(chromium, [...flags(profile), '--remote-debugging-pipe', 'about:blank'], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const toBrowser = child.stdio[3] as Writable;
  const fromBrowser = child.stdio[4] as Readable;
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let buf = '';
  fromBrowser.on('data', (d: Buffer) => {
    buf += d.toString();
    let at;
    while ((at = buf.indexOf('\0')) >= 0) {
      const msg = JSON.parse(buf.slice(0, at)) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
      };
      buf = buf.slice(at + 1);
      const p = msg.id !== undefined ? pending.get(msg.id) : undefined;
      if (!p) continue;
      pending.delete(msg.id!);
      if (msg.error) p.reject(new Error(`CDP: ${msg.error.message}`));
      else p.resolve(msg.result);
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`chromium exited: ${stderr}`));
    pending.clear();
  });
  const send = <T>(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });

  const { targetId } = await send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await send<{ sessionId: string }>('Target.attachToTarget', {
    targetId,
    flatten: true,
  });
  const s = <T>(method: string, params: Record<string, unknown> = {}) => send<T>(method, params, sessionId);
  await s('Page.enable');
  await s('Emulation.setDeviceMetricsOverride', { ...size, deviceScaleFactor: 1, mobile: false });
  await s('Page.navigate', { url });

  const evaluate = async <T>(expression: string): Promise<T> => {
    const r = await s<{ result: { value?: T }; exceptionDetails?: { text: string } }>('Runtime.evaluate', {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    if (r.exceptionDetails) throw new Error(`page: ${r.exceptionDetails.text}`);
    return r.result.value as T;
  };
  return {
    evaluate,
    async waitFor<T>(expression: string, timeoutMs = 30_000): Promise<T> {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const v = await evaluate<T>(expression).catch(() => undefined);
        if (v) return v;
        if (Date.now() > end) throw new Error(`timed out waiting for ${expression} on ${url}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    async screenshot(file, opts = {}) {
      if (opts.fullPage) {
        // The window grows to the document's height, so the PNG holds the whole page.
        const height = await evaluate<number>('document.documentElement.scrollHeight');
        await s('Emulation.setDeviceMetricsOverride', {
          width: size.width,
          height: Math.min(16_000, Math.max(size.height, height)),
          deviceScaleFactor: 1,
          mobile: false,
        });
      }
      const { data } = await s<{ data: string }>('Page.captureScreenshot', { format: 'png' });
      await writeFile(file, Buffer.from(data, 'base64'));
    },
    async close() {
      await send('Browser.close').catch(() => undefined);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * The folder screenshots of a test run go to: CORELLA_SCREENSHOT_DIR, else one under the system temp folder
 * that outlives the test (so a person can look at the pictures afterwards).
 */
export function screenshotDir(): string {
  const dir = process.env.CORELLA_SCREENSHOT_DIR ?? join(tmpdir(), 'corella-screenshots');
  mkdirSync(dir, { recursive: true });
  return dir;
}
