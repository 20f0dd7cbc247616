/**
 * Counter-based randomness for sampling and verification.
 *
 * A draw is a pure hash of (seed, position, stream), not the next state of a
 * sequential generator. So the edge and the origin can each compute the draw
 * for "position 17, acceptance test" without agreeing on how many draws came
 * before it, a retried round sees the same draws, and a seeded request is
 * reproducible. The same idea as Philox/Threefry (Salmon et al. 2011, "Parallel
 * random numbers: as easy as 1, 2, 3"), with a smaller mixer: this is for
 * statistical quality, not cryptography.
 *
 * Only 32-bit integer operations (Math.imul, shifts, xor) are used, so the
 * output is bit-identical in Node, browsers and Cloudflare Workers.
 */

/** Which draw at a position a random number is for: separate streams keep draws independent and reproducible. */
export type RngStream = 'draft' | 'accept' | 'residual' | 'sample';

export interface Rng {
  /** A uniform number in [0, 1) with 53 random bits, a pure function of (seed, position, stream). */
  uniform(position: number, stream: RngStream): number;
}

// Arbitrary odd 32-bit constants, one per stream, so streams never share an input.
const STREAM_KEY: Record<RngStream, number> = {
  draft: 0x9e3779b9,
  accept: 0x7f4a7c15,
  residual: 0x85ebca6b,
  sample: 0xc2b2ae35,
};

const TWO_POW_32 = 2 ** 32;

/** murmur3's 32-bit finaliser: a bijection on 32-bit words with full avalanche. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Low and high 32-bit words of a non-negative or negative safe integer (two's complement for negatives). */
function splitWords(value: number): [number, number] {
  return [value >>> 0, Math.floor(value / TWO_POW_32) >>> 0];
}

/**
 * Hash five 32-bit words into 53 bits. Two lanes absorb every word with
 * different multipliers, then two rounds of cross-mixing make each output bit
 * depend on every input bit. Each absorb step is a bijection of the lane for a
 * fixed lane state, so inputs differing in one word never collide in that lane.
 */
function hashToUnit(words: readonly number[]): number {
  let a = 0x243f6a88;
  let b = 0xb7e15162;
  for (const word of words) {
    a = fmix32((a ^ word) >>> 0);
    b = fmix32((Math.imul(b ^ word, 0x27d4eb2f) + a) >>> 0);
  }
  // Two rounds of the mixer over both lanes.
  for (let round = 0; round < 2; round++) {
    a = fmix32((a + Math.imul(b, 0x165667b1)) >>> 0);
    b = fmix32((b ^ ((a << 13) | (a >>> 19))) >>> 0);
  }
  // 27 high bits of a and 26 high bits of b: the genrand_res53 construction (Mersenne Twister reference code).
  return ((a >>> 5) * 67108864 + (b >>> 6)) / 9007199254740992;
}

function assertSafeInteger(value: number, what: string): void {
  if (!Number.isSafeInteger(value)) throw new RangeError(`${what} must be a safe integer, got ${value}`);
}

/**
 * A counter-based generator: `uniform(position, stream)` hashes (seed, position, stream).
 * Same inputs give the same output on every platform.
 */
export function counterRng(seed: number): Rng {
  assertSafeInteger(seed, 'rng seed');
  const [seedLo, seedHi] = splitWords(seed);
  return {
    uniform(position: number, stream: RngStream): number {
      if (!Number.isSafeInteger(position) || position < 0) {
        throw new RangeError(`rng position must be a non-negative safe integer, got ${position}`);
      }
      const streamKey = STREAM_KEY[stream];
      if (streamKey === undefined) throw new RangeError(`unknown rng stream '${String(stream)}'`);
      const [positionLo, positionHi] = splitWords(position);
      return hashToUnit([seedLo, seedHi, streamKey, positionLo, positionHi]);
    },
  };
}

/**
 * The generator for one verification round: draws independent of every other round's.
 *
 * Why it exists: block verification (Sun et al. 2024) looks at the acceptance
 * draws and drafted tokens of *every* position in the block, including those
 * after the accepted prefix. The next round starts right after the accepted
 * prefix, so with a single `counterRng(seed)` it would reuse draws (and draft
 * draws) whose values already influenced where this round stopped — they are
 * no longer uniform given the output so far, and the output distribution
 * drifts from the target's. Token-level verification stops reading at the
 * first rejection, so it is safe with one generator, but a fresh one per round
 * is safe for both. Key it by something unique to the round and known to both
 * sides, such as the round's start offset (a replayed round then sees the same
 * draws, as it should).
 */
export function roundRng(seed: number, round: number): Rng {
  assertSafeInteger(seed, 'rng seed');
  assertSafeInteger(round, 'rng round');
  const [seedLo, seedHi] = splitWords(seed);
  const [roundLo, roundHi] = splitWords(round);
  // Derive a 53-bit seed from (seed, round) with the same hash under a stream key no draw uses.
  const derived = hashToUnit([seedLo, seedHi, 0x3c6ef372, roundLo, roundHi]) * 9007199254740992;
  return counterRng(derived);
}

/**
 * The generator for one row (path) of a draft tree in a round
 * (shared/sampling/multipath.ts): row 0 is exactly `roundRng(seed, round)`, so
 * a tree that is a single path draws what a single-path round draws; every
 * other row's draws are independent of row 0's and of each other.
 */
export function branchRng(seed: number, round: number, row: number): Rng {
  assertSafeInteger(row, 'rng row');
  if (row < 0) throw new RangeError(`rng row must be non-negative, got ${row}`);
  if (row === 0) return roundRng(seed, round);
  const [seedLo, seedHi] = splitWords(seed);
  const [roundLo, roundHi] = splitWords(round);
  const [rowLo, rowHi] = splitWords(row);
  // A stream key no draw or roundRng uses, so a row's seed never equals another generator's.
  const derived = hashToUnit([seedLo, seedHi, 0x510e527f, roundLo, roundHi, rowLo, rowHi]) * 9007199254740992;
  return counterRng(derived);
}
