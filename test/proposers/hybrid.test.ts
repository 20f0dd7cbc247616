import { beforeAll, describe, expect, it } from 'vitest';
import { createProposer, proposerFor } from '../../functions/proposers';
import { DraftModelProposer } from '../../functions/proposers/draft-model';
import { HybridProposer } from '../../functions/proposers/hybrid';
import { PredictionProposer } from '../../functions/proposers/prediction';
import type { Match, Matcher, Proposer } from '../../functions/proposers/types';
import { logitsRow, truncateKvCache, type LoadedModel } from '../../shared/model';
import { argmax, type DraftToken } from '../../shared/sampling';
import { DRAFT_DIR, loadNodeModel } from '../support/models';

const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const sampled = { ...greedy, temperature: 1 };

/** A fallback that records its calls and drafts [7, 7, …]. */
function fakeModel(): Proposer & { calls: number } {
  return {
    name: 'draft-model',
    calls: 0,
    async propose(_c: readonly number[], k: number): Promise<DraftToken[]> {
      this.calls++;
      return Array.from({ length: k }, () => ({ token: 7 }));
    },
  };
}

/** A matcher that always finds `match`. */
const fixedMatcher = (name: string, match: Match): Matcher => ({
  name,
  match: (_c, limit) => ({ ...match, tokens: match.tokens.slice(0, limit) }),
  propose: async () => match.tokens.map((token) => ({ token })),
});
const strongMatch: Match = { tokens: [1, 2, 3, 4, 5, 6, 7, 8], matchLength: 6, expectedAccepted: 8, support: { agree: 3, total: 3 } };

describe('hybrid proposer', () => {
  it('a long, frequent match wins the round and may be longer than k; the model is not run', async () => {
    const model = fakeModel();
    const hybrid = new HybridProposer([{ matcher: fixedMatcher('suffix', strongMatch), minMatchLength: 3, minExpectedAccepted: 2, sampled: false }], model);
    const draft = await hybrid.propose([1], 3, greedy, { maxMatchTokens: 6 });
    expect(draft.map((d) => d.token)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(draft.every((d) => d.q === undefined)).toBe(true);
    expect(hybrid.lastSource).toBe('suffix');
    expect(model.calls).toBe(0);
  });

  it('a short or rare match loses to the draft model, which drafts k', async () => {
    for (const weak of [
      { ...strongMatch, matchLength: 2 },
      { ...strongMatch, expectedAccepted: 1.5 },
    ]) {
      const model = fakeModel();
      const hybrid = new HybridProposer([{ matcher: fixedMatcher('suffix', weak), minMatchLength: 3, minExpectedAccepted: 2, sampled: false }], model);
      expect((await hybrid.propose([1], 3, greedy, { maxMatchTokens: 6 })).map((d) => d.token)).toEqual([7, 7, 7]);
      expect(hybrid.lastSource).toBe('draft-model');
      expect(model.calls).toBe(1);
    }
  });

  it('sampled requests: matches not allowed to draft them are skipped, a prediction still drafts', async () => {
    const model = fakeModel();
    const hybrid = new HybridProposer([{ matcher: fixedMatcher('suffix', strongMatch), minMatchLength: 3, minExpectedAccepted: 2, sampled: false }], model);
    await hybrid.propose([1], 3, sampled);
    expect(hybrid.lastSource).toBe('draft-model');
    const withPrediction = proposerFor('prompt-lookup', { lm: null as never }, { qEntries: 32, promptLength: 1, prediction: [40, 41, 42, 43] });
    expect((await withPrediction.propose([1], 2, sampled, { maxMatchTokens: 4 })).map((d) => d.token)).toEqual([40, 41, 42, 43]);
    expect(withPrediction.lastSource).toBe('prediction');
  });

  it('a member whose drafts keep being rejected loses its rounds, and is tried again later', async () => {
    const model = fakeModel();
    const hybrid = new HybridProposer([{ matcher: fixedMatcher('suffix', { ...strongMatch, expectedAccepted: 4 }), minMatchLength: 3, minExpectedAccepted: 2, sampled: false }], model);
    const sources: string[] = [];
    for (let round = 0; round < 30; round++) {
      await hybrid.propose([1], 4, greedy, { maxMatchTokens: 8 });
      sources.push(hybrid.lastSource);
      // The match is always rejected at once; the model gets 3 of 4 accepted.
      hybrid.observe({ source: hybrid.lastSource, drafted: hybrid.lastSource === 'suffix' ? 8 : 4, accepted: hybrid.lastSource === 'suffix' ? 0 : 3 });
    }
    const suffixRounds = sources.filter((s) => s === 'suffix').length;
    expect(sources[0]).toBe('suffix');
    expect(suffixRounds).toBeLessThan(8);
    expect(suffixRounds).toBeGreaterThan(1);
  });

  it('the prediction is tried first; with no alignment the kind asked for drafts', async () => {
    const prompt = [500, 501];
    const proposer = proposerFor('prompt-lookup', { lm: null as never }, { qEntries: 32, promptLength: prompt.length, prediction: [10, 11, 12, 13, 14, 15] });
    expect((await proposer.propose(prompt, 3, greedy)).map((d) => d.token)).toEqual([10, 11, 12]);
    expect(proposer.lastSource).toBe('prediction');
    // The output left the prediction at once: prompt lookup drafts (a repeat of the prompt's own [1, 2, 3]).
    const context = [...prompt, 1, 2, 3, 9, 1, 2, 3];
    expect((await proposer.propose(context, 2, greedy)).map((d) => d.token)).toEqual([9, 1]);
    expect(proposer.lastSource).toBe('prompt-lookup');
  });

  it('no prediction: the kind asked for, unwrapped', () => {
    expect(proposerFor('suffix', { lm: null as never }, { qEntries: 32 }).name).toBe('suffix');
    expect(proposerFor('suffix', { lm: null as never }, { qEntries: 32, prediction: [] }).name).toBe('suffix');
    expect(createProposer('prediction', { lm: null as never }, { qEntries: 32, prediction: [1] })).toBeInstanceOf(PredictionProposer);
  });
});

describe('the draft model after rounds another proposer drafted', () => {
  let draft: LoadedModel;
  beforeAll(async () => {
    draft = await loadNodeModel(DRAFT_DIR, 'quantized');
  });

  /**
   * The draft's own greedy continuation computed by hand: the KV of `runs` (token chunks, each one forward
   * pass, as the proposer ran them), cut to `keep` positions, then `pending` in one pass, then k steps.
   * (int8 dynamic quantization scales each pass by its own inputs, so the chunking is part of the answer.)
   */
  async function byHand(runs: number[][], keep: number, pending: number[], k: number): Promise<number[]> {
    const vocab = draft.config.vocabSize;
    let cache = draft.lm.emptyCache();
    for (const run of runs) cache = (await draft.lm.forward(run, cache)).cache;
    cache = truncateKvCache(cache, keep);
    const out: number[] = [];
    let next = pending;
    for (let i = 0; i < k; i++) {
      const r = await draft.lm.forward(next, cache);
      cache = r.cache;
      out.push(argmax(logitsRow(r, r.rows - 1, vocab)));
      next = [out.at(-1)!];
    }
    return out;
  }

  it('re-syncs from a context that advanced by many tokens it never saw: keeps the shared prefix, runs the rest in one pass', async () => {
    const prompt = [11, 400, 93, 1200, 7, 88, 512, 300, 301, 302];
    const held = new DraftModelProposer(draft.lm, 32);
    const first = (await held.propose(prompt, 4, greedy)).map((d) => d.token);
    expect(first).toEqual(await byHand([], 0, prompt, 4));
    // 60 tokens arrive from elsewhere (a prediction, a match): the draft's own path was not taken.
    const advanced = [...prompt, ...Array.from({ length: 60 }, (_, i) => (i * 37 + 5) % 4096)];
    const second = (await held.propose(advanced, 4, greedy)).map((d) => d.token);
    expect(second).toEqual(await byHand([prompt, ...first.slice(0, 3).map((t) => [t])], prompt.length, advanced.slice(prompt.length), 4));
    expect(held.draftKv().tokens).toEqual([...advanced, ...second.slice(0, 3)]);
    // Then a rejection far back: everything after position 40 is stale.
    const rejected = [...advanced.slice(0, 40), 9, 9];
    const third = (await held.propose(rejected, 4, greedy)).map((d) => d.token);
    expect(third).toEqual(await byHand([prompt, advanced.slice(prompt.length)], 40, [9, 9], 4));
    expect(held.draftKv().tokens).toEqual([...rejected, ...third.slice(0, 3)]);
  });

  it('syncKv catches up on a whole context (for the prefix cache), dropping its own stale drafts', async () => {
    const prompt = [11, 400, 93, 1200, 7, 88, 512, 300, 301, 302];
    const held = new DraftModelProposer(draft.lm, 32);
    const drafts = (await held.propose(prompt, 4, greedy)).map((d) => d.token);
    const everything = [...prompt, 77, 78, ...Array.from({ length: 30 }, (_, i) => 100 + i)];
    await held.syncKv(everything);
    expect(held.draftKv().tokens).toEqual(everything);
    expect(held.draftKv().cache.length).toBe(everything.length);
    expect(drafts[0]).not.toBe(77);
    // Behind a hybrid too.
    const hybrid = new HybridProposer([], held);
    await hybrid.syncKv!([...everything, 5]);
    expect(hybrid.draftKv!().tokens).toEqual([...everything, 5]);
  });
});
