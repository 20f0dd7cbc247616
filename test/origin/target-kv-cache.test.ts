import { beforeAll, describe, expect, it } from 'vitest';
import type { LoadedModel } from '../../shared/model';
import { argmax } from '../../shared/sampling';
import { TargetModel } from '../../origin/target';
import { loadNodeModel, TARGET_DIR } from '../support/models';

/** The origin's target-KV memory on the real target model: reuse, tenancy, and the byte budget. */
let model: LoadedModel;
beforeAll(async () => {
  model = await loadNodeModel(TARGET_DIR);
});

const tokensOf = (seed: number, n: number) => Array.from({ length: n }, (_, i) => (seed * 7919 + i * 131 + ((i * i) % 17)) % 4000 + 1);

/** Last-row logits of `tokens` computed from scratch. */
async function freshLastRow(tokens: number[]) {
  const r = await model.lm.forward(tokens, model.lm.emptyCache());
  const v = model.config.vocabSize;
  return r.logits.subarray((r.rows - 1) * v, r.rows * v);
}

function maxAbsDiff(a: Float32Array, b: Float32Array) {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe('origin target KV cache', () => {
  it('reuses a shared prefix across requests through hash-chained blocks, with the same logits', async () => {
    const target = new TargetModel(model.lm, { blockTokens: 16, maxSessions: 1 });
    const prefix = tokensOf(1, 100);
    const a = [...prefix, ...tokensOf(2, 10)];
    const b = [...prefix, ...tokensOf(3, 10)];
    expect((await target.logitsFrom(a, a.length - 1)).cachedTokens).toBe(0);
    // Another sequence takes the only live-sequence slot, so b can only come from blocks.
    await target.logitsFrom(tokensOf(4, 20), 19);
    const hit = await target.logitsFrom(b, b.length - 1);
    expect(hit.cachedTokens).toBe(96); // 6 full blocks of the 100 shared tokens
    const v = model.config.vocabSize;
    expect(maxAbsDiff(hit.logits.subarray(0, v), await freshLastRow(b))).toBeLessThan(1e-3);
    expect(target.kv.stats().blocks).toBeGreaterThan(6);
  });

  it('continues a generation from its live sequence, rejected draft tail cut off', async () => {
    const target = new TargetModel(model.lm);
    const context = tokensOf(5, 40);
    await target.logitsFrom([...context, 11, 12, 13], context.length - 1);
    // Round 2: the target accepted 11 and corrected to 99.
    const next = [...context, 11, 99];
    const round = await target.logitsFrom([...next, 5, 6], next.length - 1);
    expect(round.cachedTokens).toBe(context.length + 1);
    const v = model.config.vocabSize;
    expect(maxAbsDiff(round.logits.subarray(0, v), await freshLastRow(next))).toBeLessThan(1e-3);
    expect(target.kv.stats().sessions).toBe(1);
  });

  it('keeps a held sequence (an open session) warm while other sequences take the live slots', async () => {
    const target = new TargetModel(model.lm, { blockTokens: 16, maxSessions: 2 });
    const held = target.kv.hold('s');
    const mine = tokensOf(8, 37);
    await target.logitsFrom(mine, mine.length - 1, 's');
    held.tokens = mine;
    // Three other generations would push an unheld sequence out of the two live slots.
    for (const seed of [9, 10, 11]) await target.logitsFrom(tokensOf(seed, 30), 29, 's');
    const next = [...mine, 7];
    expect((await target.logitsFrom(next, next.length - 1, 's')).cachedTokens).toBe(mine.length);
    held.release();
    held.tokens = next;
    for (const seed of [12, 13, 14]) await target.logitsFrom(tokensOf(seed, 30), 29, 's');
    // Released: only its full blocks are left to reuse.
    expect((await target.logitsFrom([...next, 8], next.length, 's')).cachedTokens).toBe(32);
  });

  it('never shares KV across cache salts', async () => {
    const target = new TargetModel(model.lm);
    const tokens = tokensOf(6, 70);
    await target.logitsFrom(tokens, tokens.length - 1, 'tenant-a');
    expect((await target.logitsFrom(tokens, tokens.length - 1, 'tenant-b')).cachedTokens).toBe(0);
    expect((await target.logitsFrom(tokens, tokens.length - 1, 'tenant-a')).cachedTokens).toBe(tokens.length - 1);
  });

  it('stays within its memory budget under many sessions and still decodes exactly', async () => {
    const { numLayers, numKvHeads, headDim } = model.config;
    const bytesPerToken = numLayers * 2 * numKvHeads * headDim * 4;
    const maxBytes = 200 * bytesPerToken; // room for about two of the sequences below
    const target = new TargetModel(model.lm, { maxBytes, blockTokens: 8 });
    const v = model.config.vocabSize;
    let reused = 0;
    for (let s = 0; s < 30; s++) {
      // Sessions share a 48-token system prompt in pairs, then diverge.
      const tokens = [...tokensOf(100 + (s >> 1), 48), ...tokensOf(1000 + s, 30)];
      const generated: number[] = [];
      for (let step = 0; step < 3; step++) {
        const all = [...tokens, ...generated];
        const r = await target.logitsFrom(all, all.length - 1);
        if (step === 0) reused += r.cachedTokens;
        generated.push(argmax(r.logits.subarray(0, v)));
        expect(target.kv.bytes).toBeLessThanOrEqual(maxBytes);
      }
      expect(argmax(await freshLastRow([...tokens, ...generated.slice(0, 2)]))).toBe(generated[2]);
    }
    expect(reused).toBeGreaterThan(0);
    expect(target.kv.stats().bytes).toBeGreaterThan(0);
  });

  it('keeps nothing when one sequence exceeds the whole budget', async () => {
    const target = new TargetModel(model.lm, { maxBytes: 1000 });
    const tokens = tokensOf(7, 50);
    await target.logitsFrom(tokens, tokens.length - 1);
    expect(target.kv.bytes).toBe(0);
    expect((await target.logitsFrom(tokens, tokens.length - 1)).cachedTokens).toBe(0);
  });
});
