/**
 * Goodness-of-fit statistics for tests that check distributions by simulation
 * (losslessness of speculative sampling, RNG uniformity). Deterministic and
 * dependency-free; reuse freely.
 */

export interface ChiSquareResult {
  /** Pearson's X² = Σ (O − E)² / E over the pooled cells (Infinity if an impossible cell was observed). */
  statistic: number;
  /** Pooled cells − 1. */
  df: number;
  /** P(χ²_df ≥ statistic): small means the observations do not fit the expected counts. */
  pValue: number;
}

/** Cells with fewer expected counts than this are pooled (the usual rule for the χ² approximation). */
const MIN_EXPECTED = 5;

/**
 * Pearson's chi-square goodness-of-fit test of observed counts against
 * expected counts (which should sum to the same total).
 *
 * Cells expected below 5 are pooled into one cell, from the smallest up, and
 * if that pool is still below 5 it absorbs the next smallest cell. A cell with
 * expected count 0 that was observed at all is an impossible outcome: the
 * statistic is Infinity and the p-value 0 (pooling would hide it).
 */
export function chiSquareTest(observed: number[], expected: number[]): ChiSquareResult {
  if (observed.length !== expected.length) throw new RangeError(`observed has ${observed.length} cells, expected has ${expected.length}`);
  for (const [i, e] of expected.entries()) {
    if (!(e >= 0) || !Number.isFinite(e)) throw new RangeError(`expected count ${i} is ${e}`);
    if (!(observed[i] >= 0)) throw new RangeError(`observed count ${i} is ${observed[i]}`);
    if (e === 0 && observed[i] > 0) return { statistic: Infinity, df: Math.max(1, expected.length - 1), pValue: 0 };
  }

  const cells = expected
    .map((e, i) => ({ observed: observed[i], expected: e }))
    .filter((cell) => cell.expected > 0)
    .sort((a, b) => a.expected - b.expected);
  const pooled = { observed: 0, expected: 0 };
  let firstUnpooled = 0;
  while (firstUnpooled < cells.length && (cells[firstUnpooled].expected < MIN_EXPECTED || (pooled.expected > 0 && pooled.expected < MIN_EXPECTED))) {
    pooled.observed += cells[firstUnpooled].observed;
    pooled.expected += cells[firstUnpooled].expected;
    firstUnpooled++;
  }
  const finalCells = cells.slice(firstUnpooled);
  if (pooled.expected > 0) finalCells.push(pooled);
  if (finalCells.length < 2) throw new RangeError('chiSquareTest needs at least two cells after pooling');

  let statistic = 0;
  for (const cell of finalCells) statistic += (cell.observed - cell.expected) ** 2 / cell.expected;
  const df = finalCells.length - 1;
  return { statistic, df, pValue: chiSquareSurvival(statistic, df) };
}

/** P(χ²_df ≥ x) = Q(df/2, x/2), the regularized upper incomplete gamma function. */
export function chiSquareSurvival(x: number, df: number): number {
  if (!(df > 0)) throw new RangeError(`degrees of freedom must be positive, got ${df}`);
  if (x <= 0) return 1;
  if (x === Infinity) return 0;
  return regularizedGammaQ(df / 2, x / 2);
}

/**
 * Q(a, x) = Γ(a, x) / Γ(a): the series for P(a, x) when x < a + 1, else the
 * continued fraction for Q(a, x) by modified Lentz (Numerical Recipes, 3rd ed., §6.2).
 */
export function regularizedGammaQ(a: number, x: number): number {
  if (!(a > 0) || !(x >= 0)) throw new RangeError(`regularizedGammaQ(${a}, ${x}) is undefined`);
  if (x === 0) return 1;
  const logPrefactor = a * Math.log(x) - x - logGamma(a);
  if (x < a + 1) {
    // P(a, x) = e^{-x} x^a / Γ(a+1) · Σ_n x^n / ((a+1)…(a+n))
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 10_000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-16) break;
    }
    return Math.max(0, 1 - sum * Math.exp(logPrefactor));
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let n = 1; n < 10_000; n++) {
    const an = -n * (n - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(logPrefactor) * h;
}

/** ln Γ(z) for z > 0 by the Lanczos approximation (g = 7, 9 terms; ~1e-15 relative). */
export function logGamma(z: number): number {
  if (z < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * z)) - logGamma(1 - z);
  const coefficients = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  const zm1 = z - 1;
  let series = coefficients[0];
  for (let i = 1; i < coefficients.length; i++) series += coefficients[i] / (zm1 + i);
  const t = zm1 + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (zm1 + 0.5) * Math.log(t) - t + Math.log(series);
}
