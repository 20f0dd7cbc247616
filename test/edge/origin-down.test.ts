import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdge, type EdgeService } from '../../scripts/stack';
import { DRAFT_DIR } from '../support/models';

/** An edge whose origin is not running: every generation must fail cleanly, fast, in OpenAI's shape. */
let edge: EdgeService;
const port = Number(process.env.TEST_DOWN_EDGE_PORT ?? 18797);

beforeAll(async () => {
  edge = await startEdge({
    port,
    // Nothing listens here.
    originUrl: 'http://127.0.0.1:9',
    persistTo: `.wrangler/test-state-${port}`,
    draftDir: DRAFT_DIR,
    vars: { ORIGIN_TIMEOUT_MS: '3000' },
  });
});
afterAll(() => edge?.stop());

describe('origin unreachable', () => {
  for (const stream of [false, true]) {
    it(`answers 503 with a clear message (stream: ${stream}), not a broken stream`, async () => {
      const started = Date.now();
      const response = await fetch(`${edge.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` },
        body: JSON.stringify({ prompt: 'let a = 1;', max_tokens: 8, stream }),
      });
      expect(response.status).toBe(503);
      expect(response.headers.get('content-type')).toContain('application/json');
      const body = (await response.json()) as { error: { message: string; type: string; code: string } };
      expect(body.error).toMatchObject({ type: 'service_unavailable', code: 'origin_unreachable' });
      expect(body.error.message).toMatch(/No verifier can serve this request/);
      // Nothing about the origins reaches the client: no URL, no id, no exception text; the request id is there.
      expect(body.error.message).not.toMatch(/127\.0\.0\.1|origin-0|ECONNREFUSED|fetch failed/i);
      expect(body.error.message).toContain(response.headers.get('x-request-id')!);
      expect(Date.now() - started).toBeLessThan(10_000);
    });
  }

  it('still validates input first (400 beats 503) and reports deep health as degraded', async () => {
    const bad = await fetch(`${edge.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` }, body: '{"prompt": ""}' });
    expect(bad.status).toBe(400);
    const health = await fetch(`${edge.url}/health?deep=1`, { headers: { authorization: `Bearer ${edge.adminSecret}` } });
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'degraded' });
  });
});
