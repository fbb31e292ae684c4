import { expect } from 'vitest';

/**
 * Asserts that two arrays agree element by element within `tol`, relative to 1 + |want| (so values near 0
 * are compared absolutely), and names the worst element when they do not.
 */
export function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 1e-4): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i]));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  expect(worst, `${what}: worst relative error at ${at} (got ${got[at]}, want ${want[at]})`).toBeLessThan(
    tol,
  );
}
