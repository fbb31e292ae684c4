import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { readyDatabase } from '../../cli/services/paths.js';
import { maskUrl, redactSecrets } from '../../cli/services/secrets.js';

describe('database URLs are printed without their password', () => {
  it('masks them in error reports too (a driver error may quote the URL)', async () => {
    const { reportError } = await import('../../cli/main.js');
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      written.push(String(chunk));
      return true;
    });
    try {
      reportError(new Error('connect failed: postgres://postgres:hunter2@127.0.0.1:5432/corella'), false);
    } finally {
      spy.mockRestore();
    }
    expect(written.join('')).toContain('postgres://postgres:***@127.0.0.1:5432/corella');
    expect(written.join('')).not.toContain('hunter2');
  });

  it('masks the password of a URL and of every URL inside a text', () => {
    expect(maskUrl('postgres://postgres:5f3a9c@127.0.0.1:5432/corella')).toBe(
      'postgres://postgres:***@127.0.0.1:5432/corella',
    );
    expect(maskUrl('postgresql://u:p%40ss@db.example:6543/x?sslmode=require')).toBe(
      'postgresql://u:***@db.example:6543/x?sslmode=require',
    );
    // No password, nothing to mask.
    expect(maskUrl('postgres://u@host/db')).toBe('postgres://u@host/db');
    expect(maskUrl('http://127.0.0.1:8233')).toBe('http://127.0.0.1:8233');
    const line = `corella-ready {"databaseUrl":"postgres://a:hunter2@h:1/d","ui":"http://x:8233"} and postgres://b:s3cret@h/e`;
    const red = redactSecrets(line);
    expect(red).not.toContain('hunter2');
    expect(red).not.toContain('s3cret');
    expect(red).toContain('postgres://a:***@h:1/d');
    expect(red).toContain('http://x:8233');
  });

  it('keeps the full URL in a 0600 file in the home, and gives the ready line only the masked one', async () => {
    const home = await mkdtemp(join(tmpdir(), 'corella-secrets-'));
    try {
      const url = 'postgres://postgres:abc123def@127.0.0.1:5433/corella';
      const fields = await readyDatabase(home, url);
      expect(fields).toEqual({
        databaseUrl: 'postgres://postgres:***@127.0.0.1:5433/corella',
        databaseUrlFile: join(home, 'database-url'),
      });
      expect((await readFile(fields.databaseUrlFile, 'utf8')).trim()).toBe(url);
      expect((await stat(fields.databaseUrlFile)).mode & 0o777).toBe(0o600);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});
