/**
 * Tiny deterministic "language models" and a speculative generation loop, for
 * testing verification by simulation: the tokens it emits must be distributed
 * exactly as target-only sampling.
 *
 * A model's next-token distribution depends on the whole prefix (a hash of it
 * picks the logits), like a real LM, so a test catches verification that
 * forgets which prefix each p or q belongs to.
 */
import {
  counterRng,
  processLogits,
  sampleFrom,
  sparseToDense,
  truncateToSparse,
  type DraftToken,
  type Rng,
  type SamplingParams,
  type VerifyOutcome,
} from '../../shared/sampling';

export type Verifier = (draftTokens: DraftToken[], p: Float64Array[], rng: Rng, offset: number) => VerifyOutcome;

/** Next-token distribution given a prefix. */
export type ToyModel = (prefix: readonly number[]) => Float64Array;

/** Logits that are a fixed pseudo-random function of (seed, prefix): roughly N(0, scale²) per token. */
export function toyLogits(seed: number, vocab: number, scale: number): (prefix: readonly number[]) => Float64Array {
  const rng = counterRng(seed);
  return (prefix) => {
    // FNV-1a over the prefix picks a row of the (virtual) logit table.
    let hash = 0x811c9dc5;
    for (const token of prefix) hash = Math.imul(hash ^ (token + 1), 0x01000193) >>> 0;
    hash = Math.imul(hash ^ prefix.length, 0x01000193) >>> 0;
    const logits = new Float64Array(vocab);
    for (let t = 0; t < vocab; t++) {
      // Sum of three uniforms: a cheap bell shape, mean 0, variance 1/4 before scaling.
      let s = 0;
      for (let j = 0; j < 3; j++) s += rng.uniform(hash * vocab * 3 + t * 3 + j, 'sample') - 0.5;
      logits[t] = s * 2 * scale;
    }
    return logits;
  };
}

/** Memoises a model by prefix: the simulations ask for the same prefixes many times. */
export function memoise(model: ToyModel): ToyModel {
  const cache = new Map<string, Float64Array>();
  return (prefix) => {
    const key = prefix.join(',');
    let dist = cache.get(key);
    if (!dist) cache.set(key, (dist = model(prefix)));
    return dist;
  };
}

export interface SpeculationCase {
  name: string;
  vocab: number;
  /** Draft tokens per round. */
  k: number;
  /** The target's processed distribution p(· | prefix). */
  target: ToyModel;
  /** The draft's full processed distribution, before truncation to sparse q. */
  draft: ToyModel;
  /** Entries of q sent (truncateToSparse); absent = deterministic proposals (draft argmax). */
  qEntries?: number;
}

/**
 * A target and a draft that agree only partly: the draft's logits mix the
 * target's with independent noise, and the two use different sampling
 * parameters, so q proposes tokens p masks out and misses tokens p keeps.
 */
export function makeCase(options: {
  name: string;
  seed: number;
  vocab: number;
  k: number;
  targetParams: SamplingParams;
  draftParams: SamplingParams;
  /** Weight of independent noise in the draft's logits (0 = same logits as the target). */
  draftNoise: number;
  qEntries?: number;
}): SpeculationCase {
  const targetLogits = toyLogits(options.seed, options.vocab, 2);
  const noiseLogits = toyLogits(options.seed + 1, options.vocab, 2);
  const target = memoise((prefix) => processLogits(targetLogits(prefix), options.targetParams));
  const draft = memoise((prefix) => {
    const base = targetLogits(prefix);
    const noise = noiseLogits(prefix);
    const mixed = base.map((logit, t) => (1 - options.draftNoise) * logit + options.draftNoise * noise[t]);
    return processLogits(mixed, options.draftParams);
  });
  return { name: options.name, vocab: options.vocab, k: options.k, target, draft, qEntries: options.qEntries };
}

/** Which Rng a round uses: one for the whole generation, or a fresh one per round. */
export type RngForRound = (seed: number, roundOffset: number) => Rng;

export interface Generation {
  tokens: number[];
  /** Drafts accepted in the first round. */
  firstAccepted: number;
  rounds: number;
}

/**
 * Speculative generation of `length` tokens from an empty prompt: each round
 * drafts k tokens (sampling q with the 'draft' stream, or taking the draft's
 * argmax for deterministic proposals), computes the target's k+1
 * distributions along the draft, and lets `verify` decide.
 */
export function generate(c: SpeculationCase, verify: Verifier, seed: number, length: number, rngForRound: RngForRound): Generation {
  const tokens: number[] = [];
  let firstAccepted = -1;
  let rounds = 0;
  while (tokens.length < length) {
    const offset = tokens.length;
    const rng = rngForRound(seed, offset);
    const drafts: DraftToken[] = [];
    const path = [...tokens];
    for (let i = 0; i < c.k; i++) {
      const full = c.draft(path);
      let draft: DraftToken;
      if (c.qEntries === undefined) {
        draft = { token: argmaxLowest(full) };
      } else {
        const q = truncateToSparse(full, c.qEntries);
        draft = { token: sampleFrom(sparseToDense(q, c.vocab), rng.uniform(offset + i, 'draft')), q };
      }
      drafts.push(draft);
      path.push(draft.token);
    }
    const p = Array.from({ length: c.k + 1 }, (_, i) => c.target(path.slice(0, tokens.length + i)));
    const outcome = verify(drafts, p, rng, offset);
    if (rounds === 0) firstAccepted = outcome.acceptedCount;
    rounds++;
    tokens.push(...outcome.tokens);
  }
  return { tokens: tokens.slice(0, length), firstAccepted, rounds };
}

function argmaxLowest(dist: Float64Array): number {
  let best = 0;
  for (let t = 1; t < dist.length; t++) if (dist[t] > dist[best]) best = t;
  return best;
}

/** Target-only probability of every token sequence of `length`, indexed base-vocab (first token most significant). */
export function targetSequenceProbabilities(target: ToyModel, vocab: number, length: number): number[] {
  const probabilities: number[] = [];
  const walk = (prefix: number[], probability: number) => {
    if (prefix.length === length) {
      probabilities.push(probability);
      return;
    }
    const p = target(prefix);
    for (let t = 0; t < vocab; t++) walk([...prefix, t], probability * p[t]);
  };
  walk([], 1);
  return probabilities;
}

export function sequenceIndex(tokens: readonly number[], vocab: number): number {
  return tokens.reduce((index, t) => index * vocab + t, 0);
}

export interface SimulationResult {
  observed: number[];
  expected: number[];
  meanFirstAccepted: number;
  /** Standard error of meanFirstAccepted. */
  firstAcceptedStdError: number;
}

/** Runs `generate` for seeds 0..runs-1 and tallies the first `length` tokens against target-only sampling. */
export function simulate(c: SpeculationCase, verify: Verifier, options: { runs: number; length: number; rngForRound: RngForRound; seedBase?: number }): SimulationResult {
  const { runs, length, rngForRound, seedBase = 0 } = options;
  const expected = targetSequenceProbabilities(c.target, c.vocab, length).map((probability) => probability * runs);
  const observed = new Array<number>(expected.length).fill(0);
  let sum = 0;
  let sumSquares = 0;
  for (let run = 0; run < runs; run++) {
    const generation = generate(c, verify, seedBase + run, length, rngForRound);
    observed[sequenceIndex(generation.tokens, c.vocab)]++;
    sum += generation.firstAccepted;
    sumSquares += generation.firstAccepted ** 2;
  }
  const mean = sum / runs;
  const variance = sumSquares / runs - mean ** 2;
  return { observed, expected, meanFirstAccepted: mean, firstAcceptedStdError: Math.sqrt(variance / runs) };
}

export const sharedRng: RngForRound = (seed) => counterRng(seed);
