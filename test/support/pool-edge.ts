import { expect } from 'vitest';
import { startEdge, type EdgeService } from '../../scripts/stack';
import { DRAFT_DIR } from './models';

/**
 * An edge of its own in front of a pool of signed origins (ORIGINS), with a
 * breaker and health probes quick enough for failover tests to see a dead
 * origin leave the pool and come back within seconds.
 */
export function startPoolEdge(options: { port: number; secret: string; origins: Array<{ id: string; url: string }> }): Promise<EdgeService> {
  return startEdge({
    port: options.port,
    // Unused: ORIGINS names the pool.
    originUrl: 'http://127.0.0.1:9',
    persistTo: `.wrangler/test-state-${options.port}`,
    draftDir: DRAFT_DIR,
    secret: options.secret,
    vars: {
      ORIGINS: JSON.stringify(options.origins),
      ORIGIN_BREAKER_COOLDOWN_MS: '1500',
      ORIGIN_HEALTH_INTERVAL_MS: '1000',
      ORIGIN_TIMEOUT_MS: '10000',
    },
  });
}

/**
 * Streams a completion from `edge`; `onFirstTokens` runs (and is awaited) once tokens flow, e.g. to kill
 * an origin mid-stream. Every token id, the final chunk, any error chunk, whether [DONE] came, and
 * whether the callback ran.
 */
export async function streamUntilTokens(edge: EdgeService, body: Record<string, unknown>, onFirstTokens: () => void | Promise<void>) {
  const response = await fetch(`${edge.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` },
    body: JSON.stringify({ ...body, stream: true, return_token_ids: true }),
  });
  expect(response.status).toBe(200);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const ids: number[] = [];
  let buffered = '';
  let last: any = null;
  let error: any = null;
  let done = false;
  let fired = false;
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffered += value;
    let end: number;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const data = buffered.slice(0, end).replace(/^data: ?/, '');
      buffered = buffered.slice(end + 2);
      if (data === '[DONE]') {
        done = true;
        continue;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) error = chunk.error;
      else {
        ids.push(...(chunk.choices[0]?.token_ids ?? []));
        last = chunk;
      }
      if (!fired && ids.length) {
        fired = true;
        await onFirstTokens();
      }
    }
  }
  return { ids, last, error, done, fired };
}
