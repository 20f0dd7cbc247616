import { beforeAll, describe, expect, it } from 'vitest';
import { createOriginApp } from '../../origin/app';
import { costModel, holdForwardPasses } from '../../origin/cost-model';
import { ForwardQueue, type BatchRunner } from '../../origin/queue';
import { TargetModel } from '../../origin/target';
import type { ForwardResult, KvCache, LoadedModel } from '../../shared/model';
import type { GenerateEvent, VerifyResponse } from '../../shared/protocol';
import { argmax } from '../../shared/sampling';
import { parseExposition, sampleValue } from '../metrics/prometheus-text';
import { loadNodeModel, TARGET_DIR } from '../support/models';

/**
 * Continuous batching at the reference origin (origin/queue.ts, origin/batcher.ts,
 * CausalLM.forwardBatch), on the shipped target model in onnxruntime-node.
 */
let model: LoadedModel;
const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const tokensOf = (seed: number, n: number) => Array.from({ length: n }, (_, i) => (seed * 131 + i * 17 + ((i * i) % 7)) % 4000 + 5);

beforeAll(async () => {
  model = await loadNodeModel(TARGET_DIR);
});

async function prefill(tokens: number[]): Promise<KvCache> {
  return tokens.length ? (await model.lm.forward(tokens, model.lm.emptyCache())).cache : model.lm.emptyCache();
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function expectSameResult(batched: ForwardResult, alone: ForwardResult) {
  const v = model.config.vocabSize;
  expect(batched.rows).toBe(alone.rows);
  expect(batched.cache.length).toBe(alone.cache.length);
  for (let r = 0; r < alone.rows; r++) {
    expect(argmax(batched.logits.subarray(r * v, (r + 1) * v))).toBe(argmax(alone.logits.subarray(r * v, (r + 1) * v)));
  }
  // fp32: the batched GEMMs and the padded attention may sum in another order.
  expect(maxAbsDiff(batched.logits, alone.logits)).toBeLessThan(1e-3);
  for (let layer = 0; layer < model.config.numLayers; layer++) {
    expect(maxAbsDiff(batched.cache.keys[layer], alone.cache.keys[layer])).toBeLessThan(1e-3);
    expect(maxAbsDiff(batched.cache.values[layer], alone.cache.values[layer])).toBeLessThan(1e-3);
  }
}

/** Target-only greedy continuation, one token per pass, no origin and no batching. */
async function greedyReference(prefix: number[], n: number): Promise<number[]> {
  const out: number[] = [];
  let cache = model.lm.emptyCache();
  let pending = prefix;
  const v = model.config.vocabSize;
  for (let i = 0; i < n; i++) {
    const r = await model.lm.forward(pending, cache);
    cache = r.cache;
    out.push(argmax(r.logits.subarray((r.rows - 1) * v, r.rows * v)));
    pending = [out[i]];
  }
  return out;
}

describe('CausalLM.forwardBatch', () => {
  it('gives every row the logits and KV of a batch-1 forward: different past and new lengths, an empty past, rows sharing one cache', async () => {
    const shared = await prefill(tokensOf(1, 37));
    const rows = [
      { tokens: tokensOf(2, 5), cache: await prefill(tokensOf(3, 12)) },
      { tokens: tokensOf(4, 1), cache: shared },
      { tokens: tokensOf(5, 9), cache: model.lm.emptyCache() },
      { tokens: tokensOf(6, 3), cache: shared },
      { tokens: tokensOf(7, 2), cache: await prefill(tokensOf(8, 60)) },
      { tokens: tokensOf(9, 5), cache: shared },
    ];
    const batched = await model.lm.forwardBatch(rows);
    expect(batched).toHaveLength(rows.length);
    for (const [r, row] of rows.entries()) expectSameResult(batched[r], await model.lm.forward(row.tokens, row.cache));
    // The shared cache was read, not changed.
    expect(shared.length).toBe(37);
  });

  it('all rows with an empty past, and the rows continue exactly from their batched KV', async () => {
    const rows = [tokensOf(10, 4), tokensOf(11, 11), tokensOf(12, 7)].map((tokens) => ({ tokens, cache: model.lm.emptyCache() }));
    const first = await model.lm.forwardBatch(rows);
    for (const [r, row] of rows.entries()) expectSameResult(first[r], await model.lm.forward(row.tokens, row.cache));
    // A second batched step over the batched caches (different pasts now) against batch 1 over batch-1 caches.
    const next = await model.lm.forwardBatch(first.map((res, r) => ({ tokens: [r + 3, r + 9], cache: res.cache })));
    for (const [r, row] of rows.entries()) {
      const alone = await model.lm.forward([r + 3, r + 9], (await model.lm.forward(row.tokens, row.cache)).cache);
      expectSameResult(next[r], alone);
    }
  });
});

describe('ForwardQueue batching', () => {
  const echo = (): BatchRunner<number, number> & { batches: number[][] } => {
    const batches: number[][] = [];
    return { batches, run: async (rows) => (batches.push([...rows]), rows.map((x) => x * 10)) };
  };

  it('runs the rows waiting together as one pass, up to maxBatch, in arrival order; drops an aborted waiting row; maxBatch 1 stays one per pass', async () => {
    const queue = new ForwardQueue(1, 64, 3);
    const runner = echo();
    let release!: () => void;
    const held = queue.run(() => new Promise<void>((r) => (release = r)));
    const left = new AbortController();
    const rows = [1, 2, 3, 4, 5].map((x) => queue.runBatched(runner, x, x === 2 ? left.signal : undefined));
    left.abort('client closed');
    await expect(rows[1]).rejects.toMatchObject({ name: 'AbortError' });
    release();
    await held;
    const outcomes = await Promise.all([rows[0], rows[2], rows[3], rows[4]]);
    expect(outcomes.map((o) => o.value)).toEqual([10, 30, 40, 50]);
    expect(runner.batches).toEqual([[1, 3, 4], [5]]);
    expect(outcomes.map((o) => o.batchSize)).toEqual([3, 3, 3, 1]);
    expect(queue.stats()).toMatchObject({ running: 0, waiting: 0, dropped: 1, batches: 2, mean_batch: 2, max_batch: 3 });

    const fifo = new ForwardQueue(1, 64, 1);
    const one = echo();
    let open!: () => void;
    const gate = fifo.run(() => new Promise<void>((r) => (open = r)));
    const all = [1, 2, 3].map((x) => fifo.runBatched(one, x));
    open();
    await gate;
    await Promise.all(all);
    expect(one.batches).toEqual([[1], [2], [3]]);
  });

  it('a failing row fails alone: its batch-mates are rerun one by one and answered', async () => {
    const queue = new ForwardQueue(1, 64, 8);
    const runner: BatchRunner<number, number> = { run: async (rows) => rows.map((x) => (x < 0 ? (() => { throw new Error(`bad row ${x}`); })() : x)) };
    let release!: () => void;
    const held = queue.run(() => new Promise<void>((r) => (release = r)));
    const rows = [1, -2, 3].map((x) => queue.runBatched(runner, x));
    release();
    await held;
    const [a, b, c] = await Promise.allSettled(rows);
    expect(a).toMatchObject({ status: 'fulfilled', value: { value: 1 } });
    expect(b).toMatchObject({ status: 'rejected', reason: { message: 'bad row -2' } });
    expect(c).toMatchObject({ status: 'fulfilled', value: { value: 3 } });
  });

  it('with a batch wait, a free model waits for as many rows as its recent passes carried, and goes as soon as they are there', async () => {
    const queue = new ForwardQueue(1, 64, 8, 200);
    const runner = echo();
    let release!: () => void;
    const held = queue.run(() => new Promise<void>((r) => (release = r)));
    const firstPass = [1, 2, 3].map((x) => queue.runBatched(runner, x));
    release();
    await held;
    await Promise.all(firstPass);
    // The model is free: one row arrives, the others 20 ms later; all three share one pass, well before the 200 ms limit.
    const started = performance.now();
    const alone = queue.runBatched(runner, 4);
    await new Promise((r) => setTimeout(r, 20));
    const rest = [5, 6].map((x) => queue.runBatched(runner, x));
    await Promise.all([alone, ...rest]);
    expect(runner.batches).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(performance.now() - started).toBeLessThan(150);
    // Nobody else comes: the row goes alone after the wait.
    const late = performance.now();
    await queue.runBatched(runner, 7);
    expect(performance.now() - late).toBeGreaterThanOrEqual(190);
    expect(runner.batches.at(-1)).toEqual([7]);
  });

  it('refuses past maxWaiting with 503 + Retry-After', async () => {
    const queue = new ForwardQueue(1, 2, 8);
    let release!: () => void;
    const held = queue.run(() => new Promise<void>((r) => (release = r)));
    const runner = echo();
    const rows = [queue.runBatched(runner, 1), queue.runBatched(runner, 2)];
    expect(() => queue.runBatched(runner, 3)).toThrow(expect.objectContaining({ status: 503, headers: { 'retry-after': '1' } }));
    release();
    await held;
    await Promise.all(rows);
    expect(runner.batches).toEqual([[1, 2]]);
  });
});

describe('greedy identity under batching (origin app, max batch 8)', () => {
  it('concurrent generate streams and verify loops give exactly sequential target-only greedy tokens, and passes were batched', async () => {
    const queue = new ForwardQueue(1, 256, 8);
    const app = createOriginApp({ id: 'batching-origin', modelName: 'edgespec-target', target: new TargetModel(model.lm), queue });
    const post = (path: string, body: unknown) => app.request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const N = 12;
    const prompts = Array.from({ length: 8 }, (_, i) => tokensOf(20 + i, 6 + 5 * i));
    const expected = await Promise.all(prompts.map((p) => greedyReference(p, N)));

    const generate = async (prompt: number[]) => {
      const response = await post('/v1/generate', { context: prompt, max_tokens: N, sampling: greedy });
      expect(response.status).toBe(200);
      const events = (await response.text()).trim().split('\n').map((line) => JSON.parse(line) as GenerateEvent);
      return events.flatMap((e) => (e.type === 'token' ? [e.token] : []));
    };
    // An edge in lockstep with a draft that is right except every third token: rounds accept, reject, and continue.
    const verifyLoop = async (prompt: number[], reference: number[]) => {
      const out: number[] = [];
      while (out.length < N) {
        const truth = reference.slice(out.length, out.length + 3);
        const draft = truth.map((t, i) => ({ token: i === 2 ? (t + 1) % model.config.vocabSize : t }));
        const response = await post('/v1/verify', { context: [...prompt, ...out], draft, sampling: greedy });
        expect(response.status).toBe(200);
        out.push(...((await response.json()) as VerifyResponse).tokens);
      }
      return out.slice(0, N);
    };
    const got = await Promise.all(prompts.map((p, i) => (i % 2 === 0 ? generate(p) : verifyLoop(p, expected[i]))));
    for (const [i, tokens] of got.entries()) expect(tokens, `stream ${i}`).toEqual(expected[i]);

    const metrics = parseExposition(await (await app.request('/metrics')).text());
    const passes = sampleValue(metrics, 'edgespec_origin_batch_size_count')!;
    const rows = sampleValue(metrics, 'edgespec_origin_batch_size_sum')!;
    // Batched for real: fewer passes than rows, and some passes carried more than 2 sequences.
    expect(rows / passes).toBeGreaterThan(1.5);
    expect(passes - sampleValue(metrics, 'edgespec_origin_batch_size_bucket', { le: '2' })!).toBeGreaterThan(0);
    expect(queue.stats().mean_batch).toBeGreaterThan(1.5);
  });
});

describe('GPU cost model: batched passes', () => {
  const h100 = costModel('h100-llama-3.1-8b');

  it('charges a batched pass by its total tokens: weights once, KV per row, compute past the ridge', () => {
    // Batch 1 is the single-pass roofline, unchanged.
    expect(h100.batchForwardMs([{ newTokens: 5, contextTokens: 300 }])).toBe(h100.forwardMs(5, 300));
    const kvPerToken = h100.forwardMs(1, 1) - h100.forwardMs(1, 0);
    const weightMs = h100.forwardMs(1, 0) - kvPerToken;
    // 16 rows of 5 tokens after 300: memory-bound, one weight read plus every row's own KV.
    const rows = Array.from({ length: 16 }, () => ({ newTokens: 5, contextTokens: 300 }));
    const batched = h100.batchForwardMs(rows);
    expect(batched).toBeCloseTo(weightMs + 16 * 305 * kvPerToken, 6);
    expect(batched).toBeLessThan(2 * h100.forwardMs(5, 300));
    expect(batched).toBeGreaterThan(h100.forwardMs(5, 300));
    // 64 rows of 5 = 320 tokens: past the ridge (~184), compute-bound, linear in the tokens.
    const big = h100.batchForwardMs(Array.from({ length: 64 }, () => ({ newTokens: 5, contextTokens: 0 })));
    const bigger = h100.batchForwardMs(Array.from({ length: 64 }, () => ({ newTokens: 10, contextTokens: 0 })));
    expect(big - 320 * kvPerToken).toBeGreaterThan(weightMs * 1.5);
    expect(bigger - 640 * kvPerToken).toBeCloseTo(2 * (big - 320 * kvPerToken), 6);
  });

  it('holds a batched target pass once, to the duration of its rows', async () => {
    const target = new TargetModel(model.lm);
    const held = holdForwardPasses(target, h100);
    const rows = [
      { tokens: tokensOf(30, 20), firstRow: 19 },
      { tokens: tokensOf(31, 9), firstRow: 8 },
    ];
    const started = performance.now();
    const results = await target.logitsFromBatch(rows);
    const modelled = h100.batchForwardMs(rows.map((row) => ({ newTokens: row.tokens.length, contextTokens: 0 })));
    expect(held).toMatchObject({ passes: 1, rows: 2 });
    expect(held.modelledMs).toBeCloseTo(modelled, 9);
    expect(performance.now() - started).toBeGreaterThanOrEqual(modelled - 1);
    expect(results.map((r) => r.rows)).toEqual([1, 1]);
  });
});
