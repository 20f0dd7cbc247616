import { describe, expect, it } from 'vitest';
import { counterRng, roundRng, type RngStream } from '../../shared/sampling';
import { chiSquareTest } from '../stats';

const STREAMS: RngStream[] = ['draft', 'accept', 'residual', 'sample'];

/** Counts of values in `bins` equal-width bins of [0, 1). */
function histogram(values: number[], bins: number): number[] {
  const counts = new Array<number>(bins).fill(0);
  for (const v of values) counts[Math.floor(v * bins)]++;
  return counts;
}

/** χ² test that pairs (a, b) fall uniformly in a bins×bins grid: uniform marginals and no dependence. */
function jointUniformity(pairs: Array<[number, number]>, bins: number) {
  const counts = new Array<number>(bins * bins).fill(0);
  for (const [a, b] of pairs) counts[Math.floor(a * bins) * bins + Math.floor(b * bins)]++;
  return chiSquareTest(counts, new Array<number>(bins * bins).fill(pairs.length / (bins * bins)));
}

describe('counterRng', () => {
  it('is a pure function of (seed, position, stream)', () => {
    const a = counterRng(1234);
    const b = counterRng(1234);
    for (const stream of STREAMS) {
      for (const position of [0, 1, 2, 1000, 2 ** 31, 2 ** 40]) {
        expect(a.uniform(position, stream)).toBe(b.uniform(position, stream));
        expect(a.uniform(position, stream)).toBe(a.uniform(position, stream));
      }
    }
  });

  it('reproduces pinned values (the same bits on every platform, so edge and origin agree)', () => {
    // Pinned from this implementation; any change to the hash breaks seeded reproducibility across deployments.
    expect(counterRng(42).uniform(0, 'draft')).toBe(0.9183162855650002);
    expect(counterRng(42).uniform(1, 'accept')).toBe(0.4431015844909558);
    expect(counterRng(42).uniform(7, 'residual')).toBe(0.10105193881475538);
    expect(counterRng(42).uniform(2 ** 40, 'sample')).toBe(0.2977099883977099);
    expect(counterRng(-1).uniform(3, 'draft')).toBe(0.3498461640367303);
    expect(counterRng(2 ** 53 - 1).uniform(0, 'accept')).toBe(0.61116266446325);
    expect(roundRng(42, 5).uniform(5, 'draft')).toBe(0.278495063191326);
  });

  it('gives different draws for different seeds, positions, streams and high words', () => {
    const rng = counterRng(7);
    const seen = new Set<number>();
    for (const stream of STREAMS) for (let position = 0; position < 50; position++) seen.add(rng.uniform(position, stream));
    expect(seen.size).toBe(200);
    expect(counterRng(8).uniform(0, 'draft')).not.toBe(rng.uniform(0, 'draft'));
    // Positions and seeds that differ only above bit 32 must not collide.
    expect(rng.uniform(2 ** 32, 'draft')).not.toBe(rng.uniform(0, 'draft'));
    expect(counterRng(2 ** 32 + 7).uniform(0, 'draft')).not.toBe(rng.uniform(0, 'draft'));
    expect(counterRng(-7).uniform(0, 'draft')).not.toBe(rng.uniform(0, 'draft'));
  });

  it('returns numbers in [0, 1) with 53 random bits', () => {
    const rng = counterRng(99);
    let lowBitSet = 0;
    let belowTwoPow20 = 0;
    let malformed = 0;
    const n = 20_000;
    for (let position = 0; position < n; position++) {
      const u = rng.uniform(position, 'sample');
      const scaled = u * 2 ** 53;
      if (!(u >= 0 && u < 1) || !Number.isInteger(scaled)) malformed++;
      if (scaled % 2 === 1) lowBitSet++;
      if (u < 2 ** -20) belowTwoPow20++;
    }
    expect(malformed).toBe(0);
    // The lowest of the 53 bits is a fair coin (it comes from the second 32-bit lane).
    expect(Math.abs(lowBitSet / n - 0.5)).toBeLessThan(0.02);
    expect(belowTwoPow20).toBeLessThan(5);
  });

  it('is roughly uniform across positions and across seeds', () => {
    const n = 50_000;
    const rng = counterRng(2026);
    const byPosition = Array.from({ length: n }, (_, position) => rng.uniform(position, 'accept'));
    const bySeed = Array.from({ length: n }, (_, seed) => counterRng(seed).uniform(3, 'draft'));
    for (const values of [byPosition, bySeed]) {
      const { pValue } = chiSquareTest(histogram(values, 20), new Array<number>(20).fill(n / 20));
      expect(pValue).toBeGreaterThan(1e-3);
      const mean = values.reduce((s, v) => s + v, 0) / n;
      expect(Math.abs(mean - 0.5)).toBeLessThan(4 * Math.sqrt(1 / 12 / n));
    }
  });

  it('keeps streams and neighbouring positions independent', () => {
    const n = 40_000;
    const sameSeed = counterRng(5);
    const cases: Array<[string, Array<[number, number]>]> = [
      ['draft vs accept, same position', Array.from({ length: n }, (_, s) => [counterRng(s).uniform(0, 'draft'), counterRng(s).uniform(0, 'accept')])],
      ['accept vs residual, same position', Array.from({ length: n }, (_, s) => [counterRng(s).uniform(1, 'accept'), counterRng(s).uniform(1, 'residual')])],
      ['accept at i vs i+1', Array.from({ length: n }, (_, i) => [sameSeed.uniform(i, 'accept'), sameSeed.uniform(i + 1, 'accept')])],
      ['seed s vs s+1', Array.from({ length: n }, (_, s) => [counterRng(s).uniform(0, 'sample'), counterRng(s + 1).uniform(0, 'sample')])],
    ];
    for (const [name, pairs] of cases) {
      expect(jointUniformity(pairs, 8).pValue, name).toBeGreaterThan(1e-3);
    }
  });

  it('rejects positions and seeds it cannot hash exactly', () => {
    const rng = counterRng(1);
    expect(() => rng.uniform(-1, 'draft')).toThrow(RangeError);
    expect(() => rng.uniform(1.5, 'draft')).toThrow(RangeError);
    expect(() => rng.uniform(2 ** 53, 'draft')).toThrow(RangeError);
    expect(() => rng.uniform(0, 'bonus' as RngStream)).toThrow(RangeError);
    expect(() => counterRng(0.5)).toThrow(RangeError);
    expect(() => counterRng(Number.NaN)).toThrow(RangeError);
  });
});

describe('roundRng', () => {
  it('is deterministic, and independent across rounds and from the plain generator', () => {
    expect(roundRng(3, 10).uniform(10, 'accept')).toBe(roundRng(3, 10).uniform(10, 'accept'));
    expect(roundRng(3, 10).uniform(10, 'accept')).not.toBe(roundRng(3, 11).uniform(10, 'accept'));
    expect(roundRng(3, 10).uniform(10, 'accept')).not.toBe(counterRng(3).uniform(10, 'accept'));
    const n = 20_000;
    const pairs = Array.from({ length: n }, (_, round): [number, number] => [roundRng(1, round).uniform(7, 'accept'), roundRng(1, round + 1).uniform(7, 'accept')]);
    expect(jointUniformity(pairs, 8).pValue).toBeGreaterThan(1e-3);
  });
});
