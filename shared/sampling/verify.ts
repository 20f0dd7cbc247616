/**
 * Verification of drafted tokens against the target: the rules that make
 * speculative decoding lossless (ARCHITECTURE.md: "Speculative decoding, exactly").
 *
 * Pure functions: distributions and a counter-based Rng in, decision out. They
 * never know where a draft came from (draft model, n-gram, user prediction);
 * they only need the distribution q it was sampled from, or nothing for a
 * deterministic proposal.
 *
 * Indexing: draft position i (0-based) holds draftTokens[i], proposed from
 * q_i = draftTokens[i].q and judged against p[i], the target's distribution
 * given the context and draftTokens[0..i-1]. p[k] is the target's distribution
 * after all k drafts (for the bonus token).
 */
import { assertSparseDistribution, sampleFrom, sparseToDense } from './distribution';
import type { Rng } from './rng';

/** One drafted token: q is the draft's proposal distribution as sparse [token, prob] pairs; absent q means a deterministic proposal q = δ(token). */
export interface DraftToken {
  token: number;
  q?: Array<[number, number]>;
}

/** acceptedCount drafted tokens accepted; tokens = the accepted drafts followed by exactly one more (the correction on rejection, or the bonus when all were accepted). */
export interface VerifyOutcome {
  acceptedCount: number;
  tokens: number[];
}

const SUM_TOLERANCE = 1e-6;

/**
 * Greedy verification: accept drafts while they equal the target's argmax; the
 * first mismatch is replaced by the argmax, and if all k match, the argmax
 * after them is a free bonus. Token-for-token identical to greedy decoding.
 */
export function verifyGreedy(draftTokens: number[], targetArgmax: number[]): VerifyOutcome {
  const k = draftTokens.length;
  if (targetArgmax.length !== k + 1) {
    throw new RangeError(`verifyGreedy needs k+1 = ${k + 1} target argmax tokens, got ${targetArgmax.length}`);
  }
  let acceptedCount = 0;
  while (acceptedCount < k && draftTokens[acceptedCount] === targetArgmax[acceptedCount]) acceptedCount++;
  return { acceptedCount, tokens: [...draftTokens.slice(0, acceptedCount), targetArgmax[acceptedCount]] };
}

/**
 * Token-level speculative sampling (Leviathan et al. 2023, "Fast Inference from
 * Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large
 * Language Model Decoding with Speculative Sampling").
 *
 * Draft position i is accepted with probability min(1, p_i(x)/q_i(x)). On the
 * first rejection the correction is drawn from norm(max(0, p_i − q_i)), which
 * is exactly the part of p_i that acceptance under-produced, so every emitted
 * token is distributed as p_i. After k acceptances the bonus comes from p[k].
 * A deterministic proposal (q = δ(x)) is the special case: accept with
 * probability p_i(x), else draw from p_i with x removed, renormalised.
 *
 * Randomness: rng.uniform(offset+i, 'accept') for the acceptance test at draft
 * position i, rng.uniform(offset+i, 'residual') for its correction, and
 * rng.uniform(offset+k, 'sample') for the bonus — the same draw plain sampling
 * uses at that position, so k = 0 is exactly plain sampling. Draws after the
 * first rejection are never read, so one Rng may serve a whole generation.
 */
export function verifyTokenLevel(draftTokens: DraftToken[], p: Float64Array[], rng: Rng, offset: number): VerifyOutcome {
  const vocab = checkVerifyInputs(draftTokens, p);
  const k = draftTokens.length;
  const accepted: number[] = [];
  for (let i = 0; i < k; i++) {
    const draft = draftTokens[i];
    const proposal = proposalProbability(draft, vocab);
    const acceptProbability = Math.min(1, p[i][draft.token] / proposal);
    // Strict '<' with u in [0, 1): probability 0 never accepts, probability 1 always does.
    if (rng.uniform(offset + i, 'accept') < acceptProbability) {
      accepted.push(draft.token);
      continue;
    }
    const residual = residualDistribution(p[i], draft.q ?? draft.token);
    const correction = sampleFrom(residual, rng.uniform(offset + i, 'residual'));
    return { acceptedCount: i, tokens: [...accepted, correction] };
  }
  const bonus = sampleFrom(p[k], rng.uniform(offset + k, 'sample'));
  return { acceptedCount: k, tokens: [...accepted, bonus] };
}

/**
 * norm(max(0, p − q)): the distribution of the correction token after a
 * rejection (Leviathan et al. 2023, Algorithm 1). q is sparse pairs, or a
 * token id for a deterministic proposal (then: p without that token,
 * renormalised).
 *
 * If no mass is left (p ≤ q everywhere, i.e. p == q), this returns p. That
 * branch has probability zero: a rejection happens with probability
 * Σ max(0, p − q) = 0, so the fallback only keeps callers total and never
 * changes the output distribution.
 */
export function residualDistribution(p: Float64Array, q: Array<[number, number]> | number): Float64Array {
  const vocab = p.length;
  const qDense = typeof q === 'number' ? deltaDistribution(q, vocab) : sparseToDense(q, vocab);
  return scaledResidual(p, qDense, 1);
}

/**
 * The quantities block verification computes along the drafted path (Sun et
 * al. 2024, Algorithm 2), exported so tests and metrics can compute exact
 * expectations (e.g. the expected accepted length) without sampling.
 *
 * weights[i-1] is the paper's p_i = min(1, p_{i−1} · p(X_i)/q(X_i)), p_0 = 1:
 * how much of the target mass along the path X_1..X_i the draft has covered.
 * thresholds[i-1] is the paper's h_i, the probability of stopping at i when
 * deciding backwards from the end of the block:
 *   h_i = Σ_x max(0, p_i·p(x|X^i) − q(x|X^i)) / (Σ_x max(0, p_i·p(x|X^i) − q(x|X^i)) + 1 − p_i),  i < k
 *   h_k = p_k
 */
export interface BlockVerificationWeights {
  weights: number[];
  thresholds: number[];
}

export function blockVerificationWeights(draftTokens: DraftToken[], p: Float64Array[]): BlockVerificationWeights {
  const vocab = checkVerifyInputs(draftTokens, p);
  const k = draftTokens.length;
  const weights: number[] = [];
  const thresholds: number[] = [];
  let weight = 1;
  for (let i = 1; i <= k; i++) {
    const draft = draftTokens[i - 1];
    weight = Math.min(1, (weight * p[i - 1][draft.token]) / proposalProbability(draft, vocab));
    weights.push(weight);
    if (i === k) {
      thresholds.push(weight);
      continue;
    }
    const qNext = proposalAsDense(draftTokens[i], vocab);
    const target = p[i];
    let residualMass = 0;
    for (let x = 0; x < vocab; x++) residualMass += Math.max(0, weight * target[x] - qNext[x]);
    // residualMass + (1 − weight), not (residualMass + 1) − weight: rounding the sum with 1 first can
    // leave the denominator below residualMass, and h_i above 1 (fuzz: 1.0000000000000002). 1 − weight is
    // exact for weight in [0.5, 1] (Sterbenz), and h_i ≤ 1 holds in exact arithmetic, so the clamp only
    // removes rounding.
    const denominator = residualMass + (1 - weight);
    // A zero denominator means weight = 1 and p == q at the next position, so the next draft's
    // weight is 1 too and its threshold is 1: τ = i cannot happen and this value never matters.
    thresholds.push(denominator > 0 ? Math.min(1, residualMass / denominator) : 1);
  }
  return { weights, thresholds };
}

/**
 * Block verification (Sun, Mendlovic, Leviathan, Aharoni, Ro, Beirami, Suresh
 * 2024, "Block Verification Accelerates Speculative Decoding", ICLR 2025,
 * Algorithm 2). Lossless, and optimal in expected accepted length among
 * verifiers that see only the drafted path: never fewer accepted tokens in
 * expectation than token-level verification.
 *
 * Where token-level verification stops at the first rejection, block
 * verification judges the block as a whole: it draws η_i for every position,
 * and the accepted length τ is the largest i with η_i < h_i (so a later
 * position can rescue an earlier "rejection" when the path's overall
 * likelihood ratio recovers). The correction after τ < k comes from
 * norm(max(0, p_τ·p(·|X^τ) − q(·|X^τ))), weighted by the path weight p_τ;
 * after τ = k the bonus comes from p[k].
 *
 * Randomness: η_i for draft position i (0-based) is rng.uniform(offset+i,
 * 'accept'); the correction after τ accepted uses rng.uniform(offset+τ,
 * 'residual'); the bonus rng.uniform(offset+k, 'sample').
 *
 * Caution for callers: unlike token-level verification this reads the
 * acceptance draws — and depends on the drafted tokens — at positions after
 * the accepted prefix. The next round must therefore not reuse those draws
 * (or the draft draws that produced those tokens): use a fresh Rng per round,
 * e.g. roundRng(seed, roundOffset), for drafting and verifying alike.
 */
export function verifyBlock(draftTokens: DraftToken[], p: Float64Array[], rng: Rng, offset: number): VerifyOutcome {
  const { weights, thresholds } = blockVerificationWeights(draftTokens, p);
  const k = draftTokens.length;
  let acceptedCount = 0;
  for (let i = 1; i <= k; i++) {
    if (rng.uniform(offset + i - 1, 'accept') < thresholds[i - 1]) acceptedCount = i;
  }
  const accepted = draftTokens.slice(0, acceptedCount).map((d) => d.token);
  if (acceptedCount === k) {
    return { acceptedCount, tokens: [...accepted, sampleFrom(p[k], rng.uniform(offset + k, 'sample'))] };
  }
  const vocab = p[0].length;
  const pathWeight = acceptedCount === 0 ? 1 : weights[acceptedCount - 1];
  // As in residualDistribution, zero residual mass here has probability zero: stopping at
  // τ ≥ 1 needs h_τ > 0, which needs that mass; and with none at τ = 0, p == q there, so
  // h_1 = 1 and τ ≥ 1.
  const residual = scaledResidual(p[acceptedCount], proposalAsDense(draftTokens[acceptedCount], vocab), pathWeight);
  const correction = sampleFrom(residual, rng.uniform(offset + acceptedCount, 'residual'));
  return { acceptedCount, tokens: [...accepted, correction] };
}

/** norm(max(0, weight·p − q)), or p itself when no mass is left (a probability-zero branch, see callers). */
export function scaledResidual(p: Float64Array, q: Float64Array, weight: number): Float64Array {
  const residual = new Float64Array(p.length);
  let mass = 0;
  for (let x = 0; x < p.length; x++) mass += residual[x] = Math.max(0, weight * p[x] - q[x]);
  if (!(mass > 0)) return Float64Array.from(p);
  for (let x = 0; x < p.length; x++) residual[x] /= mass;
  return residual;
}

function deltaDistribution(token: number, vocab: number): Float64Array {
  checkToken(token, vocab);
  const delta = new Float64Array(vocab);
  delta[token] = 1;
  return delta;
}

/** A drafted token's proposal as a dense distribution: its sparse q, or δ(token). */
export function proposalAsDense(draft: DraftToken, vocab: number): Float64Array {
  return draft.q ? sparseToDense(draft.q, vocab) : deltaDistribution(draft.token, vocab);
}

/** q(x) for the drafted token x. A drafted token the proposal gives no mass cannot have been sampled from it. */
export function proposalProbability(draft: DraftToken, vocab: number): number {
  checkToken(draft.token, vocab);
  if (!draft.q) return 1;
  const entry = draft.q.find(([token]) => token === draft.token);
  const probability = entry ? entry[1] : 0;
  if (!(probability > 0)) {
    throw new RangeError(`drafted token ${draft.token} has probability ${probability} under its own proposal q`);
  }
  return probability;
}

function checkToken(token: number, vocab: number): void {
  if (!Number.isInteger(token) || token < 0 || token >= vocab) throw new RangeError(`token ${token} is outside the vocabulary (${vocab})`);
}

/** Asserts k+1 target distributions over one vocabulary and well-formed proposals; returns the vocabulary size. */
function checkVerifyInputs(draftTokens: DraftToken[], p: Float64Array[]): number {
  const k = draftTokens.length;
  if (p.length !== k + 1) throw new RangeError(`verification needs k+1 = ${k + 1} target distributions, got ${p.length}`);
  const vocab = p[0].length;
  for (const draft of draftTokens) {
    checkToken(draft.token, vocab);
    if (draft.q) assertSparseDistribution(draft.q, vocab);
  }
  for (const [i, dist] of p.entries()) {
    if (dist.length !== vocab) throw new RangeError(`target distribution ${i} has ${dist.length} entries, expected ${vocab}`);
    let total = 0;
    for (let x = 0; x < vocab; x++) {
      const v = dist[x];
      if (!(v >= 0) || v === Infinity) throw new RangeError(`target distribution ${i}: probability ${x} is ${v}`);
      total += v;
    }
    if (!(Math.abs(total - 1) <= SUM_TOLERANCE)) throw new RangeError(`target distribution ${i} sums to ${total}, not 1`);
  }
  return vocab;
}
