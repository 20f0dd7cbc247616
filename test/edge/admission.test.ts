import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { estimateGeneration, JS_BASE_BYTES, type DraftShape } from '../../functions/middleware/admission';
import { parseDecoderConfig } from '../../shared/model/config';
import { startEdge, type EdgeService } from '../../scripts/stack';
import { api, originUrl, sseData, waitFor } from '../support/edge-client';
import { DRAFT_DIR, loadFolderTokenizer } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * A fresh test Worker of its own (on the shared origin), for two things only a
 * fresh isolate shows:
 *
 * 1. Cold start: the Worker's global scope does no work a cold start would pay.
 *    `/health` answers at once and ORT's WASM is not instantiated (no model
 *    load, no WASM instance) until the first generation asks for the engine.
 * 2. Memory admission (functions/middleware/admission.ts): with
 *    ISOLATE_MEMORY_BUDGET_MB set so that two long generations fit and a
 *    third does not, the third gets 503 isolate_busy in OpenAI's shape with
 *    Retry-After, the first two complete, a short one fits meanwhile, and a
 *    long one after them succeeds. A background job is admitted by the same
 *    check in the queue consumer: one too large to fit beside the two waits,
 *    queued, unclaimed and uncharged, and runs once when they are done.
 */
const port = Number(process.env.TEST_ADMISSION_EDGE_PORT ?? 18795);
const shape: DraftShape = parseDecoderConfig(JSON.parse(readFileSync(`${DRAFT_DIR}/config.json`, 'utf8')));
const MiB = 2 ** 20;

/** The long requests: a 600-token prompt (token ids: its length is exact) and room for 400 more. */
const PROMPT_TOKENS = 600;
const MAX_TOKENS = 400;
/** ORT's WASM heap once the shipped draft's session exists, measured in workerd (see admission.ts); checked below. */
const ASSUMED_HEAP_AT_LOAD = 23.13 * MiB;

const long = estimateGeneration(shape, { promptTokens: PROMPT_TOKENS, maxTokens: MAX_TOKENS, bodyBytes: PROMPT_TOKENS * 5 });
const base = JS_BASE_BYTES + ASSUMED_HEAP_AT_LOAD + long.prefillBytes;
/** Halfway between two long generations and three: each side has half a generation (≈ 6.6 MiB) of margin. */
const budgetMiB = ((base + 2.5 * long.bytes) / MiB).toFixed(3);
const budgetBytes = Math.round(Number(budgetMiB) * MiB);

let edge: EdgeService;
let prompts: number[][];

beforeAll(async () => {
  edge = await startEdge({
    port,
    originUrl: originUrl(),
    persistTo: `.wrangler/test-state-${port}`,
    draftDir: DRAFT_DIR,
    tenant: { name: `admission-${Date.now()}` },
    vars: { ISOLATE_MEMORY_BUDGET_MB: budgetMiB },
  });
  // Distinct real-code prompts (no prefix-cache hits between them), exactly PROMPT_TOKENS long.
  const tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  const text = heldOutPrompts(12, 4000);
  prompts = [0, 3, 6, 9].map((i) => tokenizer.encode(text.slice(i, i + 3).join('\n')).slice(-PROMPT_TOKENS));
  for (const p of prompts) expect(p.length).toBe(PROMPT_TOKENS);
});
afterAll(() => edge?.stop());

const headers = () => ({ 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` });
const isolate = async () => (await (await fetch(`${edge.url}/internal/isolate`, { headers: headers() })).json()) as {
  wasm_instantiated: boolean;
  wasm_heap_bytes: number | null;
  admission: { budget_bytes: number; wasm_heap_at_load_bytes: number | null; projected_heap_bytes: number; in_flight: number; refusals: number; reserved_bytes: number; estimated_bytes: number };
};
const completion = (body: Record<string, unknown>) => fetch(`${edge.url}/v1/completions`, { method: 'POST', headers: headers(), body: JSON.stringify(body) });
/**
 * Drafted at the edge one token a round: the slowest speculative plan, so a long generation lasts seconds on any
 * machine (origin placement on an idle machine finished 400 tokens in about 2 s, before the job test's check).
 */
const longRequest = (prompt: number[]) =>
  completion({ prompt, max_tokens: MAX_TOKENS, temperature: 0.7, seed: 7, stream: true, speculation: { mode: 'lockstep', placement: 'edge', draft_length: 1 } });

/** Two long streams, admitted and running (their first chunk read), and a function that reads both to their end. */
async function twoLongStreams(): Promise<{ finish(): Promise<string[]> }> {
  const [a, b] = await Promise.all([longRequest(prompts[0]), longRequest(prompts[1])]);
  expect([a.status, b.status]).toEqual([200, 200]);
  const readers = [a, b].map((r) => r.body!.getReader());
  const decoder = new TextDecoder();
  const texts = ['', ''];
  for (const [i, reader] of readers.entries()) texts[i] += decoder.decode((await reader.read()).value);
  return {
    async finish() {
      for (const [i, reader] of readers.entries()) {
        for (let step = await reader.read(); !step.done; step = await reader.read()) texts[i] += decoder.decode(step.value, { stream: true });
      }
      return texts;
    },
  };
}

describe('cold start', () => {
  it('answers /health without loading the draft engine; the first generation loads it', async () => {
    const started = performance.now();
    const health = await fetch(`${edge.url}/health`);
    expect(health.status).toBe(200);
    expect(performance.now() - started).toBeLessThan(250);
    expect((await isolate()).wasm_instantiated).toBe(false);
    // Routes that generate nothing do not load it either.
    expect((await fetch(`${edge.url}/v1/models`, { headers: headers() })).status).toBe(200);
    expect((await isolate()).wasm_instantiated).toBe(false);

    const first = await completion({ prompt: 'let x = 1;', max_tokens: 2 });
    expect(first.status).toBe(200);
    const after = await isolate();
    expect(after.wasm_instantiated).toBe(true);
    expect(after.wasm_heap_bytes).toBeGreaterThan(0);
    expect(after.admission.in_flight).toBe(0);
  });
});

describe('memory admission', () => {
  it('refuses a third long generation with 503 isolate_busy, serves the two, a short one, and the next long one', async () => {
    // The arithmetic this test rests on, with the isolate's real heap.
    const before = await isolate();
    expect(before.admission.budget_bytes).toBe(budgetBytes);
    const atLoad = before.admission.wasm_heap_at_load_bytes!;
    expect(Math.abs(atLoad - ASSUMED_HEAP_AT_LOAD), `the WASM heap at load is ${(atLoad / MiB).toFixed(2)} MiB; update ASSUMED_HEAP_AT_LOAD`).toBeLessThan(3 * MiB);
    const projected = (n: number) => JS_BASE_BYTES + Math.max(before.wasm_heap_bytes!, atLoad + long.prefillBytes) + n * long.bytes;
    expect(projected(2)).toBeLessThanOrEqual(budgetBytes);
    expect(projected(3)).toBeGreaterThan(budgetBytes);

    // Two long streams, admitted and running (their first round has been answered).
    const streams = await twoLongStreams();
    const during = await isolate();
    expect(during.admission.in_flight, 'both long generations must still be running when the third arrives').toBe(2);

    // The third: refused before anything runs, in OpenAI's shape, with Retry-After.
    const c = await longRequest(prompts[2]);
    expect(c.status).toBe(503);
    expect(Number(c.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const refused = (await c.json()) as { error: { message: string; type: string; param: string | null; code: string } };
    expect(refused.error).toMatchObject({ type: 'service_unavailable', code: 'isolate_busy', param: null });
    expect(refused.error.message).toMatch(/memory budget/);

    // Admission is by size, not by count: a short generation still fits.
    const short = await completion({ prompt: 'const y = 2;', max_tokens: 4 });
    expect(short.status).toBe(200);

    // The first two complete.
    for (const text of await streams.finish()) {
      const events = sseData(text);
      expect(events.at(-1)).toBe('[DONE]');
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      expect(chunks.some((chunk) => chunk.error)).toBe(false);
      expect(chunks.at(-1).choices[0].finish_reason).toMatch(/length|stop/);
    }
    // The slots are released with the streams, and the next long generation is served.
    expect((await isolate()).admission.in_flight).toBe(0);
    const d = await completion({ prompt: prompts[3], max_tokens: MAX_TOKENS, temperature: 0.7, seed: 7 });
    expect(d.status).toBe(200);
    expect(((await d.json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens).toBe(PROMPT_TOKENS);
    const end = await isolate();
    expect(end.admission.in_flight).toBe(0);
    // What the shipped draft's isolate holds after all that (reported by the test run).
    console.log(`[admission] budget ${(budgetBytes / MiB).toFixed(1)} MiB; one long generation ${(long.bytes / MiB).toFixed(2)} MiB (KV ${(long.kvBytes / MiB).toFixed(2)}, logits ${(long.logitsBytes / MiB).toFixed(2)}), prefill ${(long.prefillBytes / MiB).toFixed(2)} MiB; WASM heap at load ${(atLoad / MiB).toFixed(2)} MiB, now ${((end.wasm_heap_bytes ?? 0) / MiB).toFixed(2)} MiB`);
  });
});

describe('memory admission of background jobs', () => {
  it('a job too large to fit beside two long generations waits (queued, no run, nothing charged) and runs once they end', async () => {
    // The same arithmetic as above, with the heap as the generations before left it (a short generation first, so
    // the engine is loaded even in an isolate that started since).
    expect((await completion({ prompt: 'let x = 1;', max_tokens: 2 })).status).toBe(200);
    const now = await isolate();
    const projected = (n: number) => JS_BASE_BYTES + Math.max(now.wasm_heap_bytes!, now.admission.wasm_heap_at_load_bytes! + long.prefillBytes) + n * long.bytes;
    expect(projected(2), 'two long generations must still fit the budget').toBeLessThanOrEqual(budgetBytes);
    // The job: a long prompt (its logits alone are ≈ 9 MiB, more than the half generation of margin) and few tokens.
    const JOB_MAX_TOKENS = 16;
    const job = estimateGeneration(shape, { promptTokens: PROMPT_TOKENS, maxTokens: JOB_MAX_TOKENS, bodyBytes: PROMPT_TOKENS * 5 });
    expect(projected(2) + job.bytes).toBeGreaterThan(budgetBytes);

    // Its own tenant with a daily quota, to see what it was charged.
    const DAILY = 4_000;
    const tenant = await edge.createTenantKey({ tokens_per_day: DAILY });
    const streams = await twoLongStreams();
    expect((await isolate()).admission.in_flight).toBe(2);
    const created = await api('POST', '/v1/jobs', { prompt: prompts[2], max_tokens: JOB_MAX_TOKENS, temperature: 0 }, tenant.key, {}, edge.url);
    expect(created.status, JSON.stringify(created.json)).toBe(202);

    // The consumer gets the message within about a second (max_batch_timeout = 1) and is refused: the job is not
    // claimed. Waited for by the isolate's refusal count, not a fixed sleep, so the check lands while both long
    // generations still run.
    const refusalsBefore = (await isolate()).admission.refusals;
    const refusedNow = await waitFor('the consumer to refuse the job', async () => {
      const now = await isolate();
      return now.admission.refusals > refusalsBefore ? now : null;
    }, 20_000, 100);
    expect(refusedNow.admission.in_flight, 'the refused job holds no slot').toBe(2);
    const waiting = (await api('GET', `/v1/jobs/${created.json.id}`, undefined, tenant.key, {}, edge.url)).json;
    expect(waiting).toMatchObject({ status: 'queued', attempts: 0, started_at: null, error: null });

    // The long generations end; the job's next message is admitted and it runs, once.
    for (const text of await streams.finish()) expect(sseData(text).at(-1)).toBe('[DONE]');
    const done = await waitFor('the job to finish', async () => {
      const got = (await api('GET', `/v1/jobs/${created.json.id}`, undefined, tenant.key, {}, edge.url)).json;
      return ['completed', 'failed', 'cancelled'].includes(got?.status) ? got : null;
    }, 60_000, 250);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    expect(done.attempts, 'the refusals used no attempt').toBe(1);
    expect(done.usage.prompt_tokens).toBe(PROMPT_TOKENS);
    expect((await isolate()).admission.in_flight).toBe(0);

    // Charged for exactly the run that finished: a request reserving one token more than what is left is refused, and the
    // quota reports exactly the job's tokens as used (the refusals reserved nothing).
    const used = done.usage.total_tokens as number;
    const over = await api('POST', '/v1/completions', { prompt: [1], max_tokens: DAILY - used, temperature: 0, stream: true }, tenant.key, {}, edge.url);
    expect(over.status, JSON.stringify(over.json)).toBe(429);
    expect(over.json.error.code).toBe('insufficient_quota');
    expect(over.json.error.message).toContain(`, ${used} used;`);
  });
});
