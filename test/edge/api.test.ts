import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { admin, apiKey, authHeaders, complete, createTenantKey, edgeUrl, sseData, type CompletionBody } from '../support/edge-client';

describe('edge OpenAI API (workerd + real origin)', () => {
  it('serves /health and /v1/models', async () => {
    expect(await (await fetch(`${edgeUrl()}/health`)).json()).toEqual({ status: 'ok', model: 'edgespec' });
    // Deep health names the origins: the admin secret only.
    const anonymous = await fetch(`${edgeUrl()}/health?deep=1`);
    expect(anonymous.status).toBe(401);
    expect(JSON.stringify(await anonymous.json())).not.toMatch(/127\.0\.0\.1|origin-0/);
    expect((await fetch(`${edgeUrl()}/health?deep=1`, { headers: authHeaders() })).status).toBe(401);
    const deep = await (await fetch(`${edgeUrl()}/health?deep=1`, { headers: { authorization: `Bearer ${inject('adminSecret')}` } })).json();
    expect(deep).toMatchObject({ status: 'ok', origin: { status: 'ok' } });
    const models = await (await fetch(`${edgeUrl()}/v1/models`, { headers: authHeaders() })).json();
    expect(models).toMatchObject({ object: 'list', data: [{ id: 'edgespec', object: 'model' }] });
  });

  it('completes a string prompt with usage and speculation stats', async () => {
    const { status, json } = await complete({ model: 'edgespec', prompt: 'function add(a, b) {', max_tokens: 24, temperature: 0 });
    expect(status).toBe(200);
    const body = json as CompletionBody;
    expect(body.object).toBe('text_completion');
    expect(body.id).toMatch(/^cmpl-/);
    expect(body.choices).toHaveLength(1);
    expect(body.choices[0].text.length).toBeGreaterThan(0);
    expect(['stop', 'length']).toContain(body.choices[0].finish_reason);
    const { usage, speculation } = body;
    expect(usage.prompt_tokens).toBeGreaterThan(3);
    expect(usage.total_tokens).toBe(usage.prompt_tokens + usage.completion_tokens);
    expect(usage.completion_tokens_details.accepted_prediction_tokens).toBe(speculation.accepted);
    expect(usage.completion_tokens_details.rejected_prediction_tokens).toBe(speculation.drafted - speculation.accepted);
    expect(speculation).toMatchObject({ mode: 'speculative', origin: 'origin-0' });
    expect(speculation.rounds).toBeGreaterThan(0);
    expect(speculation.rounds).toBeLessThanOrEqual(usage.completion_tokens);
    // Each round emits its accepted drafts plus one target token.
    expect(usage.completion_tokens).toBeLessThanOrEqual(speculation.accepted + speculation.rounds);
  });

  it('accepts a prompt of token ids and returns token ids on request', async () => {
    const { status, json } = await complete({ prompt: [11, 22, 33, 44], max_tokens: 8, temperature: 0, return_token_ids: true });
    expect(status).toBe(200);
    expect(json.choices[0].prompt_token_ids).toEqual([11, 22, 33, 44]);
    expect(json.choices[0].token_ids.length).toBe(json.usage.completion_tokens);
  });

  it('streams OpenAI chunks over SSE, ending with [DONE], with the same text as non-streamed', async () => {
    const request = { prompt: 'const x = ', max_tokens: 20, temperature: 0 };
    const whole = (await complete(request)).json as CompletionBody;
    const response = await fetch(`${edgeUrl()}/v1/completions`, {
      method: 'POST',
      headers: authHeaders(),
      body: JSON.stringify({ ...request, stream: true }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    const events = sseData(await response.text());
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    for (const chunk of chunks) expect(chunk).toMatchObject({ object: 'text_completion', id: chunks[0].id });
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(whole.choices[0].text);
    const last = chunks.at(-1);
    expect(last.choices[0].finish_reason).toBe(whole.choices[0].finish_reason);
    expect(last.usage.completion_tokens).toBe(whole.usage.completion_tokens);
    expect(last.speculation.rounds).toBeGreaterThan(0);
  });

  it('stops at a stop string without emitting it', async () => {
    const base = (await complete({ prompt: 'function add(a, b) {', max_tokens: 30, temperature: 0 })).json as CompletionBody;
    const text = base.choices[0].text;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2);
    expect(stop.length).toBe(2);
    const stopped = (await complete({ prompt: 'function add(a, b) {', max_tokens: 30, temperature: 0, stop: [stop] })).json as CompletionBody;
    expect(stopped.choices[0].finish_reason).toBe('stop');
    expect(stopped.choices[0].text).toBe(text.slice(0, text.indexOf(stop)));
  });

  it('is reproducible with a seed when sampling', async () => {
    const request = { prompt: 'import ', max_tokens: 16, temperature: 0.8, top_p: 0.95, seed: 1234 };
    const a = (await complete(request)).json as CompletionBody;
    const b = (await complete(request)).json as CompletionBody;
    expect(a.choices[0].text).toBe(b.choices[0].text);
  });

  it('decodes origin-only when speculation is off (draft_length 0) with the same greedy text', async () => {
    const request = { prompt: 'export function ', max_tokens: 16, temperature: 0 };
    const speculative = (await complete(request)).json as CompletionBody;
    const originOnly = (await complete({ ...request, speculation: { draft_length: 0 } })).json as CompletionBody;
    expect(originOnly.speculation.mode).toBe('origin');
    expect(originOnly.speculation.drafted).toBe(0);
    expect(originOnly.choices[0].text).toBe(speculative.choices[0].text);
  });

  it('works with the official openai client, streamed and not', async () => {
    const client = new OpenAI({ baseURL: `${edgeUrl()}/v1`, apiKey: apiKey() });
    const completion = await client.completions.create({ model: 'edgespec', prompt: 'let total = 0;', max_tokens: 12, temperature: 0 });
    expect(completion.choices[0].text.length).toBeGreaterThan(0);
    let streamed = '';
    const stream = await client.completions.create({ model: 'edgespec', prompt: 'let total = 0;', max_tokens: 12, temperature: 0, stream: true });
    for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? '';
    expect(streamed).toBe(completion.choices[0].text);
    await expect(client.completions.create({ model: 'gpt-9', prompt: 'x', max_tokens: 1 })).rejects.toMatchObject({ status: 404 });
  });
});
