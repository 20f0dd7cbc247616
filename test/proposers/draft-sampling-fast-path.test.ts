import { beforeAll, describe, expect, it } from 'vitest';
import { logitsRow } from '../../shared/model';
import { processLogits, sparseFromLogits, truncateToSparse, type SamplingParams } from '../../shared/sampling';
import { DRAFT_DIR, loadFolderTokenizer, loadNodeModel } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * The draft's per-token sampling work is `sparseFromLogits` (one pass, no
 * dense vectors, packed-key sorts). It must be bit for bit the
 * `truncateToSparse(processLogits(...))` it replaces, or seeded drafts and
 * their q change: compared with toStrictEqual (Object.is on every number).
 */
const settings: SamplingParams[] = [
  { temperature: 1, top_p: 1, top_k: 0 },
  { temperature: 0.8, top_p: 1, top_k: 0 },
  { temperature: 0.8, top_p: 0.95, top_k: 0 },
  { temperature: 0.6, top_p: 0.5, top_k: 0 },
  { temperature: 0.7, top_p: 1, top_k: 40 },
  { temperature: 1.3, top_p: 0.9, top_k: 50 },
  { temperature: 1, top_p: 1, top_k: 1000 },
  { temperature: 1, top_p: 0.99, top_k: 3000 },
  { temperature: 1e-30, top_p: 1, top_k: 0 },
];
let rows: Float32Array[];

beforeAll(async () => {
  const { lm } = await loadNodeModel(DRAFT_DIR, 'quantized');
  const tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  rows = [];
  for (const text of heldOutPrompts(3, 400)) {
    const result = await lm.forward(tokenizer.encode(text), lm.emptyCache());
    for (let r = 0; r < result.rows; r += 9) rows.push(logitsRow(result, r, lm.logitsWidth).slice());
  }
});

/** Logits with the awkward cases: exact ties, −0 next to +0, −Infinity (masked), a huge spread. */
function awkward(seed: number, vocab = 4096): Float32Array {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  return Float32Array.from({ length: vocab }, (_, i) => {
    const u = next();
    if (u < 0.05) return -Infinity;
    if (u < 0.1) return i % 2 ? -0 : 0;
    if (u < 0.3) return Math.round(u * 20) / 4; // many exact ties
    return (next() - 0.5) * (seed % 2 ? 60 : 6);
  });
}

/**
 * The specification, written the slow way (comparator sorts over everything, as
 * shared/sampling/distribution.ts did before its fast paths): the fast paths
 * must agree with it bit for bit, or seeded drafts change.
 */
function reference(logits: Float32Array, p: SamplingParams, maxEntries: number): Array<[number, number]> {
  const vocab = logits.length;
  let max = -Infinity;
  for (const l of logits) if (l > max) max = l;
  const weights = Float64Array.from(logits, (l) => Math.exp((l - max) / p.temperature));
  const byLogit = (a: number, b: number) => logits[b] - logits[a] || a - b;
  const topK = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
  let kept: number[] | null = topK < vocab ? Array.from({ length: vocab }, (_, i) => i).sort(byLogit).slice(0, topK) : null;
  if (p.top_p < 1) {
    let total = 0;
    if (kept) for (const t of kept) total += weights[t];
    else for (let i = 0; i < vocab; i++) total += weights[i];
    const floor = kept ? 0 : ((1 - p.top_p) / vocab) * total;
    const ordered = (kept ?? Array.from({ length: vocab }, (_, i) => i)).filter((t) => weights[t] > 0 && weights[t] >= floor).sort(byLogit);
    let cumulative = 0;
    let cut = ordered.length;
    for (let j = 0; j < ordered.length; j++) {
      cumulative += weights[ordered[j]] / total;
      if (cumulative >= p.top_p - 1e-12) {
        cut = j + 1;
        break;
      }
    }
    kept = ordered.slice(0, cut);
  }
  const probs = new Float64Array(vocab);
  let total = 0;
  if (kept === null) {
    for (let i = 0; i < vocab; i++) total += weights[i];
    for (let i = 0; i < vocab; i++) probs[i] = weights[i] / total;
  } else {
    for (const t of kept) total += weights[t];
    for (const t of kept) probs[t] = weights[t] / total;
  }
  const ranked = Array.from({ length: vocab }, (_, i) => i)
    .sort((a, b) => probs[b] - probs[a] || a - b)
    .slice(0, maxEntries)
    .filter((t) => probs[t] > 0);
  const sum = ranked.reduce((acc, t) => acc + probs[t], 0);
  return ranked.map((t) => [t, probs[t] / sum]);
}

describe('sparseFromLogits', () => {
  it('equals the slow specification exactly (real draft logits and awkward ones)', () => {
    for (const params of settings) {
      for (const row of rows.slice(0, 12)) expect(sparseFromLogits(row, params, 32)).toStrictEqual(reference(row, params, 32));
      for (let seed = 1; seed <= 8; seed++) {
        const row = awkward(seed, seed % 3 === 0 ? 37 : 4096);
        for (const q of [1, 32]) expect(sparseFromLogits(row, params, q)).toStrictEqual(reference(row, params, q));
      }
    }
  });

  it('equals truncateToSparse(processLogits(...)) exactly on real draft logits', () => {
    expect(rows.length).toBeGreaterThan(20);
    for (const params of settings) {
      for (const q of [1, 32, 256]) {
        for (const row of rows) expect(sparseFromLogits(row, params, q, new Float64Array(row.length))).toStrictEqual(truncateToSparse(processLogits(row, params), q));
      }
    }
  });

  it('equals it exactly on ties, signed zeros, masked tokens and small vocabularies', () => {
    for (let seed = 1; seed <= 24; seed++) {
      const row = awkward(seed, seed % 3 === 0 ? 37 : 4096);
      for (const params of settings) {
        for (const q of [1, 8, 32]) expect(sparseFromLogits(row, params, q)).toStrictEqual(truncateToSparse(processLogits(row, params), q));
      }
    }
  });

  it('ranks −0 and +0 as equal logits (ties by lower id), as the comparator does', () => {
    const row = Float32Array.from({ length: 16 }, (_, i) => (i === 9 ? 1 : i % 2 ? 0 : -0));
    for (const params of [{ temperature: 1, top_p: 1, top_k: 3 }, { temperature: 1, top_p: 0.3, top_k: 0 }, { temperature: 1, top_p: 0.5, top_k: 6 }]) {
      expect(sparseFromLogits(row, params, 16)).toStrictEqual(reference(row, params, 16));
      expect(truncateToSparse(processLogits(row, params), 16)).toStrictEqual(reference(row, params, 16));
    }
    // top-k 3 keeps token 9 and the two lowest ids among the zeros, whatever their sign.
    expect(sparseFromLogits(row, { temperature: 1, top_p: 1, top_k: 3 }, 16).map(([t]) => t)).toEqual([9, 0, 1]);
  });

  it('throws where processLogits throws', () => {
    expect(() => sparseFromLogits(new Float32Array([1, NaN]), settings[0], 4)).toThrow(/logit 1 is NaN/);
    expect(() => sparseFromLogits(new Float32Array([-Infinity]), settings[0], 4)).toThrow(/every logit is -Infinity/);
    expect(() => sparseFromLogits(new Float32Array([1]), { temperature: 0, top_p: 1, top_k: 0 }, 4)).toThrow(/greedy/);
    expect(() => sparseFromLogits(new Float32Array([1]), settings[0], 0)).toThrow(/maxEntries/);
  });
});
