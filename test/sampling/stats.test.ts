import { describe, expect, it } from 'vitest';
import { chiSquareSurvival, chiSquareTest, logGamma } from '../stats';

/** Closed form for even df: Q(n, y) = e^{-y} Σ_{j<n} y^j / j!. */
function evenDfSurvival(x: number, df: number): number {
  const y = x / 2;
  let term = 1;
  let sum = 1;
  for (let j = 1; j < df / 2; j++) sum += term *= y / j;
  return Math.exp(-y) * sum;
}

describe('chiSquareSurvival', () => {
  it('matches the closed form for even degrees of freedom', () => {
    for (const df of [2, 4, 6, 10, 40]) {
      for (const x of [0.1, 1, 3, 9.5, 20, 60, 150]) {
        const exact = evenDfSurvival(x, df);
        expect(Math.abs(chiSquareSurvival(x, df) - exact)).toBeLessThanOrEqual(1e-12 + 1e-9 * exact);
      }
    }
  });

  it('matches tabulated critical values for odd degrees of freedom', () => {
    expect(chiSquareSurvival(3.841458820694124, 1)).toBeCloseTo(0.05, 10);
    expect(chiSquareSurvival(6.6348966010212145, 1)).toBeCloseTo(0.01, 10);
    expect(chiSquareSurvival(10.827566170662733, 1)).toBeCloseTo(0.001, 10);
    expect(chiSquareSurvival(11.070497693516351, 5)).toBeCloseTo(0.05, 10);
    expect(chiSquareSurvival(1, 1)).toBeCloseTo(0.3173105078629141, 12);
  });

  it('handles the ends', () => {
    expect(chiSquareSurvival(0, 3)).toBe(1);
    expect(chiSquareSurvival(Infinity, 3)).toBe(0);
    expect(chiSquareSurvival(400, 3)).toBeLessThan(1e-80);
    expect(() => chiSquareSurvival(1, 0)).toThrow(RangeError);
  });

  it('uses an accurate log-gamma', () => {
    expect(logGamma(1)).toBeCloseTo(0, 13);
    expect(logGamma(0.5)).toBeCloseTo(0.5 * Math.log(Math.PI), 13);
    expect(logGamma(10)).toBeCloseTo(Math.log(362880), 11);
    expect(logGamma(0.1)).toBeCloseTo(2.252712651734206, 12);
  });
});

describe('chiSquareTest', () => {
  it('gives p = 1 for a perfect fit and a tiny p for a clear misfit', () => {
    expect(chiSquareTest([25, 25, 50], [25, 25, 50])).toEqual({ statistic: 0, df: 2, pValue: 1 });
    const misfit = chiSquareTest([400, 600], [500, 500]);
    expect(misfit.statistic).toBeCloseTo(40, 12);
    expect(misfit.pValue).toBeLessThan(1e-9);
  });

  it('pools cells expected below 5, smallest first', () => {
    // Cells expected 1, 2, 3 pool into one of 6; 94 stays: two cells, one degree of freedom.
    const result = chiSquareTest([0, 4, 2, 94], [1, 2, 3, 94]);
    expect(result.df).toBe(1);
    expect(result.statistic).toBeCloseTo(0, 12);
    // A pool still below 5 absorbs the next smallest cell.
    // (1 + 2 = 3 < 5 takes in the 6; without that rule the cells 3, 6, 91 would give df 2.)
    expect(chiSquareTest([1, 1, 6, 92], [1, 2, 6, 91]).df).toBe(1);
  });

  it('reports an observed impossible outcome as p = 0', () => {
    expect(chiSquareTest([1, 99, 0], [0, 50, 50]).pValue).toBe(0);
    // Expected-zero cells that were not observed are simply ignored.
    expect(chiSquareTest([0, 50, 50], [0, 50, 50]).pValue).toBe(1);
  });

  it('rejects malformed input', () => {
    expect(() => chiSquareTest([1, 2], [1, 2, 3])).toThrow(RangeError);
    expect(() => chiSquareTest([1], [1])).toThrow(RangeError);
    expect(() => chiSquareTest([1, 2], [Number.NaN, 3])).toThrow(RangeError);
  });
});
