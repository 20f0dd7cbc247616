import { beforeAll, describe, expect, it } from 'vitest';
import { createOriginApp } from '../../origin/app';
import { TargetModel } from '../../origin/target';
import type { LoadedModel } from '../../shared/model';
import { argmax } from '../../shared/sampling';
import type { GenerateEvent, VerifyResponse } from '../../shared/protocol';
import { loadNodeModel, TARGET_DIR } from '../support/models';

/** The reference origin in-process (Hono's app.request), on the shipped target model. */
let model: LoadedModel;
let app: ReturnType<typeof createOriginApp>;
const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const context = [10, 20, 30, 40, 50];

beforeAll(async () => {
  model = await loadNodeModel(TARGET_DIR);
  app = createOriginApp({ id: 'test-origin', modelName: 'edgespec-target', target: new TargetModel(model.lm) });
});

const post = (path: string, body: unknown) =>
  app.request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });

/** Target-only greedy continuation, computed without the origin's caches. */
async function greedyReference(prefix: number[], n: number): Promise<number[]> {
  const out: number[] = [];
  let cache = model.lm.emptyCache();
  let pending = prefix;
  for (let i = 0; i < n; i++) {
    const r = await model.lm.forward(pending, cache);
    cache = r.cache;
    const v = model.config.vocabSize;
    const next = argmax(r.logits.subarray((r.rows - 1) * v, r.rows * v));
    out.push(next);
    pending = [next];
  }
  return out;
}

describe('origin /v1/verify', () => {
  it('accepts a draft equal to the target greedy continuation and adds the bonus token', async () => {
    const expected = await greedyReference(context, 5);
    const response = await post('/v1/verify', { context, draft: expected.slice(0, 4).map((token) => ({ token })), sampling: greedy });
    expect(response.status).toBe(200);
    const body = (await response.json()) as VerifyResponse;
    expect(body.accepted).toBe(4);
    expect(body.tokens).toEqual(expected);
    expect(body.origin.id).toBe('test-origin');
  });

  it('replaces the first mismatch with the target argmax and drops the rest', async () => {
    const expected = await greedyReference(context, 3);
    const wrong = (expected[1] + 1) % model.config.vocabSize;
    const response = await post('/v1/verify', { context, draft: [{ token: expected[0] }, { token: wrong }, { token: 7 }], sampling: greedy });
    const body = (await response.json()) as VerifyResponse;
    expect(body.accepted).toBe(1);
    expect(body.tokens).toEqual([expected[0], expected[1]]);
  });

  it('reuses target KV across rounds of one generation and stays exact', async () => {
    const expected = await greedyReference(context, 8);
    const first = (await (await post('/v1/verify', { context, draft: expected.slice(0, 3).map((token) => ({ token })), sampling: greedy })).json()) as VerifyResponse;
    const next = [...context, ...first.tokens];
    const second = (await (await post('/v1/verify', { context: next, draft: expected.slice(4, 7).map((token) => ({ token })), sampling: greedy })).json()) as VerifyResponse;
    expect(second.origin.cached_tokens).toBeGreaterThanOrEqual(context.length + 3);
    expect([...first.tokens, ...second.tokens]).toEqual(expected);
  });

  it('returns one target token for an empty draft', async () => {
    const [expected] = await greedyReference(context, 1);
    const body = (await (await post('/v1/verify', { context, draft: [], sampling: greedy })).json()) as VerifyResponse;
    expect(body).toMatchObject({ accepted: 0, tokens: [expected] });
  });

  it.each([
    ['malformed JSON', '{"context": [1,', 'invalid_json', null],
    ['empty body', '', 'invalid_json', null],
    ['missing context', { draft: [], sampling: greedy }, 'invalid_value', 'context'],
    ['empty context', { context: [], draft: [], sampling: greedy }, 'invalid_value', 'context'],
    ['negative token', { context: [-1], draft: [], sampling: greedy }, 'invalid_value', 'context.0'],
    ['fractional token', { context: [1.5], draft: [], sampling: greedy }, 'invalid_value', 'context.0'],
    ['q probability above 1', { context, draft: [{ token: 1, q: [[1, 1.5]] }], sampling: { ...greedy, temperature: 1 } }, 'invalid_value', 'draft.0.q.0.1'],
    ['temperature out of range', { context, draft: [], sampling: { ...greedy, temperature: 9 } }, 'invalid_value', 'sampling.temperature'],
    ['unknown method', { context, draft: [], sampling: greedy, method: 'tree' }, 'invalid_value', 'method'],
  ])('rejects %s with a 400 in OpenAI shape', async (_name, body, code, param) => {
    const response = await post('/v1/verify', body);
    expect(response.status).toBe(400);
    const error = ((await response.json()) as { error: Record<string, unknown> }).error;
    expect(error).toMatchObject({ type: 'invalid_request_error', param });
    expect(typeof error.message).toBe('string');
    expect(error.code === code || code === 'invalid_value').toBe(true);
  });

  it('rejects token ids outside the vocabulary (400) and contexts over the model length (413)', async () => {
    const outside = await post('/v1/verify', { context: [model.config.vocabSize], draft: [], sampling: greedy });
    expect(outside.status).toBe(400);
    const long = await post('/v1/verify', { context: new Array(model.config.maxPositions + 1).fill(1), draft: [], sampling: greedy });
    expect(long.status).toBe(413);
  });
});

describe('origin /v1/generate and /health', () => {
  it('streams NDJSON tokens equal to target greedy decoding, then done', async () => {
    const expected = await greedyReference(context, 6);
    const response = await post('/v1/generate', { context, max_tokens: 6, sampling: greedy });
    expect(response.status).toBe(200);
    const events = (await response.text()).trim().split('\n').map((l) => JSON.parse(l) as GenerateEvent);
    const tokens = events.flatMap((e) => (e.type === 'token' ? [e.token] : []));
    expect(tokens).toEqual(expected);
    expect(events.at(-1)).toMatchObject({ type: 'done', finish_reason: 'length', origin: { id: 'test-origin' } });
  });

  it('stops at a stop token id', async () => {
    const expected = await greedyReference(context, 3);
    const response = await post('/v1/generate', { context, max_tokens: 10, sampling: greedy, stop_token_ids: [expected[1]] });
    const events = (await response.text()).trim().split('\n').map((l) => JSON.parse(l) as GenerateEvent);
    const cut = expected.indexOf(expected[1]) + 1;
    expect(events.flatMap((e) => (e.type === 'token' ? [e.token] : []))).toEqual(expected.slice(0, cut));
    expect(events.at(-1)).toMatchObject({ type: 'done', finish_reason: 'stop' });
  });

  it('rejects bad generate input before streaming', async () => {
    const response = await post('/v1/generate', { context, max_tokens: 0, sampling: greedy });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { param: string } }).error.param).toBe('max_tokens');
  });

  it('reports its model on /health and 404s unknown routes in OpenAI shape', async () => {
    const health = await (await app.request('/health')).json();
    expect(health).toMatchObject({ status: 'ok', id: 'test-origin', vocab_size: model.config.vocabSize, max_positions: model.config.maxPositions, cost_model: null });
    const missing = await app.request('/v2/nothing');
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { type: string } }).error.type).toBe('not_found_error');
  });
});
