import { beforeAll, describe, expect, it } from 'vitest';
import type { LoadedModel } from '../../shared/model';
import { apiKey, authHeaders, edgeUrl, sseData } from '../support/edge-client';
import { loadNodeModel, TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * The per-token parts of a response, against the real stack: `logprobs`
 * (completions' `logprobs: N`, chat's `logprobs` + `top_logprobs`) must be the
 * target's own raw log-probabilities, recomputed here by running the target
 * over prompt + output; `speculation.record` must account for every token
 * (its id, its text, what happened to it) consistently with its rounds,
 * streamed and not.
 */
const [prompt, secondPrompt] = heldOutPrompts(2, 300);

let target: LoadedModel;
beforeAll(async () => {
  target = await loadNodeModel(TARGET_DIR);
});

async function post(path: string, body: Record<string, unknown>): Promise<{ status: number; json: any }> {
  const response = await fetch(`${edgeUrl()}${path}`, { method: 'POST', headers: authHeaders(apiKey()), body: JSON.stringify(body) });
  return { status: response.status, json: await response.json() };
}

async function stream(path: string, body: Record<string, unknown>): Promise<any[]> {
  const response = await fetch(`${edgeUrl()}${path}`, { method: 'POST', headers: authHeaders(apiKey()), body: JSON.stringify({ ...body, stream: true }) });
  expect(response.status).toBe(200);
  const events = sseData(await response.text());
  expect(events.at(-1)).toBe('[DONE]');
  return events.slice(0, -1).map((e) => JSON.parse(e));
}

/** log-softmax of the target's logits at each output position, straight from the model (float64 here). */
async function targetLogprobs(context: number[], output: number[]): Promise<Float64Array[]> {
  const { lm } = target;
  const result = await lm.forward([...context, ...output.slice(0, -1)], lm.emptyCache());
  const vocab = lm.config.vocabSize;
  return output.map((_, i) => {
    const row = result.logits.subarray((context.length - 1 + i) * vocab, (context.length + i) * vocab);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    const logZ = max + Math.log(sum);
    return Float64Array.from(row, (v) => v - logZ);
  });
}

/** Each token's logprob and its alternatives equal the target's, sorted most likely first, exactly `top` of them. */
function expectTargetLogprobs(expected: Float64Array[], output: number[], logprobs: Array<{ logprob: number; top: Array<[number, number]> }>, top: number, greedy: boolean) {
  expect(logprobs).toHaveLength(output.length);
  logprobs.forEach((entry, i) => {
    const row = expected[i];
    expect(entry.logprob, `token ${i}`).toBeCloseTo(row[output[i]], 2);
    expect(entry.top).toHaveLength(top);
    const best = [...row.keys()].sort((a, b) => row[b] - row[a]).slice(0, top);
    entry.top.forEach(([id, lp], j) => {
      if (id >= 0) expect(lp).toBeCloseTo(row[id], 2);
      // Near-ties may swap places between float32 runs; the value at each rank must still match.
      expect(lp).toBeCloseTo(row[best[j]], 2);
      if (j > 0) expect(lp).toBeLessThanOrEqual(entry.top[j - 1][1]);
    });
    if (greedy && top > 0) expect(entry.logprob).toBeCloseTo(entry.top[0][1], 4);
    if (top > 0) expect(entry.logprob).toBeLessThanOrEqual(entry.top[0][1] + 1e-6);
  });
}

/** Completions' parallel lists as entries; their alternatives are keyed by text, not id, so only their values are compared (id -1). */
function completionEntries(logprobs: any): Array<{ logprob: number; top: Array<[number, number]> }> {
  return logprobs.token_logprobs.map((logprob: number, i: number) => ({ logprob, top: Object.values(logprobs.top_logprobs[i]).map((lp) => [-1, lp as number]) }));
}

const sourcesAccepted = new Set(['draft-accepted', 'prediction', 'ngram', 'suffix']);

/** Every token is in a round that emitted it, in order; a verify round's accepted drafts come first, then its correction or bonus. */
function expectConsistentRecord(record: { tokens: any[]; rounds: any[] }, tokenIds: number[], text: string) {
  expect(record.tokens.map((t) => t.id)).toEqual(tokenIds);
  expect(record.tokens.map((t) => t.text).join('')).toBe(text);
  expect(record.rounds.map((r, i) => r.index ?? i)).toEqual(record.rounds.map((_, i) => i));
  expect(record.rounds.reduce((n, r) => n + r.emitted, 0)).toBe(tokenIds.length);
  let at = 0;
  record.rounds.forEach((round, index) => {
    const mine = record.tokens.slice(at, at + round.emitted);
    at += round.emitted;
    for (const token of mine) expect(token.round).toBe(index);
    if (round.kind === 'origin') {
      expect(mine.map((t) => t.source)).toEqual(['origin']);
      return;
    }
    expect(round.accepted).toBeLessThanOrEqual(round.drafted.length);
    mine.forEach((token, i) => {
      if (i < round.accepted) {
        expect(sourcesAccepted.has(token.source), token.source).toBe(true);
        expect(token.id).toBe(round.drafted[i]);
      } else {
        expect(token.source).toBe(round.accepted < round.drafted.length ? 'target-correction' : 'bonus');
        if (round.accepted < round.drafted.length) expect(token.id).not.toBe(round.drafted[i]);
      }
    });
    for (const ms of [round.draft_ms, round.verify_ms, round.forward_ms]) expect(ms).toBeGreaterThanOrEqual(0);
  });
}

describe('logprobs are the target’s raw log-probabilities', () => {
  const cases = [
    { name: 'greedy, lockstep k = 4', body: { temperature: 0, speculation: { mode: 'lockstep', draft_length: 4 } }, greedy: true },
    { name: 'sampled (T 0.8, top_p 0.9), lockstep k = 3', body: { temperature: 0.8, top_p: 0.9, seed: 11, speculation: { mode: 'lockstep', draft_length: 3 } }, greedy: false },
    { name: 'greedy, pipelined k = 2 depth 2', body: { temperature: 0, speculation: { mode: 'pipelined', draft_length: 2, depth: 2 } }, greedy: true },
    { name: 'sampled, origin-only decoding', body: { temperature: 1, seed: 5, speculation: { draft_length: 0 } }, greedy: false },
  ];
  for (const { name, body, greedy } of cases) {
    it(`completions, ${name}`, async () => {
      const { status, json } = await post('/v1/completions', { prompt, max_tokens: 20, logprobs: 3, return_token_ids: true, ...body });
      expect(status).toBe(200);
      const [choice] = json.choices;
      const output: number[] = choice.token_ids;
      expect(output.length).toBeGreaterThan(0);
      const expected = await targetLogprobs(choice.prompt_token_ids, output);
      expectTargetLogprobs(expected, output, completionEntries(choice.logprobs), 3, greedy);
      expect(choice.logprobs.tokens.join('')).toBe(choice.text);
      expect(choice.logprobs.text_offset[0]).toBe(0);
      for (let i = 1; i < output.length; i++) expect(choice.logprobs.text_offset[i]).toBeGreaterThanOrEqual(choice.logprobs.text_offset[i - 1]);
      if (!greedy) expect(output.some((id, i) => expected[i][id] < Math.max(...expected[i]) - 1e-6), 'a sampled run that never left the argmax tests little').toBe(true);
    });
  }

  it('logprobs: 0 returns the token’s own logprob and no alternatives; absent means none at all', async () => {
    const withZero = await post('/v1/completions', { prompt, max_tokens: 6, temperature: 0, logprobs: 0 });
    expect(withZero.json.choices[0].logprobs.top_logprobs.every((t: object) => Object.keys(t).length === 0)).toBe(true);
    expect(withZero.json.choices[0].logprobs.token_logprobs.every((lp: number) => lp <= 0)).toBe(true);
    const without = await post('/v1/completions', { prompt, max_tokens: 6, temperature: 0 });
    expect(without.json.choices[0].logprobs).toBeNull();
  });

  it('chat: logprobs + top_logprobs, non-streamed and streamed, with token bytes', async () => {
    const body = { messages: [{ role: 'user', content: 'Write a function that adds two numbers.' }], max_completion_tokens: 16, temperature: 0, logprobs: true, top_logprobs: 2, return_token_ids: true };
    const { status, json } = await post('/v1/chat/completions', body);
    expect(status).toBe(200);
    const [choice] = json.choices;
    const content = choice.logprobs.content;
    const output: number[] = choice.token_ids;
    const expected = await targetLogprobs(json.prompt_token_ids, output);
    expectTargetLogprobs(expected, output, content.map((c: any) => ({ logprob: c.logprob, top: c.top_logprobs.map((t: any) => [-1, t.logprob]) })), 2, true);
    expect(choice.logprobs.refusal).toBeNull();
    // The bytes of all tokens are the UTF-8 of the message.
    expect(Buffer.from(content.flatMap((c: any) => c.bytes)).toString('utf8')).toBe(choice.message.content);
    for (const c of content) for (const t of c.top_logprobs) expect(Object.keys(t).sort()).toEqual(['bytes', 'logprob', 'token']);

    const chunks = await stream('/v1/chat/completions', body);
    const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    expect(streamed).toHaveLength(content.length);
    streamed.forEach((entry: any, i: number) => {
      expect(entry.token).toBe(content[i].token);
      expect(entry.logprob).toBeCloseTo(content[i].logprob, 4);
    });
  });

  it('refuses more than 20 alternatives, naming the field', async () => {
    const { status, json } = await post('/v1/completions', { prompt, max_tokens: 4, logprobs: 21 });
    expect(status).toBe(400);
    expect(json.error.param).toBe('logprobs');
  });
});

describe('speculation.record: what happened to every token', () => {
  it('accounts for each token and round of a greedy lockstep completion, and the stream carries the same record', async () => {
    const body = { prompt: secondPrompt, max_tokens: 32, temperature: 0, return_token_ids: true, speculation: { mode: 'lockstep', draft_length: 4, proposer: 'draft-model', record: true } };
    const { json } = await post('/v1/completions', body);
    const [choice] = json.choices;
    const record = json.speculation.record;
    expectConsistentRecord(record, choice.token_ids, choice.text);
    const verify = record.rounds.filter((r: any) => r.kind === 'verify');
    expect(verify.length).toBe(json.speculation.rounds);
    expect(verify.reduce((n: number, r: any) => n + r.accepted, 0)).toBe(json.speculation.accepted);
    const sources = new Set(record.tokens.map((t: any) => t.source));
    expect(sources.has('draft-accepted')).toBe(true);
    expect(sources.has('target-correction') || sources.has('bonus')).toBe(true);

    // Streamed, the chunks' `speculation_record` parts add up to a record of the same kind. (Its rounds may differ:
    // the draft now starts from the prefix cache, whose restored KV can flip a near-tie; the tokens cannot.)
    const chunks = await stream('/v1/completions', body);
    const streamed = { tokens: chunks.flatMap((c) => c.speculation_record?.tokens ?? []), rounds: chunks.flatMap((c) => c.speculation_record?.rounds ?? []) };
    const streamedIds = chunks.flatMap((c) => c.choices[0]?.token_ids ?? []);
    expect(streamedIds).toEqual(choice.token_ids);
    expectConsistentRecord(streamed, streamedIds, chunks.map((c) => c.choices[0]?.text ?? '').join(''));
  });

  it('names a prediction’s accepted tokens and origin-only tokens', async () => {
    const first = await post('/v1/completions', { prompt, max_tokens: 24, temperature: 0, return_token_ids: true });
    const predicted = first.json.choices[0].text;
    const withPrediction = await post('/v1/completions', { prompt, max_tokens: 24, temperature: 0, return_token_ids: true, prediction: { type: 'content', content: predicted }, speculation: { record: true } });
    const record = withPrediction.json.speculation.record;
    expectConsistentRecord(record, withPrediction.json.choices[0].token_ids, withPrediction.json.choices[0].text);
    // The first round drafts the prediction's first 2k = 8 tokens, all right (later rounds may be the suffix index's:
    // this tenant's history holds the first answer, and its re-tokenized text can part from the generated ids).
    expect(record.rounds[0]).toMatchObject({ kind: 'verify', proposer: 'prediction', accepted: 8 });
    const fromPrediction = record.tokens.filter((t: any) => t.source === 'prediction').length;
    expect(fromPrediction).toBeGreaterThanOrEqual(8);
    expect(withPrediction.json.usage.completion_tokens_details.accepted_prediction_tokens).toBeGreaterThanOrEqual(fromPrediction);

    const origin = await post('/v1/completions', { prompt, max_tokens: 8, temperature: 0, return_token_ids: true, speculation: { draft_length: 0, record: true } });
    const originRecord = origin.json.speculation.record;
    expectConsistentRecord(originRecord, origin.json.choices[0].token_ids, origin.json.choices[0].text);
    expect(originRecord.rounds.every((r: any) => r.kind === 'origin' && r.emitted === 1)).toBe(true);
  });

  it('is absent unless asked for', async () => {
    const { json } = await post('/v1/completions', { prompt, max_tokens: 4, temperature: 0 });
    expect(json.speculation.record).toBeUndefined();
  });
});
