import { describe, expect, it } from 'vitest';
import { PredictionAligner, PredictionProposer, predictionUsage, REALIGN_MIN } from '../../functions/proposers/prediction';
import { counterRng } from '../../shared/sampling';

const prompt = [900, 901, 902];
const sampling = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
/** A prediction of 40 distinct tokens, 100..139. */
const P = range(100, 140);

async function draftAfter(prediction: number[], output: number[], k = 4, maxMatchTokens?: number) {
  const proposer = new PredictionProposer(prediction, prompt.length);
  return (await proposer.propose([...prompt, ...output], k, sampling, { maxMatchTokens })).map((d) => d.token);
}

describe('prediction proposer: alignment', () => {
  it('drafts the prediction from its start, then from wherever the output follows it', async () => {
    expect(await draftAfter(P, [])).toEqual([100, 101, 102, 103]);
    expect(await draftAfter(P, range(100, 110))).toEqual([110, 111, 112, 113]);
    expect(await draftAfter(P, range(100, 110), 4, 8)).toEqual(range(110, 118));
  });

  it('drafts are deterministic: no q, so only token ids cross the wire (q = δ)', async () => {
    const proposer = new PredictionProposer(P, prompt.length);
    const draft = await proposer.propose([...prompt], 4, { ...sampling, temperature: 1 });
    expect(draft.every((d) => d.q === undefined)).toBe(true);
  });

  it('after a substitution it re-aligns once REALIGN_MIN output tokens match the prediction again', async () => {
    // The output replaced 110 by 555 and then went on with the prediction.
    const base = [...range(100, 110), 555];
    expect(await draftAfter(P, base)).toEqual([]);
    expect(await draftAfter(P, [...base, 111, 112])).toEqual([]);
    expect(REALIGN_MIN).toBe(3);
    expect(await draftAfter(P, [...base, 111, 112, 113])).toEqual([114, 115, 116, 117]);
  });

  it('re-aligns after an insertion and after a deletion', async () => {
    // Inserted 555 556, then the prediction continues where it was left.
    expect(await draftAfter(P, [...range(100, 110), 555, 556, 110, 111, 112])).toEqual([113, 114, 115, 116]);
    // Skipped 110..119: the output picks up at 120.
    expect(await draftAfter(P, [...range(100, 110), 120, 121, 122])).toEqual([123, 124, 125, 126]);
  });

  it('nothing to draft when the output matches nowhere, or the prediction is used up', async () => {
    expect(await draftAfter(P, [7, 8, 9, 10, 11])).toEqual([]);
    expect(await draftAfter(P, P)).toEqual([]);
    expect(await draftAfter([], [])).toEqual([]);
  });

  it('a repeated passage re-aligns at the occurrence nearest after where the output left the prediction', async () => {
    // The prediction has [1, 2, 3] twice; the output left it at index 6 (expected 50) and went on with [1, 2, 3].
    const prediction = [1, 2, 3, 40, 41, 42, 50, 1, 2, 3, 60, 61];
    expect(await draftAfter(prediction, [1, 2, 3, 40, 41, 42, 999, 1, 2, 3], 2)).toEqual([60, 61]);
    // From the start, the first occurrence is the nearest.
    expect(await draftAfter(prediction, [999, 1, 2, 3], 2)).toEqual([40, 41]);
  });

  it('an incremental aligner (rolled back as pipelined blocks are) always agrees with a fresh one', () => {
    const rng = counterRng(3);
    const prediction = Array.from({ length: 80 }, (_, i) => Math.floor(rng.uniform(i, 'sample') * 6));
    const aligner = new PredictionAligner(prediction);
    let output: number[] = [];
    for (let step = 0; step < 400; step++) {
      const u = rng.uniform(step, 'accept');
      if (u < 0.3 && output.length > 0) output = output.slice(0, Math.floor(rng.uniform(step, 'residual') * output.length));
      else {
        // Mostly follow the prediction from a random place, sometimes a random token.
        const from = Math.floor(rng.uniform(step, 'draft') * prediction.length);
        output = [...output, ...(u < 0.8 ? prediction.slice(from, from + 5) : [Math.floor(u * 97)])];
      }
      expect(aligner.sync(output)).toEqual(new PredictionAligner(prediction).sync(output));
    }
  });
});

describe('accepted_prediction_tokens / rejected_prediction_tokens (OpenAI semantics)', () => {
  it('an entirely right prediction: every token accepted', () => {
    expect(predictionUsage(P, P)).toEqual({ accepted: 40, rejected: 0 });
  });

  it('right until the middle: the first half accepted, the rest rejected', () => {
    expect(predictionUsage(P, [...range(100, 120), ...range(700, 720)])).toEqual({ accepted: 20, rejected: 20 });
  });

  it('wrong from the first token: nothing accepted', () => {
    expect(predictionUsage(P, range(700, 740))).toEqual({ accepted: 0, rejected: 40 });
  });

  it('an edit in the middle: the re-aligned tail counts as appeared; the replaced tokens do not', () => {
    // 110..114 replaced by five other tokens, the rest as predicted.
    expect(predictionUsage(P, [...range(100, 110), ...range(700, 705), ...range(115, 140)])).toEqual({ accepted: 35, rejected: 5 });
  });

  it('an output cut short (max_tokens) leaves the unused prediction rejected; each token counts once', () => {
    expect(predictionUsage(P, range(100, 110))).toEqual({ accepted: 10, rejected: 30 });
    // Repeating the same passage twice does not count it twice.
    expect(predictionUsage(P, [...range(100, 110), ...range(100, 110)])).toEqual({ accepted: 10, rejected: 30 });
  });
});
