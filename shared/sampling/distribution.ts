/**
 * From logits to the exact distribution a token is sampled from.
 *
 * Speculative sampling is lossless only if the target's p here is bit-for-bit
 * the distribution plain sampling would use, and the draft's q is exactly the
 * distribution the draft sampled from. So both sides call these functions and
 * nothing else: every tie and rounding rule lives in this one file.
 */
import type { SamplingParams } from './params';

/**
 * Slack on the top-p threshold: a prefix whose cumulative probability misses
 * top_p only by summation rounding (0.7 + 0.1 = 0.7999999999999999 against
 * top_p 0.8) counts as reaching it.
 * Both sides run the same arithmetic, so this is about matching the intent of
 * a hand-written top_p, not about agreement.
 */
const TOP_P_SLACK = 1e-12;

/** How far from 1 a distribution's sum may drift (float32 logits, float64 sums) before it is a bug. */
const SUM_TOLERANCE = 1e-6;

function assertParams(params: SamplingParams): void {
  const { temperature, top_p, top_k } = params;
  if (temperature === 0) throw new RangeError('temperature 0 is greedy decoding: use argmax, not processLogits');
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new RangeError(`temperature must be a positive finite number, got ${temperature}`);
  if (!(top_p > 0 && top_p <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${top_p}`);
  if (!Number.isInteger(top_k) || top_k < 0) throw new RangeError(`top_k must be a non-negative integer, got ${top_k}`);
}

/**
 * Indices of the `count` largest values, sorted by value descending, ties by
 * lower index (so results never depend on the sort implementation).
 */
function rankedIndices(values: ArrayLike<number>, count: number): number[] {
  const n = values.length;
  const limit = Math.min(count, n);
  if (limit * 8 >= n) {
    if (values instanceof Float32Array) return sortedByValue(values, null).slice(0, limit);
    const all = Array.from({ length: n }, (_, i) => i);
    // `|| a - b`: equal values (and -Infinity - -Infinity = NaN) fall back to the lower index.
    all.sort((a, b) => values[b] - values[a] || a - b);
    return all.slice(0, limit);
  }
  // Few entries wanted from many: keep a small sorted list. Scanning in index
  // order and inserting after equal values keeps the lower index first on ties.
  const top: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (top.length === limit && !(v > values[top[limit - 1]])) continue;
    let j = top.length;
    while (j > 0 && values[top[j - 1]] < v) j--;
    top.splice(j, 0, i);
    if (top.length > limit) top.pop();
  }
  return top;
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/**
 * `indices` (null = all) ordered by float32 value descending, ties by lower
 * index: the order of the comparator `values[b] - values[a] || a - b` (no NaN
 * allowed), computed with one native numeric sort of packed keys instead of a
 * JS comparator call per comparison (a comparator sort of 4096 tokens costs
 * ~1 ms). Key = order-preserving uint32 of the float (−0 as +0, which the
 * comparator calls equal) × 2^20 + (2^20 − 1 − index): exact in a float64.
 */
function sortedByValue(values: Float32Array, indices: readonly number[] | null): number[] {
  const count = indices ? indices.length : values.length;
  if (values.length > INDEX_SPAN) throw new RangeError(`sortedByValue: at most ${INDEX_SPAN} values`);
  const keys = new Float64Array(count);
  for (let j = 0; j < count; j++) {
    const i = indices ? indices[j] : j;
    f32[0] = values[i] === 0 ? 0 : values[i];
    const bits = f32Bits[0];
    const ordered = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
    keys[j] = ordered * INDEX_SPAN + (INDEX_SPAN - 1 - i);
  }
  keys.sort();
  const out = new Array<number>(count);
  for (let j = 0; j < count; j++) {
    const key = keys[count - 1 - j];
    out[j] = INDEX_SPAN - 1 - (key - Math.floor(key / INDEX_SPAN) * INDEX_SPAN);
  }
  return out;
}
const INDEX_SPAN = 2 ** 20;

/**
 * Probabilities after temperature -> top-k -> top-p (the order HF transformers
 * uses), exactly as plain sampling uses them. Dense, length = vocab.
 *
 * - temperature: softmax(logits / T), computed as exp((logit − max) / T) so that
 *   every T in (0, ∞) and every finite logit give the exact float64 answer (a
 *   tiny T: the limiting distribution, all mass on the argmax, exact ties split
 *   evenly). No parameter the request schema accepts can make this NaN.
 * - top-k: the k highest logits, ties broken by lower token id, so exactly k
 *   survive (HF keeps every token tied with the k-th; one fixed rule matters
 *   more here than matching HF on exact ties, and it makes top_k = 1 agree with
 *   argmax). top_k 0 or >= vocab is off.
 * - top-p (Holtzman et al. 2020): of the tokens left, sorted by probability
 *   descending (ties by lower id), the smallest prefix whose cumulative
 *   probability reaches top_p; always at least one token. top_p 1 is off.
 *
 * Throws for temperature 0: greedy callers use argmax. Logits may be -Infinity
 * (masked tokens); NaN or +Infinity is a model bug and throws.
 */
export function processLogits(logits: Float32Array | Float64Array, params: SamplingParams): Float64Array {
  assertParams(params);
  const vocab = logits.length;
  const max = checkedMaxLogit(logits);
  // Softmax weights exp((logit − max) / T), the shift applied BEFORE dividing by T. Mathematically the same
  // as exp(logit/T − max/T), but logit/T overflows to ±Infinity for a tiny T or a huge logit (1e38 / 0.5,
  // or any nonzero logit / 5e-324) and Infinity − Infinity is NaN. This way the argmax set always gets
  // weight exactly exp(0) = 1, a logit below it gets exp(−gap/T) ∈ [0, 1) (an overflowing −gap/T is −Infinity,
  // weight 0, which is the exact float64 value), and a tiny T gives the limiting distribution: all mass on the
  // argmax, split evenly among exact ties — the correct distribution at that temperature in floating point.
  const weights = new Float64Array(vocab);
  for (let i = 0; i < vocab; i++) weights[i] = Math.exp((logits[i] - max) / params.temperature);

  const topK = params.top_k > 0 && params.top_k < vocab ? params.top_k : vocab;
  // null = every token is still in. Top-k ranks the logits themselves: dividing by T > 0 keeps their order,
  // and the raw values never collapse into rounding ties the way logit/T or the weights can.
  let kept: number[] | null = topK < vocab ? rankedIndices(logits, topK) : null;
  if (params.top_p < 1) kept = nucleus(logits, weights, kept, params.top_p);

  const probs = new Float64Array(vocab);
  if (kept === null) {
    let total = 0;
    for (let i = 0; i < vocab; i++) total += weights[i];
    for (let i = 0; i < vocab; i++) probs[i] = weights[i] / total;
  } else {
    let total = 0;
    for (const token of kept) total += weights[token];
    for (const token of kept) probs[token] = weights[token] / total;
  }
  return probs;
}

/**
 * Top-p: the smallest set of most probable tokens (ties by lower id) among
 * `candidates` (null = all) holding top_p of their mass. "Most probable" is
 * ordered by logit: the same order as by weight wherever the weights differ,
 * and it keeps distinct logits apart where exp rounds their weights to one
 * value (weights 1 and exp(−1e-17) are both 1), so the argmax is always first.
 */
function nucleus(logits: Float32Array | Float64Array, weights: Float64Array, candidates: number[] | null, topP: number): number[] {
  let total = 0;
  if (candidates) for (const token of candidates) total += weights[token];
  else for (let i = 0; i < weights.length; i++) total += weights[i];

  // Only tokens with weight can be needed. And without top-k, tokens below (1 − top_p)/vocab of
  // the mass together hold less than 1 − top_p, so the nucleus lies among the rest: sorting only
  // those keeps this O(vocab) for peaked distributions (a full sort of 4096 tokens costs ~1 ms).
  const floor = candidates ? 0 : ((1 - topP) / weights.length) * total;
  const sorted = (tokens: number[]) => (logits instanceof Float32Array ? sortedByValue(logits, tokens) : tokens.sort((a, b) => logits[b] - logits[a] || a - b));
  const walk = (ordered: number[]): number[] | null => {
    let cumulative = 0;
    for (let j = 0; j < ordered.length; j++) {
      cumulative += weights[ordered[j]] / total;
      if (cumulative >= topP - TOP_P_SLACK) return ordered.slice(0, j + 1);
    }
    return null;
  };
  // Fewer still: the tokens of weight >= t are a prefix of the logit order (a weight never falls as its
  // logit rises; equal logits have equal weights), so when walking that prefix reaches top_p, it finds the
  // same tokens with the same sums as walking every token above the floor. t starts at the power of two
  // where the weights' mass, bucketed by binary exponent from the top, reaches top_p (one pass); it halves
  // while the walk falls short. t only decides how much is sorted, never the result.
  for (let t = nucleusThreshold(weights, candidates, topP * total); t > floor && t > 2 ** -60; t /= 2) {
    const prefix: number[] = [];
    if (candidates) {
      for (const token of candidates) if (weights[token] >= t) prefix.push(token);
    } else for (let i = 0; i < weights.length; i++) if (weights[i] >= t) prefix.push(i);
    const found = walk(sorted(prefix));
    if (found) return found;
  }
  const ordered: number[] = [];
  if (candidates) {
    for (const token of candidates) if (weights[token] > 0 && weights[token] >= floor) ordered.push(token);
  } else for (let i = 0; i < weights.length; i++) if (weights[i] > 0 && weights[i] >= floor) ordered.push(i);
  // Every token here has weight > 0, so a finite logit: the difference is never NaN.
  return walk(sorted(ordered)) ?? ordered;
}

/** The lower power-of-two bound of the binary-exponent bucket (weights in (0, 1]) where the mass counted from the top reaches `mass`. */
function nucleusThreshold(weights: Float64Array, candidates: number[] | null, mass: number): number {
  const buckets = new Float64Array(64);
  // floor(-log2(w)) for w in (0, 1], from the float64 exponent bits; weights below 2^-63 share the last bucket.
  const high = new Uint32Array(weights.buffer, weights.byteOffset, weights.length * 2);
  const add = (i: number) => {
    const w = weights[i];
    if (w > 0) buckets[Math.min(63, 1023 - ((high[2 * i + 1] >>> 20) & 0x7ff))] += w;
  };
  if (candidates) for (const token of candidates) add(token);
  else for (let i = 0; i < weights.length; i++) add(i);
  let cumulative = 0;
  for (let b = 0; b < 64; b++) {
    cumulative += buckets[b];
    if (cumulative >= mass) return 2 ** -(b + 1);
  }
  return 2 ** -64;
}

/** Index of the largest value, the lowest index on ties (the greedy token). Throws on NaN or empty input. */
export function argmax(values: ArrayLike<number>): number {
  if (values.length === 0) throw new RangeError('argmax of an empty array');
  let best = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isNaN(v)) throw new RangeError(`argmax: value ${i} is NaN`);
    if (v > values[best]) best = i;
  }
  return best;
}

/**
 * Inverse-CDF sampling: the first token whose cumulative probability exceeds u.
 *
 * u is scaled by the actual sum, so a distribution summing to 1 ± 1e-9 (float
 * rounding) is sampled correctly, and a zero-probability token is never
 * returned: the cumulative sum only grows at positive entries, and if rounding
 * leaves u·sum past the end, the last positive entry is returned.
 */
export function sampleFrom(dist: ArrayLike<number>, u: number): number {
  if (!(u >= 0 && u < 1)) throw new RangeError(`sampleFrom needs u in [0, 1), got ${u}`);
  let total = 0;
  for (let i = 0; i < dist.length; i++) {
    const v = dist[i];
    if (!(v >= 0) || v === Infinity) throw new RangeError(`sampleFrom: probability ${i} is ${v}`);
    total += v;
  }
  if (!(Math.abs(total - 1) <= SUM_TOLERANCE)) throw new RangeError(`sampleFrom: probabilities sum to ${total}, not 1`);

  const threshold = u * total;
  let cumulative = 0;
  let lastPositive = -1;
  for (let i = 0; i < dist.length; i++) {
    const v = dist[i];
    if (v > 0) {
      cumulative += v;
      lastPositive = i;
      if (threshold < cumulative) return i;
    }
  }
  return lastPositive;
}

/**
 * Keep the K most probable entries, renormalised, as sparse [token, prob] pairs
 * sorted by prob desc (ties by lower token id): the exact q the draft samples
 * from and sends. Zero-probability tokens are never included.
 *
 * Sampling the draft from this truncated q (not the full distribution) is what
 * keeps verification lossless with only K numbers on the wire: the target then
 * knows q exactly (Leviathan et al. 2023 only need q to be the distribution the
 * draft really sampled from).
 */
export function truncateToSparse(dist: Float64Array, maxEntries: number): Array<[number, number]> {
  if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, got ${maxEntries}`);
  const ranked = rankedIndices(dist, maxEntries).filter((token) => dist[token] > 0);
  if (ranked.length === 0) throw new RangeError('truncateToSparse: the distribution has no positive entry');
  const total = ranked.reduce((sum, token) => sum + dist[token], 0);
  return ranked.map((token) => [token, dist[token] / total]);
}

/**
 * `truncateToSparse(processLogits(logits, params), maxEntries)`, bit for bit
 * (the same weights, sums in the same order, the same ranking), without the
 * dense probability vector and its second pass: the draft's per-token work
 * (BENCHMARKS.md: Draft speed and vocabulary trimming). `scratch`, when at
 * least as long as `logits`, holds the weights instead of a new array.
 */
export function sparseFromLogits(logits: Float32Array | Float64Array, params: SamplingParams, maxEntries: number, scratch?: Float64Array): Array<[number, number]> {
  assertParams(params);
  const vocab = logits.length;
  if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, got ${maxEntries}`);
  const max = checkedMaxLogit(logits);
  const weights = scratch && scratch.length >= vocab ? scratch.subarray(0, vocab) : new Float64Array(vocab);
  for (let i = 0; i < vocab; i++) weights[i] = Math.exp((logits[i] - max) / params.temperature);
  const topK = params.top_k > 0 && params.top_k < vocab ? params.top_k : vocab;
  let kept: number[] | null = topK < vocab ? rankedIndices(logits, topK) : null;
  if (params.top_p < 1) kept = nucleus(logits, weights, kept, params.top_p);

  let tokens: ArrayLike<number>;
  let probs: Float64Array;
  if (kept === null) {
    let total = 0;
    for (let i = 0; i < vocab; i++) total += weights[i];
    for (let i = 0; i < vocab; i++) weights[i] = weights[i] / total;
    probs = weights;
    tokens = { length: 0 };
  } else {
    let total = 0;
    for (const token of kept) total += weights[token];
    // Ascending ids: ranking positions in this compact list breaks ties by lower token id, as over the dense vector.
    tokens = Int32Array.from(kept).sort();
    probs = new Float64Array(tokens.length);
    for (let j = 0; j < tokens.length; j++) probs[j] = weights[tokens[j]] / total;
  }
  const ranked = rankedIndices(probs, maxEntries).filter((j) => probs[j] > 0);
  if (ranked.length === 0) throw new RangeError('truncateToSparse: the distribution has no positive entry');
  const total = ranked.reduce((sum, j) => sum + probs[j], 0);
  return ranked.map((j) => [kept === null ? j : tokens[j], probs[j] / total]);
}

/** Throws unless q is [token, prob] pairs of distinct in-vocabulary tokens with probabilities summing to 1. */
export function assertSparseDistribution(q: Array<[number, number]>, vocab: number): void {
  const seen = new Set<number>();
  let total = 0;
  for (const [token, prob] of q) {
    if (!Number.isInteger(token) || token < 0 || token >= vocab) throw new RangeError(`sparse q: token ${token} is outside the vocabulary (${vocab})`);
    if (seen.has(token)) throw new RangeError(`sparse q: token ${token} appears twice`);
    if (!(prob >= 0 && prob <= 1)) throw new RangeError(`sparse q: probability of token ${token} is ${prob}`);
    seen.add(token);
    total += prob;
  }
  if (!(Math.abs(total - 1) <= SUM_TOLERANCE)) throw new RangeError(`sparse q: probabilities sum to ${total}, not 1`);
}

/** Dense form of a sparse distribution (validated as in assertSparseDistribution). */
export function sparseToDense(q: Array<[number, number]>, vocab: number): Float64Array {
  assertSparseDistribution(q, vocab);
  const dense = new Float64Array(vocab);
  for (const [token, prob] of q) dense[token] = prob;
  return dense;
}

/** The largest logit, after checking every one: -Infinity is a masked token, NaN or +Infinity a model bug (throws). */
function checkedMaxLogit(logits: Float32Array | Float64Array): number {
  if (logits.length === 0) throw new RangeError('processLogits needs at least one logit');
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const logit = logits[i];
    if (Number.isNaN(logit) || logit === Infinity) throw new RangeError(`logit ${i} is ${logit}`);
    if (logit > max) max = logit;
  }
  if (max === -Infinity) throw new RangeError('every logit is -Infinity');
  return max;
}
