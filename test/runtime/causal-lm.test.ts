import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { truncateKvCache, type LoadedModel } from '../../shared/model';
import { DRAFT_DIR, loadNodeModel, TARGET_DIR } from '../support/models';

/** The one runtime both sides use, on the shipped models and on a Hugging Face-layout GQA fixture. */
const models: Array<[string, string, 'full' | 'quantized']> = [
  ['target (fp32)', TARGET_DIR, 'full'],
  ['draft (int8)', DRAFT_DIR, 'quantized'],
  ['HF layout with GQA', 'test/fixtures/hf-gqa', 'full'],
];

const tokens = [5, 17, 300, 42, 9, 1000, 77, 12, 3, 64, 128, 256];

/**
 * fp32 models agree to rounding. int8 models use DynamicQuantizeLinear, whose
 * activation scale is taken over the whole input tensor, so logits depend a
 * little on how tokens are batched; allow for that, and require the same top token.
 */
// int8 is dynamically quantized: a pass scales activations over the rows it runs, so a cached step and one
// whole pass round differently, and by how much depends on the CPU's kernels (up to 0.68 measured on an AMD
// EPYC without VNNI, whose AVX2 u8s8 path saturates; under 0.15 on others). A broken cache (wrong positions,
// lost rows) moves logits by several units; and the argmax must agree regardless.
const tolerance = { full: 1e-3, quantized: 1 };

/**
 * Rows of `a` and `b` have the same argmax, except where `b`'s top two are
 * within `margin` (a near-tie that rounding may flip: int8 only).
 */
function sameArgmaxRows(a: Float32Array, b: Float32Array, vocab: number, margin = 0) {
  for (let r = 0; r < a.length / vocab; r++) {
    const row = (x: Float32Array) => x.subarray(r * vocab, (r + 1) * vocab);
    const top = (x: Float32Array) => x.indexOf(Math.max(...x));
    const [first, second] = [...row(b)].sort((x, y) => y - x);
    if (first - second > margin && top(row(a)) !== top(row(b))) return false;
  }
  return true;
}

function maxAbsDiff(a: Float32Array, b: Float32Array) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.each(models)('CausalLM on %s', (_name, dir, precision) => {
  const present = existsSync(`${dir}/config.json`);
  let model: LoadedModel;
  const load = async () => (model ??= await loadNodeModel(dir, precision));

  it.skipIf(!present)('cached decoding equals one uncached pass', async () => {
    const { lm, config } = await load();
    const ids = tokens.map((t) => t % config.vocabSize);
    const whole = await lm.forward(ids, lm.emptyCache());
    let cache = lm.emptyCache();
    // Feed in uneven pieces: prefill, then single tokens, then a block (the verify shape).
    for (const piece of [ids.slice(0, 5), ids.slice(5, 6), ids.slice(6, 7), ids.slice(7)]) {
      const step = await lm.forward(piece, cache);
      const from = cache.length;
      const expected = whole.logits.subarray(from * config.vocabSize, (from + piece.length) * config.vocabSize);
      expect(maxAbsDiff(step.logits, expected)).toBeLessThan(tolerance[precision]);
      expect(sameArgmaxRows(step.logits, expected, config.vocabSize, 2 * tolerance[precision])).toBe(true);
      cache = step.cache;
    }
    expect(cache.length).toBe(ids.length);
  });

  it.skipIf(!present)('truncating the cache and continuing equals never having seen the rest', async () => {
    const { lm, config } = await load();
    const ids = tokens.map((t) => t % config.vocabSize);
    const full = await lm.forward(ids, lm.emptyCache());
    const rewound = truncateKvCache(full.cache, 6);
    expect(rewound.length).toBe(6);
    const resumed = await lm.forward([ids[6], 99 % config.vocabSize], rewound);
    const fresh = await lm.forward([...ids.slice(0, 7), 99 % config.vocabSize], lm.emptyCache());
    const expected = fresh.logits.subarray(6 * config.vocabSize);
    expect(maxAbsDiff(resumed.logits, expected)).toBeLessThan(tolerance[precision]);
    expect(sameArgmaxRows(resumed.logits, expected, config.vocabSize, 2 * tolerance[precision])).toBe(true);
  });

  it.skipIf(!present)('refuses sequences past the context with a clear error', async () => {
    const { lm, config } = await load();
    await expect(lm.forward(new Array(config.maxPositions + 1).fill(1), lm.emptyCache())).rejects.toThrow(/exceeds the model context/);
  });
});

describe('truncateKvCache', () => {
  it('keeps the first positions of every head and rejects growing', () => {
    // 2 heads, 3 positions, head dim 2: values encode (head, position, dim).
    const layer = Float32Array.from({ length: 12 }, (_, i) => i);
    const cache = { length: 3, numKvHeads: 2, headDim: 2, keys: [layer], values: [layer] };
    const cut = truncateKvCache(cache, 2);
    expect([...cut.keys[0]]).toEqual([0, 1, 2, 3, 6, 7, 8, 9]);
    expect(truncateKvCache(cache, 3)).toBe(cache);
    expect(() => truncateKvCache(cache, 4)).toThrow(RangeError);
  });
});
