import { beforeAll, describe, expect, it } from 'vitest';
import { generateTokens } from '../../origin/generate';
import { speculateTokens } from '../../origin/speculate';
import { LinkEstimator } from '../../functions/speculation/controller';
import { TargetModel } from '../../origin/target';
import type { LoadedModel } from '../../shared/model';
import type { GenerateEvent, GenerateRequest } from '../../shared/protocol';
import { DRAFT_DIR, loadFolderTokenizer, loadNodeModel, TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * Speculation next to the target (origin/speculate.ts) against the origin's own
 * decoding, in process: greedy output identical from the start and from a
 * resumed position (the RNG offset of a stream that continues after `offset`
 * tokens), seeded sampling reproducible, predictions drafted first, logprobs
 * as origin-only decoding gives them, and every token labelled with its source.
 */
let target: TargetModel;
let draft: LoadedModel;
let prompts: number[][];
beforeAll(async () => {
  target = new TargetModel((await loadNodeModel(TARGET_DIR)).lm);
  draft = await loadNodeModel(DRAFT_DIR, 'quantized');
  const tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  prompts = heldOutPrompts(4, 300).map((p) => tokenizer.encode(p));
});

async function collect(events: AsyncGenerator<GenerateEvent>) {
  const tokens: number[] = [];
  const sources: string[] = [];
  let done: Extract<GenerateEvent, { type: 'done' }> | null = null;
  for await (const event of events) {
    if (event.type === 'token') {
      tokens.push(event.token);
      sources.push(event.source ?? 'none');
    } else if (event.type === 'done') done = event;
  }
  return { tokens, sources, done: done! };
}

const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const request = (context: number[], sampling = greedy, maxTokens = 24): GenerateRequest => ({ context, max_tokens: maxTokens, sampling, stop_token_ids: [] });

describe('speculation at the origin', () => {
  it('gives the target’s greedy tokens, with fewer target passes than tokens', async () => {
    for (const prompt of prompts) {
      const alone = await collect(generateTokens(target, request(prompt)));
      const speculated = await collect(speculateTokens(target, draft.lm, { ...request(prompt), speculate: { draft_length: 4, method: 'token' } }));
      expect(speculated.tokens).toEqual(alone.tokens);
      expect(speculated.done.speculation!.rounds).toBeLessThan(speculated.tokens.length);
      expect(speculated.sources.every((s) => ['draft-accepted', 'suffix', 'target-correction', 'bonus'].includes(s))).toBe(true);
    }
  });

  it('adaptive: hands over to plain decoding mid-stream when speculating is predicted to lose, with the target’s tokens', async () => {
    for (const prompt of prompts.slice(0, 2)) {
      const alone = await collect(generateTokens(target, request(prompt)));
      // After three verify rounds this origin's estimates say a one-token step is nearly free: plain decoding wins.
      const link = new LinkEstimator();
      const forwardMs = link.forwardMs.bind(link);
      link.forwardMs = (n) => (link.observations >= 3 && n === 1 ? 0.001 : forwardMs(n));
      const handed = await collect(speculateTokens(target, draft.lm, { ...request(prompt), speculate: { draft_length: 4, method: 'token', adaptive: true } }, undefined, link));
      expect(handed.tokens).toEqual(alone.tokens);
      const plain = handed.sources.filter((s) => s === 'none').length;
      // The tail came from plain decoding (no source), the head from speculation; rounds count verify passes only.
      expect(plain).toBeGreaterThan(0);
      expect(plain).toBeLessThan(handed.tokens.length);
      expect(handed.sources.slice(handed.sources.indexOf('none')).every((s) => s === 'none')).toBe(true);
      // At the latest after the three rounds the override needs (this CPU's own estimates may say so sooner).
      expect(handed.done.speculation!.rounds).toBeGreaterThanOrEqual(1);
      expect(handed.done.speculation!.rounds).toBeLessThanOrEqual(3);
    }
  });

  it('continues a resumed stream exactly: context = prompt + the first tokens, offset = how many', async () => {
    // Greedy: the same tokens however the stream was cut. (Sampled, the round boundaries move with the cut and so do
    // the draws; what holds is the distribution, which the edge's chi-square test checks through a hand-over at offset 1.)
    const whole = await collect(speculateTokens(target, draft.lm, { ...request(prompts[0], greedy, 20), speculate: { draft_length: 3, method: 'token' } }));
    const head = whole.tokens.slice(0, 7);
    const rest = await collect(speculateTokens(target, draft.lm, { ...request([...prompts[0], ...head], { ...greedy, offset: head.length }, 13), speculate: { draft_length: 3, method: 'token' } }));
    expect([...head, ...rest.tokens]).toEqual(whole.tokens);
  });

  it('samples reproducibly: the same seed gives the same tokens, another seed others', async () => {
    const sampled = { temperature: 0.9, top_p: 0.95, top_k: 0, seed: 77, offset: 0 };
    const once = await collect(speculateTokens(target, draft.lm, { ...request(prompts[0], sampled, 20), speculate: { draft_length: 3, method: 'token' } }));
    const again = await collect(speculateTokens(target, draft.lm, { ...request(prompts[0], sampled, 20), speculate: { draft_length: 3, method: 'token' } }));
    expect(again.tokens).toEqual(once.tokens);
    const otherSeed = await collect(speculateTokens(target, draft.lm, { ...request(prompts[0], { ...sampled, seed: 78 }, 20), speculate: { draft_length: 3, method: 'token' } }));
    expect(otherSeed.tokens).not.toEqual(once.tokens);
  });

  it('drafts from a prediction first, and labels those tokens', async () => {
    const alone = await collect(generateTokens(target, request(prompts[1])));
    const speculated = await collect(speculateTokens(target, draft.lm, { ...request(prompts[1]), speculate: { draft_length: 4, method: 'token', prediction: alone.tokens } }));
    expect(speculated.tokens).toEqual(alone.tokens);
    expect(speculated.sources.filter((s) => s === 'prediction').length).toBeGreaterThanOrEqual(16);
    expect(speculated.done.speculation!.rounds).toBeLessThanOrEqual(4);
  });

  it('returns the target’s logprobs of every token, as origin-only decoding does', async () => {
    const alone = generateTokens(target, { ...request(prompts[2], greedy, 8), logprobs: 2 });
    const speculated = speculateTokens(target, draft.lm, { ...request(prompts[2], greedy, 8), logprobs: 2, speculate: { draft_length: 4, method: 'token' } });
    const a: GenerateEvent[] = [];
    const b: GenerateEvent[] = [];
    for await (const e of alone) a.push(e);
    for await (const e of speculated) b.push(e);
    const lps = (events: GenerateEvent[]) => events.flatMap((e) => (e.type === 'token' ? [e.logprob!.logprob] : []));
    expect(lps(b)).toHaveLength(8);
    lps(b).forEach((lp, i) => expect(lp).toBeCloseTo(lps(a)[i], 3));
  });
});
