/** Each stack asks for a port of its own, so a restarting stack gets its port back (cli/services/ports.ts). */
import { describe, expect, it } from 'vitest';
import { preferredPort } from '../../../cli/services/ports.js';

describe('preferredPort', () => {
  it('is the base for the default home, and a stable even port in 500 above it for any other', () => {
    expect(preferredPort('/repo/.corella/temporal', 7233, '/repo/.corella/temporal')).toBe(7233);
    const dirs = Array.from({ length: 40 }, (_, i) => `/tmp/corella-test-${i}/home/temporal`);
    const ports = dirs.map((d) => preferredPort(d, 7233, '/repo/.corella/temporal'));
    expect(dirs.map((d) => preferredPort(d, 7233))).toEqual(ports);
    for (const p of ports) {
      expect(p).toBeGreaterThanOrEqual(7233);
      expect(p).toBeLessThan(7233 + 1000);
      expect((p - 7233) % 2).toBe(0);
    }
    // 40 homes over 500 slots: nearly all distinct (a fixed port would make them all the same).
    expect(new Set(ports).size).toBeGreaterThan(30);
  });
});
