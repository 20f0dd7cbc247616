import { describe, expect, it } from 'vitest';
import { argmax, counterRng, processLogits, sampleFrom, sparseToDense, truncateToSparse, type SamplingParams } from '../../shared/sampling';
import { chiSquareTest } from '../stats';

const plain: SamplingParams = { temperature: 1, top_p: 1, top_k: 0 };
const logitsOf = (probs: number[]) => Float64Array.from(probs, Math.log);

function expectClose(actual: ArrayLike<number>, expected: number[], digits = 12) {
  expect(actual.length).toBe(expected.length);
  expected.forEach((value, i) => expect(actual[i], `entry ${i}`).toBeCloseTo(value, digits));
}

describe('processLogits: temperature', () => {
  it('T = 1 is the softmax (hand-computed)', () => {
    // exp(0), exp(ln 2), exp(ln 3) = 1, 2, 3 -> 1/6, 2/6, 3/6; -Infinity is masked.
    expectClose(processLogits(Float64Array.from([0, Math.log(2), Math.log(3), -Infinity]), plain), [1 / 6, 2 / 6, 3 / 6, 0]);
  });

  it('divides logits by T before the softmax (hand-computed)', () => {
    // T = 1/2 squares the softmax weights: 1, 4, 9 -> /14. T = 2 takes square roots.
    expectClose(processLogits(Float64Array.from([0, Math.log(2), Math.log(3)]), { ...plain, temperature: 0.5 }), [1 / 14, 4 / 14, 9 / 14]);
    const roots = [1, Math.SQRT2, Math.sqrt(3)];
    const total = roots.reduce((s, v) => s + v, 0);
    expectClose(processLogits(Float64Array.from([0, Math.log(2), Math.log(3)]), { ...plain, temperature: 2 }), roots.map((r) => r / total));
  });

  it('sharpens as T falls and flattens as T grows', () => {
    const logits = Float64Array.from([0.3, 1.2, -0.5, 1.0]);
    const maxProb = (temperature: number) => Math.max(...processLogits(logits, { ...plain, temperature }));
    expect(maxProb(0.5)).toBeGreaterThan(maxProb(1));
    expect(maxProb(1)).toBeGreaterThan(maxProb(2));
    expect(maxProb(0.01)).toBeGreaterThan(1 - 1e-6);
    expect(argmax(processLogits(logits, { ...plain, temperature: 0.01 }))).toBe(argmax(logits));
    expect(maxProb(1000)).toBeLessThan(0.2505);
  });

  it('is stable for huge logits and accepts Float32Array', () => {
    expectClose(processLogits(Float64Array.from([1000, 1000 + Math.log(3)]), plain), [0.25, 0.75]);
    const f32 = processLogits(Float32Array.from([0, 1, 2]), plain);
    expectClose(f32, [...processLogits(Float64Array.from([0, 1, 2]), plain)], 7);
  });

  it('throws for greedy and invalid parameters or logits', () => {
    const logits = Float64Array.from([0, 1]);
    expect(() => processLogits(logits, { ...plain, temperature: 0 })).toThrow(/greedy/);
    for (const bad of [
      { temperature: -1 },
      { temperature: Number.NaN },
      { temperature: Infinity },
      { top_p: 0 },
      { top_p: 1.5 },
      { top_k: -1 },
      { top_k: 1.5 },
    ]) {
      expect(() => processLogits(logits, { ...plain, ...bad }), JSON.stringify(bad)).toThrow(RangeError);
    }
    expect(() => processLogits(Float64Array.from([0, Number.NaN]), plain)).toThrow(RangeError);
    expect(() => processLogits(Float64Array.from([0, Infinity]), plain)).toThrow(RangeError);
    expect(() => processLogits(Float64Array.from([-Infinity, -Infinity]), plain)).toThrow(RangeError);
    expect(() => processLogits(Float64Array.from([-Infinity, -Infinity]), { ...plain, top_k: 1 })).toThrow(RangeError);
    expect(() => processLogits(new Float64Array(0), plain)).toThrow(RangeError);
  });
});

describe('processLogits: top-k', () => {
  const logits = logitsOf([0.1, 0.4, 0.2, 0.3]);

  it('keeps the k most probable tokens, renormalised', () => {
    expectClose(processLogits(logits, { ...plain, top_k: 2 }), [0, 4 / 7, 0, 3 / 7]);
  });

  it('top_k = 1 is one-hot at the argmax', () => {
    expectClose(processLogits(logits, { ...plain, top_k: 1 }), [0, 1, 0, 0]);
  });

  it('breaks ties at the boundary by lower token id, keeping exactly k', () => {
    expectClose(processLogits(Float64Array.from([1, 3, 3, 3]), { ...plain, top_k: 2 }), [0, 0.5, 0.5, 0]);
    // top_k = 1 with ties agrees with argmax (lowest index), so greedy and top_k = 1 pick the same token.
    expectClose(processLogits(Float64Array.from([3, 5, 5]), { ...plain, top_k: 1 }), [0, 1, 0]);
  });

  it('is off at 0 and at or above the vocabulary size', () => {
    const off = processLogits(logits, plain);
    expectClose(processLogits(logits, { ...plain, top_k: 4 }), [...off]);
    expectClose(processLogits(logits, { ...plain, top_k: 100 }), [...off]);
  });

  it('never resurrects masked tokens', () => {
    expectClose(processLogits(Float64Array.from([-Infinity, 0, -Infinity]), { ...plain, top_k: 2 }), [0, 1, 0]);
  });

  it('selects correctly from a large vocabulary (the partial-selection path)', () => {
    const rng = counterRng(3);
    const big = Float64Array.from({ length: 4096 }, (_, i) => rng.uniform(i, 'sample') * 10);
    const sorted = [...big.keys()].sort((a, b) => big[b] - big[a] || a - b);
    const probs = processLogits(big, { ...plain, top_k: 5 });
    expect([...probs.keys()].filter((i) => probs[i] > 0)).toEqual([...sorted.slice(0, 5)].sort((a, b) => a - b));
  });
});

describe('processLogits: top-p', () => {
  const logits = logitsOf([0.5, 0.3, 0.2]);

  it('keeps the smallest prefix whose cumulative probability reaches top_p', () => {
    expectClose(processLogits(logits, { ...plain, top_p: 0.8 }), [0.625, 0.375, 0]);
    expectClose(processLogits(logits, { ...plain, top_p: 0.81 }), [0.5, 0.3, 0.2]);
    // Reaching top_p exactly is enough: 0.5 >= 0.5.
    expectClose(processLogits(logits, { ...plain, top_p: 0.5 }), [1, 0, 0]);
    expectClose(processLogits(logits, { ...plain, top_p: 0.51 }), [0.625, 0.375, 0]);
  });

  it('counts a prefix that reaches top_p up to summation rounding as reaching it', () => {
    // In floating point 0.7 + 0.1 = 0.7999999999999999 < 0.8: still two tokens, as intended.
    expect(0.7 + 0.1).toBeLessThan(0.8);
    expectClose(processLogits(logitsOf([0.7, 0.1, 0.1, 0.1]), { ...plain, top_p: 0.8 }), [0.875, 0.125, 0, 0]);
  });

  it('always keeps at least one token', () => {
    expectClose(processLogits(logits, { ...plain, top_p: 1e-9 }), [1, 0, 0]);
  });

  it('breaks ties at the boundary by lower token id', () => {
    const uniform = new Float64Array(4);
    expectClose(processLogits(uniform, { ...plain, top_p: 0.5 }), [0.5, 0.5, 0, 0]);
    expectClose(processLogits(uniform, { ...plain, top_p: 0.25 }), [1, 0, 0, 0]);
    expectClose(processLogits(uniform, { ...plain, top_p: 0.26 }), [0.5, 0.5, 0, 0]);
    expectClose(processLogits(Float64Array.from([0, 1, 1, 0]), { ...plain, top_p: 0.3 }), [0, 1, 0, 0]);
  });

  it('applies after temperature (which changes what the nucleus holds)', () => {
    // At T = 1 the cumulative sums are 0.5, 0.8: top_p 0.75 keeps two tokens.
    expect(processLogits(logits, { ...plain, top_p: 0.75 }).filter((p) => p > 0).length).toBe(2);
    // At T = 2 they are 0.415, 0.737: the same top_p keeps all three.
    expect(processLogits(logits, { ...plain, temperature: 2, top_p: 0.75 }).filter((p) => p > 0).length).toBe(3);
  });

  it('applies after top-k, on the renormalised top-k distribution (HF order)', () => {
    // top-k 2 leaves 4/7, 3/7; 4/7 >= 0.5 so top-p keeps one token. (top-p first would keep two.)
    expectClose(processLogits(logitsOf([0.4, 0.3, 0.2, 0.1]), { ...plain, top_k: 2, top_p: 0.5 }), [1, 0, 0, 0]);
    expectClose(processLogits(logitsOf([0.4, 0.3, 0.2, 0.1]), { ...plain, top_k: 3, top_p: 0.6 }), [4 / 7, 3 / 7, 0, 0]);
  });
});

describe('processLogits: against a direct reference on a large vocabulary', () => {
  /** The definition, written plainly: full sorts, no shortcuts. */
  function reference(logits: Float64Array, { temperature, top_p, top_k }: SamplingParams): Float64Array {
    const scaled = [...logits].map((l) => l / temperature);
    const byLogit = scaled.map((_, i) => i).sort((a, b) => scaled[b] - scaled[a] || a - b);
    const kept = top_k > 0 ? byLogit.slice(0, top_k) : byLogit;
    const max = Math.max(...kept.map((t) => scaled[t]));
    const weight = (t: number) => Math.exp(scaled[t] - max);
    const total = kept.reduce((s, t) => s + weight(t), 0);
    const byProb = [...kept].sort((a, b) => weight(b) - weight(a) || a - b);
    let count = byProb.length;
    let cumulative = 0;
    for (let j = 0; j < byProb.length && top_p < 1; j++) {
      cumulative += weight(byProb[j]) / total;
      if (cumulative >= top_p - 1e-12) {
        count = j + 1;
        break;
      }
    }
    const nucleus = byProb.slice(0, count);
    const nucleusTotal = nucleus.reduce((s, t) => s + weight(t), 0);
    const probs = new Float64Array(logits.length);
    for (const t of nucleus) probs[t] = weight(t) / nucleusTotal;
    return probs;
  }

  it('agrees on supports and probabilities for peaked and flat distributions', () => {
    const rng = counterRng(77);
    for (const spread of [0.5, 4, 20]) {
      const logits = Float64Array.from({ length: 2048 }, (_, i) => (rng.uniform(i + 10_000 * spread, 'sample') - 0.5) * spread);
      for (const temperature of [0.3, 1, 5]) {
        for (const top_k of [0, 7, 300]) {
          for (const top_p of [1e-6, 0.3, 0.9, 0.99, 1]) {
            const params = { temperature, top_p, top_k };
            const actual = processLogits(logits, params);
            const expected = reference(logits, params);
            for (let t = 0; t < logits.length; t++) {
              if ((actual[t] > 0) !== (expected[t] > 0) || Math.abs(actual[t] - expected[t]) > 1e-15) {
                throw new Error(`${JSON.stringify(params)} spread ${spread}: token ${t} ${actual[t]} vs ${expected[t]}`);
              }
            }
          }
        }
      }
    }
  });
});

describe('argmax', () => {
  it('returns the lowest index on ties', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expect(argmax([-5, -1, -1])).toBe(1);
    expect(argmax([-Infinity, -Infinity])).toBe(0);
    expect(argmax(Float32Array.from([0, 0, 0.5]))).toBe(2);
  });

  it('throws on NaN and empty input', () => {
    expect(() => argmax([1, Number.NaN])).toThrow(RangeError);
    expect(() => argmax([])).toThrow(RangeError);
  });
});

describe('sampleFrom', () => {
  it('inverts the CDF at the boundaries', () => {
    const dist = [0.25, 0.25, 0.5];
    expect(sampleFrom(dist, 0)).toBe(0);
    expect(sampleFrom(dist, 0.2499999)).toBe(0);
    expect(sampleFrom(dist, 0.25)).toBe(1);
    expect(sampleFrom(dist, 0.5)).toBe(2);
    expect(sampleFrom(dist, 1 - 2 ** -53)).toBe(2);
  });

  it('never returns a zero-probability token', () => {
    const dist = [0, 0.5, 0, 0.5, 0];
    expect(sampleFrom(dist, 0)).toBe(1);
    expect(sampleFrom(dist, 1 - 2 ** -53)).toBe(3);
    // Sum 1 + 1e-9 or 1 - 1e-9: u is scaled by the real sum, trailing zeros are skipped.
    expect(sampleFrom([0, 0.5, 0.5 + 1e-9, 0], 1 - 2 ** -53)).toBe(2);
    expect(sampleFrom([0, 0.5, 0.5 - 1e-9, 0], 1 - 2 ** -53)).toBe(2);
    expect(sampleFrom([0, 0.5 - 1e-9, 0.5, 0], 0.5)).toBe(2);
  });

  it('samples with the right frequencies', () => {
    const dist = [0.1, 0, 0.2, 0.3, 0.4];
    const rng = counterRng(11);
    const n = 20_000;
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < n; i++) counts[sampleFrom(dist, rng.uniform(i, 'sample'))]++;
    expect(counts[1]).toBe(0);
    expect(chiSquareTest(counts, dist.map((p) => p * n)).pValue).toBeGreaterThan(1e-3);
  });

  it('throws on a bad u or a distribution that does not sum to 1', () => {
    expect(() => sampleFrom([1], 1)).toThrow(RangeError);
    expect(() => sampleFrom([1], -0.1)).toThrow(RangeError);
    expect(() => sampleFrom([1], Number.NaN)).toThrow(RangeError);
    expect(() => sampleFrom([0.5, 0.4], 0.1)).toThrow(RangeError);
    expect(() => sampleFrom([1.5, -0.5], 0.1)).toThrow(RangeError);
    expect(() => sampleFrom([0, 0], 0.1)).toThrow(RangeError);
  });
});

describe('truncateToSparse / sparseToDense', () => {
  it('keeps the K most probable entries, renormalised, sorted by probability', () => {
    const sparse = truncateToSparse(Float64Array.from([0.1, 0.4, 0.2, 0.3]), 2);
    expect(sparse.map(([token]) => token)).toEqual([1, 3]);
    expectClose(sparse.map(([, prob]) => prob), [0.4 / 0.7, 0.3 / 0.7]);
  });

  it('breaks ties by lower token id and never includes zero-probability tokens', () => {
    expect(truncateToSparse(Float64Array.from([0.25, 0.25, 0.25, 0.25]), 3).map(([t]) => t)).toEqual([0, 1, 2]);
    expect(truncateToSparse(Float64Array.from([0, 0.5, 0, 0.5]), 10)).toEqual([
      [1, 0.5],
      [3, 0.5],
    ]);
  });

  it('keeps the full distribution when K covers it, and round-trips to dense', () => {
    const dist = processLogits(Float64Array.from([0.3, -1, 2, 0.7, 0]), plain);
    const sparse = truncateToSparse(dist, 5);
    expect(sparse.reduce((s, [, p]) => s + p, 0)).toBeCloseTo(1, 14);
    expectClose(sparseToDense(sparse, 5), [...dist], 15);
  });

  it('rejects invalid input', () => {
    expect(() => truncateToSparse(Float64Array.from([1]), 0)).toThrow(RangeError);
    expect(() => truncateToSparse(Float64Array.from([0, 0]), 1)).toThrow(RangeError);
    expect(() => sparseToDense([[3, 1]], 3)).toThrow(RangeError);
    expect(() => sparseToDense([[0, 0.5], [0, 0.5]], 3)).toThrow(RangeError);
    expect(() => sparseToDense([[0, 0.5]], 3)).toThrow(RangeError);
    expect(() => sparseToDense([[0, 1.5], [1, -0.5]], 3)).toThrow(RangeError);
  });
});
