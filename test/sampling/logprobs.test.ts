import { describe, expect, it } from 'vitest';
import { verifyReplyProblem } from '../../shared/protocol';
import { tokenLogprob } from '../../shared/sampling';
import { DRAFT_DIR, loadFolderTokenizer } from '../support/models';

describe('tokenLogprob (shared/sampling/logprobs.ts)', () => {
  it('is log-softmax at temperature 1, with the top alternatives most likely first and lower ids first on ties', () => {
    const logits = Float32Array.from([1, 3, 2, 3, -1]);
    const z = Math.log([1, 3, 2, 3, -1].reduce((s, v) => s + Math.exp(v), 0));
    const { logprob, top } = tokenLogprob(logits, 2, 3);
    expect(logprob).toBeCloseTo(2 - z, 12);
    expect(top.map(([id]) => id)).toEqual([1, 3, 2]);
    expect(top[0][1]).toBeCloseTo(3 - z, 12);
    // All five alternatives are the whole distribution.
    expect(tokenLogprob(logits, 0, 5).top.reduce((s, [, lp]) => s + Math.exp(lp), 0)).toBeCloseTo(1, 9);
  });

  it('survives huge logits, returns no alternatives for 0, and refuses an id outside the vocabulary', () => {
    const { logprob, top } = tokenLogprob(Float32Array.from([1e30, 0]), 0, 0);
    expect(logprob).toBe(0);
    expect(top).toEqual([]);
    expect(() => tokenLogprob(Float32Array.from([0, 0]), 2, 1)).toThrow(RangeError);
  });

  it('matches a full sort on a random row', () => {
    const logits = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i * 12.9898) * 8);
    const { top } = tokenLogprob(logits, 7, 20);
    const sorted = [...logits.keys()].sort((a, b) => logits[b] - logits[a] || a - b).slice(0, 20);
    expect(top.map(([id]) => id)).toEqual(sorted);
  });
});

describe('verify replies with logprobs (shared/protocol.ts)', () => {
  const request = { draft: [{ token: 4 }], logprobs: 2 };
  const entry = (lp: number) => ({ logprob: lp, top: [[1, -0.1], [2, -0.5]] as Array<[number, number]> });
  it('wants one entry per token with exactly the alternatives asked for, sorted', () => {
    expect(verifyReplyProblem(request, { accepted: 1, tokens: [4, 9], logprobs: [entry(-1), entry(-2)] }, 10)).toBeNull();
    expect(verifyReplyProblem(request, { accepted: 1, tokens: [4, 9], logprobs: [entry(-1)] }, 10)).toMatch(/1 log-probability entries for 2 tokens/);
    expect(verifyReplyProblem(request, { accepted: 1, tokens: [4, 9] }, 10)).toMatch(/no log-probability entries/);
    expect(verifyReplyProblem(request, { accepted: 0, tokens: [9], logprobs: [{ logprob: -1, top: [[1, -0.1]] }] }, 10)).toMatch(/1 alternatives where 2/);
    expect(verifyReplyProblem(request, { accepted: 0, tokens: [9], logprobs: [{ logprob: -1, top: [[1, -0.9], [2, -0.1]] }] }, 10)).toMatch(/not sorted/);
    expect(verifyReplyProblem(request, { accepted: 0, tokens: [9], logprobs: [{ logprob: -1, top: [[1, -0.1], [12, -0.5]] }] }, 10)).toMatch(/outside the vocabulary/);
  });
});

describe('tokenBytes (shared/tokenizer.ts)', () => {
  it('gives each token its exact bytes: the bytes of a text’s tokens are its UTF-8, even where a character spans tokens', async () => {
    const tokenizer = await loadFolderTokenizer(DRAFT_DIR);
    const text = 'naïve café — 東京 🎉 x += 1;';
    const ids = tokenizer.encode(text);
    const bytes = ids.flatMap((id) => [...tokenizer.tokenBytes(id)]);
    expect(Buffer.from(bytes).toString('utf8')).toBe(text);
    expect(ids.some((id) => new TextDecoder().decode(tokenizer.tokenBytes(id)).includes('\uFFFD')), 'the text should split a character across tokens').toBe(true);
  });
});
