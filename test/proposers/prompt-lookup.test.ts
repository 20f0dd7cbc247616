import { describe, expect, it } from 'vitest';
import { longestNgramMatch, PromptLookupProposer } from '../../functions/proposers/prompt-lookup';
import { counterRng } from '../../shared/sampling';

const sampling = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const propose = (context: number[], min: number, max: number, k: number, maxMatchTokens?: number) =>
  new PromptLookupProposer({ min, max }).propose(context, k, sampling, { maxMatchTokens }).then((d) => d.map((t) => t.token));

/** The rule as written in vLLM's docstring, by brute force: longest n in [min, max], then the earliest start. */
function reference(tokens: number[], min: number, max: number): { end: number; length: number } | null {
  const last = tokens.length - 1;
  for (let n = Math.min(max, last); n >= min; n--) {
    const tail = tokens.slice(tokens.length - n);
    for (let start = 0; start + n - 1 < last; start++) {
      if (tail.every((t, i) => tokens[start + i] === t)) return { end: start + n - 1, length: n };
    }
  }
  return null;
}

describe('prompt lookup (vLLM prompt_lookup_min / prompt_lookup_max)', () => {
  it("vLLM's example: [1,2,3,4,2,3], min 2, max 3, k 4 proposes [4,2,3]", async () => {
    expect(await propose([1, 2, 3, 4, 2, 3], 2, 3, 4)).toEqual([4, 2, 3]);
  });

  it('the longest n-gram wins over a shorter, earlier one; the earliest occurrence wins a tie', async () => {
    // [8, 9] occurs at 0 (followed by 1) and as [7, 8, 9] at 4 (followed by 2): the 3-gram wins.
    expect(await propose([8, 9, 1, 5, 7, 8, 9, 2, 6, 7, 8, 9], 2, 4, 1)).toEqual([2]);
    // Two occurrences of [7, 8, 9]: the earlier one's continuation (3), not the later one's (4).
    expect(await propose([7, 8, 9, 3, 7, 8, 9, 4, 7, 8, 9], 2, 4, 1)).toEqual([3]);
  });

  it('min bounds the match: nothing shorter than prompt_lookup_min is drafted', async () => {
    expect(await propose([1, 2, 3, 9, 3], 2, 4, 4)).toEqual([]);
    expect(await propose([1, 2, 3, 9, 3], 1, 4, 4)).toEqual([9, 3]);
  });

  it('max bounds the n-gram: beyond prompt_lookup_max the earliest occurrence of the max-length tail wins', async () => {
    // The tail [1,2,3,4] matches fully at 5 (followed by 6) but only [2,3,4] at 0 (followed by 5): with max 3 both are
    // 3-gram matches and the earliest (at 0) wins; with max 4 the longer one does.
    const tokens = [2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 1, 2, 3, 4];
    expect(await propose(tokens, 2, 3, 1)).toEqual([5]);
    expect(await propose(tokens, 2, 4, 1)).toEqual([6]);
  });

  it('drafts k tokens, or up to maxMatchTokens, never past the context', async () => {
    const tokens = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2];
    expect(await propose(tokens, 2, 4, 3)).toEqual([3, 4, 5]);
    expect(await propose(tokens, 2, 4, 3, 5)).toEqual([3, 4, 5, 6, 7]);
    expect(await propose(tokens, 2, 4, 3, 64)).toEqual([3, 4, 5, 6, 7, 8, 1, 2]);
  });

  it('a match may overlap the tail (a run repeats itself)', async () => {
    expect(await propose([4, 5, 5, 5, 5], 2, 2, 2)).toEqual([5, 5]);
    expect(await propose([4, 5, 5, 5, 5], 2, 3, 2)).toEqual([5]);
  });

  it('equals the brute-force rule on 3,000 random contexts', () => {
    const rng = counterRng(7);
    let matched = 0;
    for (let i = 0; i < 3000; i++) {
      const length = 2 + Math.floor(rng.uniform(i, 'draft') * 40);
      const vocab = 2 + Math.floor(rng.uniform(i, 'accept') * 5);
      const tokens = Array.from({ length }, (_, j) => Math.floor(rng.uniform(i * 100 + j, 'sample') * vocab));
      const min = 1 + (i % 3);
      const max = min + (i % 5);
      const got = longestNgramMatch(tokens, min, max);
      expect(got, JSON.stringify({ tokens, min, max })).toEqual(reference(tokens, min, max));
      if (got) matched++;
    }
    expect(matched).toBeGreaterThan(1000);
  });
});
