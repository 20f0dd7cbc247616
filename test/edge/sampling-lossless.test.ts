import { describe, expect, it } from 'vitest';
import { processLogits } from '../../shared/sampling';
import { chiSquareTest } from '../stats';
import { complete } from '../support/edge-client';
import { loadNodeModel, TARGET_DIR } from '../support/models';

/**
 * Losslessness, statistically, through the whole stack (workerd draft + origin
 * verifier): with top_k = 8 the first two tokens have at most 64 outcomes, so
 * target-only sampling's distribution can be enumerated exactly from the target
 * model. Speculative samples over 2,000 seeds must fit it. A wrong acceptance
 * rule or residual would skew the counts (test/sampling shows the same
 * simulation rejecting a broken residual at p < 1e-6).
 */
const samples = 2000;
const sampling = { temperature: 1, top_k: 8, top_p: 1 };
const prompt = 'function parse(input) {\n  const result = ';

/**
 * Every mode and placement: a pipelined successor decides token 2 whenever token 1's block is
 * accepted in full (max_tokens 3 leaves it room to be drafted); adaptive mode
 * may hand token 2 to the origin's own stream (RNG offset 1).
 */
const cases: Array<{ name: string; speculation: Record<string, unknown>; maxTokens: number; mustSpeculate: boolean }> = [
  { name: 'lockstep k = 1', speculation: { mode: 'lockstep', draft_length: 1 }, maxTokens: 2, mustSpeculate: true },
  // max_tokens 3 so k = 2 drafts fit: block verification then judges the pair as a block.
  { name: 'lockstep k = 2, block verification', speculation: { mode: 'lockstep', draft_length: 2, method: 'block' }, maxTokens: 3, mustSpeculate: true },
  { name: 'pipelined k = 1, depth 2', speculation: { mode: 'pipelined', draft_length: 1, depth: 2 }, maxTokens: 3, mustSpeculate: true },
  { name: 'adaptive k <= 2', speculation: { mode: 'adaptive', draft_length: 2 }, maxTokens: 3, mustSpeculate: false },
  // Drafted and verified next to the target (the test origin hosts the draft: scripts/stack.ts).
  { name: 'placement origin, k = 1', speculation: { placement: 'origin', draft_length: 1 }, maxTokens: 2, mustSpeculate: true },
];

describe('speculative sampling matches target-only sampling', () => {
  it.each(cases)(`$name: first two tokens over ${samples} seeds (chi-square)`, async ({ speculation, maxTokens, mustSpeculate }) => {
    const first = await complete({ prompt, max_tokens: 1, temperature: 0, return_token_ids: true });
    const promptIds: number[] = first.json.choices[0].prompt_token_ids;

    // Exact target-only distribution of (t1, t2).
    const target = await loadNodeModel(TARGET_DIR);
    const vocab = target.config.vocabSize;
    const expectedProb = new Map<string, number>();
    const p1run = await target.lm.forward(promptIds, target.lm.emptyCache());
    const p1 = processLogits(p1run.logits.subarray((p1run.rows - 1) * vocab), sampling);
    for (let t1 = 0; t1 < vocab; t1++) {
      if (p1[t1] === 0) continue;
      const p2run = await target.lm.forward([t1], p1run.cache);
      const p2 = processLogits(p2run.logits, sampling);
      for (let t2 = 0; t2 < vocab; t2++) if (p2[t2] > 0) expectedProb.set(`${t1},${t2}`, p1[t1] * p2[t2]);
    }

    const counts = new Map<string, number>();
    let drafted = 0;
    let accepted = 0;
    const seeds = Array.from({ length: samples }, (_, i) => i);
    const worker = async () => {
      for (let seed = seeds.shift(); seed !== undefined; seed = seeds.shift()) {
        const { status, json } = await complete({ prompt: promptIds, max_tokens: maxTokens, ...sampling, seed, return_token_ids: true, speculation });
        expect(status).toBe(200);
        const key = json.choices[0].token_ids.slice(0, 2).join(',');
        counts.set(key, (counts.get(key) ?? 0) + 1);
        drafted += json.speculation.drafted + (json.speculation.origin_speculation?.drafted ?? 0);
        accepted += json.speculation.accepted + (json.speculation.origin_speculation?.accepted ?? 0);
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));

    const unexpected = [...counts.keys()].filter((k) => !expectedProb.has(k));
    expect(unexpected, 'outcomes target-only sampling can never produce').toEqual([]);
    const keys = [...expectedProb.keys()];
    const result = chiSquareTest(
      keys.map((k) => counts.get(k) ?? 0),
      keys.map((k) => expectedProb.get(k)! * samples),
    );
    console.log(`chi-square ${result.statistic.toFixed(1)} on ${result.df} df, p = ${result.pValue.toFixed(4)}; draft acceptance ${(accepted / drafted).toFixed(3)}`);
    // Both branches must be exercised for the test to mean anything.
    if (mustSpeculate) {
      expect(accepted).toBeGreaterThan(samples * 0.05);
      expect(drafted - accepted).toBeGreaterThan(samples * 0.05);
    }
    expect(result.pValue).toBeGreaterThan(1e-3);
  });
});
