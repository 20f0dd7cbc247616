import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, type EdgeService, type Service } from '../../scripts/stack';
import { TARGET_DIR } from '../support/models';
import { startPoolEdge, streamUntilTokens } from '../support/pool-edge';
import { heldOutPrompts } from '../support/prompts';

/**
 * The origin pool with real processes: two signed reference origins behind
 * one edge (workerd). Origins are killed (SIGKILL) in the middle of streams
 * and restarted; the edge must finish every stream with the output of a run
 * without the failure, open and recover breakers, keep prefix affinity while
 * healthy and move only a dead origin's prefixes, and answer 503 + Retry-After
 * fast when nothing is left.
 */
const ports = { a: Number(process.env.TEST_POOL_ORIGIN_A_PORT ?? 20811), b: Number(process.env.TEST_POOL_ORIGIN_B_PORT ?? 20812), edge: Number(process.env.TEST_POOL_EDGE_PORT ?? 20813) };
const secret = randomBytes(32).toString('hex');
const origins: Record<'a' | 'b', Service | null> = { a: null, b: null };
let edge: EdgeService;
const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const idOf = { a: 'pool-a', b: 'pool-b' } as const;

const startPoolOrigin = (name: 'a' | 'b') => startOrigin({ port: ports[name], id: idOf[name], targetDir: TARGET_DIR, secret }).then((s) => (origins[name] = s));

beforeAll(async () => {
  await Promise.all([startPoolOrigin('a'), startPoolOrigin('b')]);
  edge = await startPoolEdge({
    port: ports.edge,
    secret,
    origins: [
      { id: idOf.a, url: origins.a!.url },
      { id: idOf.b, url: origins.b!.url },
    ],
  });
});
afterAll(async () => {
  await edge?.stop();
  await Promise.all([origins.a?.stop(), origins.b?.stop()]);
});

async function complete(body: Record<string, unknown>) {
  const started = Date.now();
  const response = await fetch(`${edge.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` }, body: JSON.stringify(body) });
  return { status: response.status, headers: response.headers, json: (await response.json()) as any, ms: Date.now() - started };
}

const stream = (body: Record<string, unknown>, onFirstTokens: () => void | Promise<void>) => streamUntilTokens(edge, body, onFirstTokens);

const kill = (name: 'a' | 'b') => {
  origins[name]!.process.kill('SIGKILL');
  origins[name] = null;
};
const deepHealth = async () => (await (await fetch(`${edge.url}/health?deep=1`, { headers: { authorization: `Bearer ${edge.adminSecret}` } })).json()) as { status: string; origins: Array<{ id: string; state: string; failures: number }> };

const prompts = heldOutPrompts(16, 200);
/** Which origin serves each prompt while both are healthy. */
const home = new Map<string, string>();
const maxTokens = 96;

describe('origin pool with real origin processes', () => {
  it('signs its calls: the origins refuse unsigned requests with 401, the edge is served', async () => {
    const direct = await fetch(`${origins.a!.url}/v1/verify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ context: [1, 2, 3], draft: [], sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 } }),
    });
    expect(direct.status).toBe(401);
    expect(await direct.json()).toMatchObject({ error: { type: 'authentication_error', code: 'signature_missing' } });
    const { status, json } = await complete({ prompt: 'let a = 1;', max_tokens: 4, temperature: 0 });
    expect(status).toBe(200);
    expect([idOf.a, idOf.b]).toContain(json.speculation.origin);
  });

  it('keeps each prompt prefix on one origin while both are healthy, and uses both', async () => {
    for (const prompt of prompts) {
      const first = await complete({ prompt, max_tokens: 2, temperature: 0 });
      const second = await complete({ prompt, max_tokens: 2, temperature: 0 });
      expect(first.status).toBe(200);
      expect(second.json.speculation.origin).toBe(first.json.speculation.origin);
      home.set(prompt, first.json.speculation.origin);
    }
    expect(new Set(home.values())).toEqual(new Set([idOf.a, idOf.b]));
  });

  /** A prompt that lives on `origin` and generates maxTokens tokens (no early end-of-text), with its reference output. */
  async function longPromptOn(origin: string, draftLength: number) {
    for (const prompt of prompts.filter((p) => home.get(p) === origin)) {
      const { json } = await complete({ prompt, max_tokens: maxTokens, temperature: 0, return_token_ids: true, speculation: { draft_length: draftLength } });
      if (json.choices[0].token_ids.length === maxTokens && !json.choices[0].token_ids.some((t: number) => eosIds.includes(t))) return { prompt, reference: json.choices[0].token_ids as number[] };
    }
    throw new Error(`no held-out prompt on ${origin} generates ${maxTokens} tokens`);
  }

  it('speculative stream: kill its origin mid-stream; the stream completes with identical output; the breaker opens; affinity moves only for the dead origin', async () => {
    const { prompt, reference } = await longPromptOn(idOf.a, 4);
    const result = await stream({ prompt, max_tokens: maxTokens, temperature: 0 }, () => kill('a'));
    expect(result.fired).toBe(true);
    expect(result.error).toBeNull();
    expect(result.done).toBe(true);
    expect(result.ids).toEqual(reference);
    expect(result.last.speculation.origin).toContain(idOf.b);
    // Every prompt is served by the survivor; the dead origin's failures (the interrupted round, then the
    // first requests of its prefixes, each retried on b) open its breaker, after which it is not called.
    for (const p of prompts) {
      const { status, json } = await complete({ prompt: p, max_tokens: 2, temperature: 0 });
      expect(status).toBe(200);
      expect(json.speculation.origin).toBe(idOf.b);
    }
    const health = await deepHealth();
    expect(health.status).toBe('degraded');
    expect(health.origins.find((o) => o.id === idOf.a)).toMatchObject({ state: 'open', failures: expect.any(Number) });
  });

  it('recovers: the restarted origin passes its half-open probe and gets its prefixes back', async () => {
    await startPoolOrigin('a');
    const onA = prompts.filter((p) => home.get(p) === idOf.a);
    const deadline = Date.now() + 20_000;
    let served = '';
    while (Date.now() < deadline) {
      served = (await complete({ prompt: onA[0], max_tokens: 2, temperature: 0 })).json.speculation.origin;
      if (served === idOf.a) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(served).toBe(idOf.a);
    for (const p of prompts) expect((await complete({ prompt: p, max_tokens: 2, temperature: 0 })).json.speculation.origin).toBe(home.get(p));
    expect((await deepHealth()).origins.every((o) => o.state === 'closed')).toBe(true);
  });

  it('origin-only stream: kill its origin mid-stream; /v1/generate resumes elsewhere from the emitted tokens, output identical', async () => {
    const { prompt, reference } = await longPromptOn(idOf.b, 0);
    const result = await stream({ prompt, max_tokens: maxTokens, temperature: 0, speculation: { draft_length: 0 } }, () => kill('b'));
    expect(result.fired).toBe(true);
    expect(result.error).toBeNull();
    expect(result.ids).toEqual(reference);
    expect(result.last.speculation.origin).toBe(`${idOf.b},${idOf.a}`);
    // Seeded sampling resumes with the same draws too.
    await startPoolOrigin('b');
    const sampled = { prompt, max_tokens: 48, temperature: 0.8, top_p: 0.95, seed: 99, speculation: { draft_length: 0 } };
    const before = await complete({ ...sampled, return_token_ids: true });
    const broken = await stream(sampled, () => kill(before.json.speculation.origin === idOf.a ? 'a' : 'b'));
    expect(broken.error).toBeNull();
    expect(broken.ids).toEqual(before.json.choices[0].token_ids);
  });

  it('all origins down: 503 with Retry-After in OpenAI shape within 2 s; fallback "draft" answers, labelled', async () => {
    for (const name of ['a', 'b'] as const) if (origins[name]) kill(name);
    for (const streamed of [false, true]) {
      const { status, headers, json, ms } = await complete({ prompt: prompts[0], max_tokens: 8, temperature: 0, stream: streamed });
      expect(status).toBe(503);
      expect(ms).toBeLessThan(2000);
      expect(Number(headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(json.error).toMatchObject({ type: 'service_unavailable', code: 'origin_unreachable' });
      expect(json.error.message).toMatch(/No verifier can serve this request/);
    }
    const fallback = await complete({ prompt: prompts[0], max_tokens: 8, temperature: 0, fallback: 'draft' });
    expect(fallback.status).toBe(200);
    expect(fallback.headers.get('x-edgespec-fallback')).toBe('draft');
    expect(fallback.json.fallback).toMatchObject({ mode: 'draft', from_token: 0 });
    expect(fallback.json.speculation.origin).toBe('draft-only');
    expect(fallback.json.usage.completion_tokens).toBe(8);
  });
});
