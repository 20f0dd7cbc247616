import { describe, expect, it } from 'vitest';
import { MAX_SAMPLING_OFFSET, samplingSchema } from '../../shared/protocol';
import {
  argmax,
  blockVerificationWeights,
  counterRng,
  processLogits,
  residualDistribution,
  roundRng,
  sampleFrom,
  sparseToDense,
  truncateToSparse,
  verifyBlock,
  verifyGreedy,
  verifyTokenLevel,
  type DraftToken,
  type SamplingParams,
  type VerifyOutcome,
} from '../../shared/sampling';

/**
 * Seeded fuzzing of shared/sampling with extreme but schema-valid inputs: the
 * parameters the request schema lets through (temperature (0, 2], top_p
 * (0, 1], any top_k ≥ 0, seed 0..2^32−1, offsets up to MAX_SAMPLING_OFFSET)
 * and logits a model can produce (float32 up to ±3.4e38, exact ties, masked
 * −Infinity). Whatever the input, the maths must be exact or refuse before
 * the model runs; it must never hand NaN to sampling or throw mid-request.
 *
 * Deterministic: one mulberry32 stream (Tommy Ettinger's public-domain
 * generator) drives every choice, so a failing case number reproduces.
 */
const CASES = 3000;
const SUM_TOLERANCE = 1e-9;
const F32_MAX = 3.4028234663852886e38;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const pick = <T>(rand: Rand, values: readonly T[]): T => values[Math.floor(rand() * values.length)];
const int = (rand: Rand, lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));

/** Temperatures at which logit / T overflows or every gap underflows; and ordinary ones. */
const TINY_TEMPERATURES = [5e-324, 1e-320, 2.2250738585072014e-308, 1e-300, 1e-200, 1e-100, 1e-30, 1e-10];
const TEMPERATURES = [1e-4, 0.01, 0.1, 0.5, 0.7, 1, 1.3, 1.9999999999999998, 2];
const TOP_PS = [5e-324, 1e-300, 1e-100, 1e-12, 1e-9, 0.01, 0.3, 0.5, 0.8, 0.9, 0.95, 0.999999, 1 - 2 ** -53, 1, 1, 1];
const SEEDS = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1];
const OFFSETS = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32, MAX_SAMPLING_OFFSET - 64, MAX_SAMPLING_OFFSET];
const VOCABS = [1, 2, 3, 4, 7, 16, 50, 300, 300, 1000, 4096];

function temperatureOf(rand: Rand): number {
  const r = rand();
  return r < 0.4 ? pick(rand, TINY_TEMPERATURES) : r < 0.8 ? pick(rand, TEMPERATURES) : 2 * (1 - rand()); // (0, 2]
}
function topPOf(rand: Rand): number {
  return rand() < 0.8 ? pick(rand, TOP_PS) : 1 - rand(); // (0, 1]
}
function topKOf(rand: Rand, vocab: number): number {
  return pick(rand, [0, 0, 0, 1, 2, 3, Math.max(0, vocab - 1), vocab, vocab + 1, 2 ** 31 - 1, 2 ** 31, Number.MAX_SAFE_INTEGER, int(rand, 0, vocab)]);
}
function paramsOf(rand: Rand, vocab: number): SamplingParams {
  return { temperature: temperatureOf(rand), top_p: topPOf(rand), top_k: topKOf(rand, vocab) };
}

type LogitKind = 'normal' | 'wide' | 'huge' | 'equal' | 'ties' | 'masked' | 'ulp' | 'float64-extreme' | 'one-finite';
const KINDS: LogitKind[] = ['normal', 'wide', 'huge', 'equal', 'ties', 'masked', 'ulp', 'float64-extreme', 'one-finite'];

/** Logits of one kind; always at least one finite entry (all −Infinity is a model bug and throws by design). */
function logitsOf(rand: Rand, vocab: number, kind: LogitKind): Float32Array | Float64Array {
  const values: number[] = [];
  const constant = pick(rand, [0, 5, -7.5, 1e38, -1e38, F32_MAX, -F32_MAX]);
  for (let i = 0; i < vocab; i++) {
    switch (kind) {
      case 'normal':
        values.push((rand() - 0.5) * 10);
        break;
      case 'wide':
        values.push((rand() - 0.5) * 2000);
        break;
      case 'huge':
        values.push(pick(rand, [1e38, -1e38, F32_MAX, -F32_MAX, 0, (rand() - 0.5) * 1e38, (rand() - 0.5) * 10]));
        break;
      case 'equal':
        values.push(constant);
        break;
      case 'ties':
        values.push(pick(rand, [constant, constant, 0, 1, -1, -Infinity]));
        break;
      case 'masked':
        values.push(rand() < 0.7 ? -Infinity : (rand() - 0.5) * 20);
        break;
      case 'ulp':
        // Distinct logits one float32 ulp apart near 1: the smallest gaps a model can produce.
        values.push(1 + int(rand, 0, 3) * 2 ** -23);
        break;
      case 'float64-extreme':
        values.push(pick(rand, [Number.MAX_VALUE, -Number.MAX_VALUE, 1e308, -1e308, 5e-324, 0, -Infinity]));
        break;
      case 'one-finite':
        values.push(-Infinity);
        break;
    }
  }
  const finite = values.findIndex((v) => Number.isFinite(v));
  if (finite < 0) values[int(rand, 0, vocab - 1)] = kind === 'one-finite' ? pick(rand, [0, 1e38, -1e38]) : 0;
  // float64-extreme does not fit float32; everything else is stored the way models return it, or as float64 (engines).
  return kind === 'float64-extreme' || rand() < 0.3 ? Float64Array.from(values) : Float32Array.from(values);
}

/** Throws (with the case) unless `dist` is finite, non-negative and sums to 1 within SUM_TOLERANCE. */
function expectDistribution(dist: ArrayLike<number>, what: string): void {
  let total = 0;
  for (let i = 0; i < dist.length; i++) {
    const v = dist[i];
    if (!(v >= 0) || !Number.isFinite(v)) throw new Error(`${what}: entry ${i} is ${v}`);
    total += v;
  }
  if (!(Math.abs(total - 1) <= SUM_TOLERANCE)) throw new Error(`${what}: sums to ${total}`);
}

/**
 * The limit of processLogits as temperature → 0: the argmax set S (exact ties),
 * cut to its first top_k by token id, then the top-p prefix of the uniform
 * distribution over what is left (ties by lower id), always at least one token.
 */
function limitingDistribution(logits: ArrayLike<number>, { top_p, top_k }: SamplingParams): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let ties = [...Array(logits.length).keys()].filter((i) => logits[i] === max);
  if (top_k > 0) ties = ties.slice(0, top_k);
  let count = ties.length;
  if (top_p < 1) {
    for (let j = 1; j <= ties.length; j++) {
      if (j / ties.length >= top_p - 1e-12) {
        count = j;
        break;
      }
    }
  }
  const probs = new Float64Array(logits.length);
  for (const t of ties.slice(0, count)) probs[t] = 1 / count;
  return probs;
}

/** Whether every logit below the max is so far below it, relative to T, that its weight exp(−gap/T) is exactly 0 in float64. */
function atTheLimit(logits: ArrayLike<number>, temperature: number): boolean {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  for (let i = 0; i < logits.length; i++) {
    const gap = max - logits[i];
    if (gap > 0 && gap / temperature < 746) return false; // exp(−746) underflows to 0; exp(−745) is the smallest subnormal.
  }
  return true;
}

function checkOutcome(outcome: VerifyOutcome, draft: DraftToken[], p: Float64Array[], what: string): void {
  const k = draft.length;
  const { acceptedCount, tokens } = outcome;
  if (!Number.isInteger(acceptedCount) || acceptedCount < 0 || acceptedCount > k) throw new Error(`${what}: acceptedCount ${acceptedCount}`);
  if (tokens.length !== acceptedCount + 1) throw new Error(`${what}: ${tokens.length} tokens for ${acceptedCount} accepted`);
  for (let j = 0; j < acceptedCount; j++) if (tokens[j] !== draft[j].token) throw new Error(`${what}: token ${j} is not the draft's`);
  const last = tokens[acceptedCount];
  // The correction (residual ⊆ support of p) and the bonus (from p[k]) both lie in the target's support.
  if (!(p[acceptedCount][last] > 0)) throw new Error(`${what}: token ${last} has target probability ${p[acceptedCount][last]}`);
}

/** One fuzz case; throws with a description of the first violated property. */
function runCase(caseIndex: number, rand: Rand): void {
  const vocab = pick(rand, VOCABS);
  const params = paramsOf(rand, vocab);
  const kind = pick(rand, KINDS);
  const logits = logitsOf(rand, vocab, kind);
  const label = `case ${caseIndex} (vocab ${vocab}, ${kind}, ${JSON.stringify(params)})`;

  // processLogits: a distribution, masked tokens stay out, top-k respected, the greedy token always in.
  const p = processLogits(logits, params);
  expectDistribution(p, `${label} processLogits`);
  let support = 0;
  for (let i = 0; i < vocab; i++) {
    if (p[i] > 0) support++;
    if (p[i] > 0 && logits[i] === -Infinity) throw new Error(`${label}: masked token ${i} got ${p[i]}`);
  }
  if (params.top_k > 0 && support > params.top_k) throw new Error(`${label}: ${support} tokens survive top_k`);
  if (!(p[argmax(logits)] > 0)) throw new Error(`${label}: the argmax token has no mass`);
  // At a temperature whose every gap underflows, the answer is the exact limiting distribution.
  if (atTheLimit(logits, params.temperature)) {
    const limit = limitingDistribution(logits, params);
    for (let i = 0; i < vocab; i++) {
      if (Math.abs(p[i] - limit[i]) > 1e-12) throw new Error(`${label}: token ${i} has ${p[i]}, the limit is ${limit[i]}`);
    }
  }

  // Sampling: always a token inside the support, for u at both ends of [0, 1).
  for (const u of [0, 1 - 2 ** -53, rand()]) {
    const token = sampleFrom(p, u);
    if (!(p[token] > 0)) throw new Error(`${label}: sampleFrom(u=${u}) returned token ${token} outside the support`);
  }

  // The RNG at extreme seeds and offsets: in [0, 1), never a throw.
  const seed = rand() < 0.7 ? pick(rand, SEEDS) : int(rand, 0, 2 ** 32 - 1);
  const offset = rand() < 0.7 ? pick(rand, OFFSETS) : int(rand, 0, 2 ** 31);
  const wire = { ...params, seed, offset };
  if (!samplingSchema.safeParse(wire).success) throw new Error(`${label}: the fuzz made a schema-invalid input ${JSON.stringify(wire)}`);
  const k = int(rand, 0, 4);
  const rng = roundRng(seed, offset);
  for (let i = 0; i <= k; i++) {
    for (const stream of ['draft', 'accept', 'residual', 'sample'] as const) {
      const u = rng.uniform(offset + i, stream);
      if (!(u >= 0 && u < 1)) throw new Error(`${label}: uniform(${offset + i}, ${stream}) = ${u}`);
    }
  }

  // Verification: k drafts proposed by a different "draft model" (other logits, maybe other parameters), sampled
  // from their truncated sparse q exactly as functions/proposers/draft-model.ts does, or deterministic.
  const targetRows = [p, ...Array.from({ length: k }, () => processLogits(logitsOf(rand, vocab, pick(rand, KINDS)), params))];
  const draftParams = rand() < 0.5 ? params : paramsOf(rand, vocab);
  const deterministic = rand() < 0.3;
  const draft: DraftToken[] = [];
  for (let i = 0; i < k; i++) {
    const draftLogits = logitsOf(rand, vocab, pick(rand, KINDS));
    if (deterministic) {
      draft.push({ token: rand() < 0.5 ? argmax(draftLogits) : int(rand, 0, vocab - 1) });
      continue;
    }
    const q = truncateToSparse(processLogits(draftLogits, draftParams), pick(rand, [1, 2, 32, vocab]));
    expectDistribution(sparseToDense(q, vocab), `${label} sparse q`);
    const index = sampleFrom(
      q.map(([, prob]) => prob),
      rng.uniform(offset + i, 'draft'),
    );
    draft.push({ token: q[index][0], q });
  }
  for (const [name, verify] of [
    ['verifyTokenLevel', verifyTokenLevel],
    ['verifyBlock', verifyBlock],
  ] as const) {
    checkOutcome(verify(draft, targetRows, roundRng(seed, offset), offset), draft, targetRows, `${label} ${name} k=${k}`);
  }
  const { weights, thresholds } = blockVerificationWeights(draft, targetRows);
  for (const value of [...weights, ...thresholds]) {
    if (!(value >= 0 && value <= 1)) throw new Error(`${label}: block verification weight/threshold ${value}`);
  }
  for (let i = 0; i < k; i++) {
    const residual = residualDistribution(targetRows[i], draft[i].q ?? draft[i].token);
    expectDistribution(residual, `${label} residual ${i}`);
    for (let x = 0; x < vocab; x++) if (residual[x] > 0 && !(targetRows[i][x] > 0)) throw new Error(`${label}: residual ${i} puts mass on token ${x} outside p`);
  }
  const greedyRows = targetRows.map((row) => argmax(row));
  checkOutcome(verifyGreedy(draft.map((d) => d.token), greedyRows), draft, targetRows, `${label} verifyGreedy`);
}

describe('shared/sampling under extreme but schema-valid inputs (seeded fuzz)', () => {
  it(`${CASES} cases: distributions are exact, sampling stays in the support, verification never throws or returns NaN`, () => {
    const rand = mulberry32(0x5eed_f022);
    const failures: string[] = [];
    for (let c = 0; c < CASES; c++) {
      try {
        runCase(c, rand);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
    expect(failures.slice(0, 10), `${failures.length} of ${CASES} cases failed`).toEqual([]);
  });

  it('a subnormal temperature gives the limiting distribution: all mass on the argmax, split evenly among exact ties', () => {
    const plain = { top_p: 1, top_k: 0 };
    for (const temperature of [5e-324, 1e-300]) {
      expect([...processLogits(Float32Array.from([1, 3, 2]), { ...plain, temperature })]).toEqual([0, 1, 0]);
      expect([...processLogits(Float32Array.from([3, 1, 3, -Infinity]), { ...plain, temperature })]).toEqual([0.5, 0, 0.5, 0]);
      expect([...processLogits(Float32Array.from([1e38, -1e38, 1e38]), { ...plain, temperature })]).toEqual([0.5, 0, 0.5]);
      expect([...processLogits(Float32Array.from([-F32_MAX, F32_MAX]), { ...plain, temperature })]).toEqual([0, 1]);
      // Ties then go through top-k and top-p by lower token id, as at any temperature.
      expect([...processLogits(Float32Array.from([3, 3, 3, 3]), { temperature, top_p: 0.5, top_k: 0 })]).toEqual([0.5, 0.5, 0, 0]);
      expect([...processLogits(Float32Array.from([3, 3, 3, 3]), { temperature, top_p: 1, top_k: 3 })]).toEqual([1 / 3, 1 / 3, 1 / 3, 0]);
    }
    // Logits one float32 ulp apart are still told apart: 2^-23 / 1e-300 overflows the exponent.
    expect([...processLogits(Float32Array.from([1, 1 + 2 ** -23]), { ...plain, temperature: 1e-300 })]).toEqual([0, 1]);
  });

  it('huge logits at an ordinary temperature are the softmax of their differences', () => {
    const probs = processLogits(Float32Array.from([1e38, 1e38, -1e38]), { temperature: 2, top_p: 1, top_k: 0 });
    expect([...probs]).toEqual([0.5, 0.5, 0]);
    const extreme = processLogits(Float64Array.from([Number.MAX_VALUE, -Number.MAX_VALUE, Number.MAX_VALUE / 2]), { temperature: 1, top_p: 1, top_k: 0 });
    expect([...extreme]).toEqual([1, 0, 0]);
  });

  it('sampling at extreme seeds and offsets is reproducible and in range', () => {
    for (const seed of [0, 2 ** 32 - 1]) {
      for (const offset of [0, 2 ** 31, MAX_SAMPLING_OFFSET]) {
        const a = roundRng(seed, offset).uniform(offset + 64, 'sample');
        expect(a).toBe(roundRng(seed, offset).uniform(offset + 64, 'sample'));
        expect(a >= 0 && a < 1).toBe(true);
        expect(counterRng(seed).uniform(offset + 2 ** 20, 'sample')).toBeLessThan(1);
      }
    }
  });
});
