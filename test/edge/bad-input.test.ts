import { describe, expect, it } from 'vitest';
import { authHeaders, complete, edgeUrl } from '../support/edge-client';

const ok = { prompt: 'x = 1', max_tokens: 2, temperature: 0 };

/** Every request field with a value it must refuse, and the `param` the error must name. */
const cases: Array<[string, Record<string, unknown>, string | null]> = [
  ['model unknown', { model: 'gpt-4' }, 'model'],
  ['model empty', { model: '' }, 'model'],
  ['prompt missing', { prompt: undefined }, 'prompt'],
  ['prompt empty string', { prompt: '' }, 'prompt'],
  ['prompt empty ids', { prompt: [] }, 'prompt'],
  ['prompt negative id', { prompt: [1, -2] }, 'prompt'],
  ['prompt fractional id', { prompt: [1.5] }, 'prompt'],
  ['prompt id outside vocabulary', { prompt: [1, 99_999_999] }, 'prompt'],
  ['prompt batch', { prompt: ['a', 'b'] }, 'prompt'],
  ['prompt object', { prompt: { text: 'a' } }, 'prompt'],
  ['max_tokens zero', { max_tokens: 0 }, 'max_tokens'],
  ['max_tokens fractional', { max_tokens: 2.5 }, 'max_tokens'],
  ['max_tokens string', { max_tokens: '5' }, 'max_tokens'],
  ['max_tokens huge', { max_tokens: 10_000_000 }, 'max_tokens'],
  ['temperature negative', { temperature: -0.1 }, 'temperature'],
  ['temperature above 2', { temperature: 2.5 }, 'temperature'],
  ['top_p zero', { top_p: 0 }, 'top_p'],
  ['top_p above 1', { top_p: 1.1 }, 'top_p'],
  ['top_k negative', { top_k: -5 }, 'top_k'],
  ['top_k fractional', { top_k: 1.5 }, 'top_k'],
  ['seed negative', { seed: -1 }, 'seed'],
  ['seed too large', { seed: 2 ** 40 }, 'seed'],
  ['stop empty string', { stop: '' }, 'stop'],
  ['stop too many', { stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
  ['stop number', { stop: 5 }, 'stop'],
  ['stream not boolean', { stream: 'yes' }, 'stream'],
  ['n above 1', { n: 2 }, 'n'],
  ['echo', { echo: true }, 'echo'],
  ['logprobs above 20', { logprobs: 21 }, 'logprobs'],
  ['logprobs not an integer', { logprobs: true }, 'logprobs'],
  ['presence_penalty', { presence_penalty: 1 }, 'presence_penalty'],
  ['unknown field', { frobnicate: true }, null],
  ['speculation.draft_length too large', { speculation: { draft_length: 99 } }, 'speculation.draft_length'],
  ['speculation.method unknown', { speculation: { method: 'tree' } }, 'speculation.method'],
];

describe('edge rejects bad input with a 400 in OpenAI shape', () => {
  it.each(cases)('%s', async (_name, override, param) => {
    const { status, json } = await complete({ ...ok, ...override });
    const expectedStatus = param === 'model' && override.model ? 404 : 400;
    expect(status).toBe(expectedStatus);
    expect(Object.keys(json)).toEqual(['error']);
    expect(json.error.type).toBe(expectedStatus === 404 ? 'not_found_error' : 'invalid_request_error');
    // `param` names the field, down to the offending element (prompt.1) where there is one.
    if (param === null) expect(json.error.param).toBeNull();
    else expect(json.error.param === param || json.error.param.startsWith(`${param}.`)).toBe(true);
    expect(json.error.message).toMatch(/\w{3,}/);
    expect(json.error).toHaveProperty('code');
  });

  it('rejects malformed JSON, an empty body and a non-object body', async () => {
    for (const body of ['{"prompt": ', '', '[1,2]', 'null']) {
      const response = await fetch(`${edgeUrl()}/v1/completions`, { method: 'POST', headers: authHeaders(), body });
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    }
  });

  it('answers 413 for prompts over the model context, as text or as ids', async () => {
    const long = await complete({ ...ok, prompt: 'a + b; '.repeat(2000) });
    expect(long.status).toBe(413);
    expect(long.json.error).toMatchObject({ code: 'context_length_exceeded', param: 'prompt' });
    const ids = await complete({ ...ok, prompt: new Array(5000).fill(5) });
    expect(ids.status).toBe(413);
  });

  it('answers 404 in OpenAI shape for unknown routes and wrong methods', async () => {
    const missing = await fetch(`${edgeUrl()}/v1/chat/nothing`, { headers: authHeaders() });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: object }).error).toBeDefined();
    const wrongMethod = await fetch(`${edgeUrl()}/v1/completions`, { headers: authHeaders() });
    expect(wrongMethod.status).toBe(404);
  });

  it('keeps serving after all of the above', async () => {
    const { status, json } = await complete(ok);
    expect(status).toBe(200);
    expect(json.choices[0].finish_reason).toBeDefined();
  });
});
