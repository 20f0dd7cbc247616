import type { EdgeService } from '../scripts/stack';

/** Talking to the edge and reading its SSE completion streams, shared by the benchmark suites. */

/** Where the suites send requests: the edge's URL and the API key of the tenant they act as. */
export type EdgeTarget = Pick<EdgeService, 'url' | 'apiKey'>;

/** POST a JSON body to the edge as the target's tenant (every /v1/* and /internal/* route needs the key). */
export function postJson(edge: EdgeTarget, path: string, body: unknown): Promise<Response> {
  return fetch(`${edge.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` },
    body: JSON.stringify(body),
  });
}

/** The `data:` payloads of an SSE body, in order (including the final "[DONE]"). */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const piece of body) {
    buffered += decoder.decode(piece, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      yield event.replace(/^data: ?/, '');
    }
  }
}

export interface StreamedCompletion {
  /** Time to the first chunk carrying text (the whole request if none did). */
  ttftMs: number;
  wallMs: number;
  /** The final chunk: finish_reason, usage and speculation stats. */
  last: any;
}

/** POST a streamed completion and time it; a stream error fails the run. */
export async function streamCompletion(edge: EdgeTarget, body: Record<string, unknown>): Promise<StreamedCompletion> {
  const started = performance.now();
  const response = await postJson(edge, '/v1/completions', { ...body, stream: true });
  if (!response.ok || !response.body) throw new Error(`completion failed: ${response.status} ${await response.text()}`);
  let ttftMs = 0;
  let last: any = null;
  for await (const data of sseData(response.body)) {
    if (data === '[DONE]') continue;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(`stream error: ${chunk.error.message}`);
    if (!ttftMs && chunk.choices?.[0]?.text) ttftMs = performance.now() - started;
    last = chunk;
  }
  const wallMs = performance.now() - started;
  return { ttftMs: ttftMs || wallMs, wallMs, last };
}
