import { describe, expect, it } from 'vitest';
import { authHeaders, complete, edgeUrl } from '../support/edge-client';

/**
 * Input is bounded before any work: the body by its size before it is read
 * (MAX_BODY_KB), a text prompt by its byte length before it is tokenized (no
 * prompt longer than context × the longest token's bytes can fit), stop
 * strings by number and length. Each oversized request is refused fast with
 * a clear OpenAI-shaped error, and a normal request running next to them in
 * the same isolate completes.
 */
async function post(body: BodyInit, headers: Record<string, string> = authHeaders()) {
  const started = Date.now();
  const response = await fetch(`${edgeUrl()}/v1/completions`, { method: 'POST', headers, body, duplex: 'half' } as RequestInit);
  return { status: response.status, json: (await response.json()) as any, ms: Date.now() - started };
}

describe('bounded input', () => {
  it('refuses a 100 MB body, a 10 MB prompt and 4 × 1 MB stop strings with 413, while a normal request completes', async () => {
    const normal = complete({ prompt: 'function add(a, b) {', max_tokens: 48, temperature: 0 });
    const huge = await post(new Uint8Array(100 * 2 ** 20).fill(32));
    expect(huge.status).toBe(413);
    expect(huge.json.error).toMatchObject({ type: 'invalid_request_error', code: 'body_too_large' });
    const prompt = await post(JSON.stringify({ prompt: 'a'.repeat(10 * 2 ** 20), max_tokens: 4 }));
    expect(prompt.status).toBe(413);
    expect(prompt.ms).toBeLessThan(5_000);
    const stops = await post(JSON.stringify({ prompt: 'x', max_tokens: 4, stop: Array(4).fill('s'.repeat(2 ** 20)) }));
    expect(stops.status).toBe(413);
    const done = await normal;
    expect(done.status).toBe(200);
    expect(done.json.usage.completion_tokens).toBeGreaterThan(0);
  });

  it('refuses a chunked body past the limit without reading it all, and keeps serving', async () => {
    // No Content-Length: the limit is enforced while reading. The edge answers 413 and closes;
    // a client still uploading may see the connection reset instead of reading the answer.
    const chunked = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 100; i++) controller.enqueue(new Uint8Array(2 ** 20).fill(32));
        controller.close();
      },
    });
    const outcome = await post(chunked).then((r) => r.status, () => 'reset');
    expect([413, 'reset']).toContain(outcome);
    expect((await complete({ prompt: 'x = ', max_tokens: 2 })).status).toBe(200);
  });

  it('refuses a prompt that cannot fit by its byte length before tokenizing it', async () => {
    // 900 KB fits the body limit; one repeated character is the slow case of BPE.
    const refused = await post(JSON.stringify({ prompt: ' '.repeat(900_000), max_tokens: 4 }));
    expect(refused.status).toBe(413);
    expect(refused.json.error).toMatchObject({ code: 'context_length_exceeded', param: 'prompt' });
    expect(refused.json.error.message).toMatch(/maximum context length is \d+ tokens; the prompt has more than \d+ bytes/);
    expect(refused.ms).toBeLessThan(1_000);
  });

  it('refuses long stop strings with a 400 naming the field', async () => {
    const { status, json } = await complete({ prompt: 'x', max_tokens: 2, stop: ['ok', 's'.repeat(200_000)] });
    expect(status).toBe(400);
    expect(json.error).toMatchObject({ param: 'stop.1', code: 'invalid_value' });
  });

  it('takes sampling values at the edge of the schema exactly, never as an origin failure', async () => {
    // A subnormal temperature used to produce NaN probabilities, a 500 at the origin and an opened breaker.
    for (const speculation of [{ draft_length: 4 }, { draft_length: 0 }]) {
      const tiny = await complete({ prompt: 'let total = 0;', max_tokens: 8, temperature: 5e-324, seed: 1, speculation, return_token_ids: true });
      expect(tiny.status).toBe(200);
      // The limit of temperature → 0 is greedy decoding: the same tokens.
      const greedy = await complete({ prompt: 'let total = 0;', max_tokens: 8, temperature: 0, speculation, return_token_ids: true });
      expect(tiny.json.choices[0].token_ids).toEqual(greedy.json.choices[0].token_ids);
      expect((await complete({ prompt: 'x', max_tokens: 4, top_p: 5e-324, temperature: 1, speculation })).status).toBe(200);
    }
    // And the next caller is served normally.
    expect((await complete({ prompt: 'x', max_tokens: 2 })).status).toBe(200);
  });
});
