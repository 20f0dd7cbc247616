import { describe, expect, it } from 'vitest';
import { authHeaders, edgeUrl, originUrl } from '../support/edge-client';

/**
 * A client that disconnects stops its generation within one round: the edge
 * aborts the verify calls in flight (and discarded pipelined blocks), and the
 * origin stops decoding an abandoned /v1/generate stream. Measured by the
 * origin's forward-pass count (GET /health → queue.served), which must stop
 * growing right after the disconnect.
 */
const served = async (): Promise<number> => ((await (await fetch(`${originUrl()}/health`)).json()) as { queue: { served: number } }).queue.served;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts a long stream, reads `chunks` chunks, disconnects; returns the origin's pass counts around it. */
async function disconnectAfter(chunks: number, speculation: Record<string, unknown>) {
  const before = await served();
  const controller = new AbortController();
  const response = await fetch(`${edgeUrl()}/v1/completions`, {
    method: 'POST',
    headers: authHeaders(),
    // A prompt the shipped pair tends to keep going on, and room for hundreds of tokens.
    body: JSON.stringify({ prompt: 'function parse(input) {\n  const tokens = [];\n', max_tokens: 600, temperature: 0, stream: true, speculation }),
    signal: controller.signal,
  });
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  for (let read = 0; read < chunks; read++) {
    const { done } = await reader.read();
    expect(done).toBe(false);
  }
  controller.abort();
  const atAbort = await served();
  // Let a round in flight land, then watch for passes that should not happen.
  await sleep(500);
  const settled = await served();
  await sleep(1500);
  const later = await served();
  return { before, atAbort, settled, later };
}

describe('cancellation: a disconnected client stops its generation', () => {
  const modes: Array<[string, Record<string, unknown>]> = [
    ['lockstep', { mode: 'lockstep', draft_length: 4 }],
    ['pipelined', { mode: 'pipelined', draft_length: 4, depth: 3 }],
    ['origin-only', { draft_length: 0 }],
  ];
  it.each(modes)('%s: the origin runs no forward pass a second after the disconnect', async (_name, speculation) => {
    const full = await served();
    const { before, atAbort, settled, later } = await disconnectAfter(3, speculation);
    console.log(`[cancellation] ${_name}: ${atAbort - before} passes before the disconnect, ${settled - atAbort} in the 500 ms after, ${later - settled} in the 1.5 s after that`);
    // Work happened before the abort. The disconnect takes a few hops to reach the origin (client →
    // wrangler's proxy → workerd → request.signal → the origin's socket): the round in flight, and in
    // origin-only decoding a few one-token passes (a few ms each), may land meanwhile. Then nothing.
    expect(atAbort).toBeGreaterThan(before);
    expect(settled - atAbort).toBeLessThanOrEqual(12);
    expect(later).toBe(settled);
    // Far fewer passes than the 600-token generation would have cost (≥ 120 rounds even if every draft were accepted).
    expect(later - full).toBeLessThan(100);
  });

  // Not tested here: a non-streamed request whose client leaves before the answer. Deployed Workers abort
  // request.signal then (enable_request_signal), which cancels the generation the same way; local wrangler
  // dev's proxy does not forward that disconnect to the Worker (workers-sdk#9368), so locally it runs on.

  it('keeps serving after the disconnects', async () => {
    const response = await fetch(`${edgeUrl()}/v1/completions`, { method: 'POST', headers: authHeaders(), body: JSON.stringify({ prompt: 'let x = ', max_tokens: 4, temperature: 0 }) });
    expect(response.status).toBe(200);
  });
});
