import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { admitGeneration, estimateGeneration, generationSize, isolateMemory, JS_BASE_BYTES, kvBytesPerPosition, prefillBytes, type DraftShape } from '../../functions/middleware/admission';
import { parseDecoderConfig } from '../../shared/model/config';

/**
 * The isolate memory estimate (functions/middleware/admission.ts) with the
 * shipped draft's shape: the numbers README "Deploying" quotes, and the rules
 * of admission. The real thing in workerd: test/edge/admission.test.ts.
 */
const shape: DraftShape = parseDecoderConfig(JSON.parse(readFileSync('models/edgespec-draft/config.json', 'utf8')));
const MiB = 2 ** 20;
const HEAP_AT_LOAD = 23.13 * MiB;

describe('isolate memory estimate', () => {
  it('counts the shipped draft: 2 KiB of fp32 KV per position, prefill growing with n²', () => {
    expect(kvBytesPerPosition(shape)).toBe(4 * 2 * 2 * 32 * 4);
    const full = estimateGeneration(shape, { promptTokens: 1023, maxTokens: 1, bodyBytes: 6000 });
    expect(full.positions).toBe(1024);
    expect(full.kvBytes).toBe(2 * 2048 * 1024);
    expect(full.logitsBytes).toBe(1023 * 4096 * 4);
    // Covers the WASM heap growth measured in workerd after a 1000-token prefill (55.6 MiB at most).
    expect(prefillBytes(shape, 1000)).toBeGreaterThan(55.6 * MiB);
    expect(prefillBytes(shape, 5000)).toBe(prefillBytes(shape, 1024));
    const short = estimateGeneration(shape, { promptTokens: 20, maxTokens: 16, bodyBytes: 100 });
    expect(short.bytes).toBeLessThan(0.5 * MiB);
  });

  it('sizes a request from its body before the route parses it', () => {
    const count = { maxBytes: 1024 * 74, count: (text: string) => Math.ceil(text.length / 3) };
    expect(generationSize('/v1/completions', JSON.stringify({ prompt: [1, 2, 3], max_tokens: 50 }), 1024)).toMatchObject({ promptTokens: 3, maxTokens: 50 });
    expect(generationSize('/v1/completions', JSON.stringify({ prompt: 'abcdef' }), 1024, count)).toMatchObject({ promptTokens: 2, maxTokens: 16 });
    // Without a tokenizer, or past what the context can hold: one token per byte, capped at the context.
    expect(generationSize('/v1/completions', JSON.stringify({ prompt: 'abcdef' }), 1024)).toMatchObject({ promptTokens: 6 });
    expect(generationSize('/v1/completions', JSON.stringify({ prompt: 'x'.repeat(100_000) }), 1024, count)).toMatchObject({ promptTokens: 1024 });
    // Chat: the body's bytes bound the prompt; no max tokens means the rest of the context.
    const chat = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 8 });
    expect(generationSize('/v1/chat/completions', chat, 1024)).toEqual({ promptTokens: chat.length, maxTokens: 8, bodyBytes: chat.length });
    expect(generationSize('/v1/chat/completions', '{"messages": []}', 1024).maxTokens).toBe(1024);
    expect(generationSize('/v1/completions', 'not json', 1024)).toMatchObject({ promptTokens: 8, maxTokens: 16 });
  });

  it('admits by size within the budget, always admits into an idle isolate, releases once', () => {
    const long = { promptTokens: 600, maxTokens: 400, bodyBytes: 3000 };
    const one = estimateGeneration(shape, long);
    const budget = JS_BASE_BYTES + HEAP_AT_LOAD + one.prefillBytes + 2.5 * one.bytes;
    isolateMemory(budget, HEAP_AT_LOAD); // the first reading is the heap at load
    const a = admitGeneration(shape, long, budget, HEAP_AT_LOAD);
    const b = admitGeneration(shape, long, budget, HEAP_AT_LOAD);
    let refused: any;
    try {
      admitGeneration(shape, long, budget, HEAP_AT_LOAD);
    } catch (err) {
      refused = err;
    }
    expect(refused).toMatchObject({ status: 503, code: 'isolate_busy', headers: { 'retry-after': '1' } });
    expect(refused.toBody().error.type).toBe('service_unavailable');
    // A short one still fits.
    const small = admitGeneration(shape, { promptTokens: 10, maxTokens: 8, bodyBytes: 80 }, budget, HEAP_AT_LOAD);
    expect(isolateMemory(budget, HEAP_AT_LOAD).inFlight).toBe(3);
    for (const ticket of [a, b, small, a]) ticket.release();
    expect(isolateMemory(budget, HEAP_AT_LOAD)).toMatchObject({ inFlight: 0, reservedBytes: 0 });
    // Alone, even a generation whose estimate passes the budget is admitted: refusing it would refuse it everywhere.
    const huge = admitGeneration(shape, { promptTokens: 1023, maxTokens: 1, bodyBytes: 6000 }, 50 * MiB, HEAP_AT_LOAD);
    expect(() => admitGeneration(shape, { promptTokens: 10, maxTokens: 8, bodyBytes: 80 }, 50 * MiB, HEAP_AT_LOAD)).toThrow(/memory budget/);
    huge.release();
  });

  it('projects the heap from the largest prefill in flight, never below the heap measured now', () => {
    const m = isolateMemory(100 * MiB, 70 * MiB);
    expect(m.projectedHeapBytes).toBe(70 * MiB);
    expect(m.estimatedBytes).toBe(JS_BASE_BYTES + 70 * MiB);
  });
});
