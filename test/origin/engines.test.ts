import { readFileSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { EngineOriginClient, type EngineScorer } from '../../functions/upstream/engines/scored';
import { SglangScorer } from '../../functions/upstream/engines/sglang';
import { VllmScorer } from '../../functions/upstream/engines/vllm';
import { generateTokens } from '../../origin/generate';
import { TargetModel } from '../../origin/target';
import { verifyDraft } from '../../origin/verify';
import type { LoadedModel } from '../../shared/model';
import type { GenerateEvent, GenerateRequest, VerifyRequest } from '../../shared/protocol';
import { argmax, processLogits, roundRng, verifyTokenLevel } from '../../shared/sampling';
import { loadNodeModel, TARGET_DIR } from '../support/models';

/**
 * Contract tests of the SGLang and vLLM adapters: against request/response
 * fixtures written from the engines' documented formats (test/fixtures/engines),
 * and against in-process engines that answer in those formats from the real
 * target model, where every verdict must equal the reference origin's.
 */
const fixture = (name: string) => JSON.parse(readFileSync(`test/fixtures/engines/${name}.json`, 'utf8'));

interface Captured {
  url: string;
  body: any;
}

function stubFetch(answer: (url: string, body: any) => unknown): Captured[] {
  const captured: Captured[] = [];
  vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
    const body = init.body ? JSON.parse(String(init.body)) : null;
    captured.push({ url: String(url), body });
    return new Response(JSON.stringify(answer(String(url), body)), { status: 200, headers: { 'content-type': 'application/json' } });
  });
  return captured;
}
afterEach(() => vi.unstubAllGlobals());

const options = (id: string, vocabSize: number, maxPositions = 1024, topLogprobs = 20) => ({ id, baseUrl: `http://${id}.test`, timeoutMs: 5000, vocabSize, maxPositions, topLogprobs });
const sglang = (id: string, vocab: number, topLogprobs = 20) => new EngineOriginClient(new SglangScorer({ id, baseUrl: `http://${id}.test`, timeoutMs: 5000 }), options(id, vocab, 1024, topLogprobs));
const vllm = (id: string, vocab: number, topLogprobs = 20) =>
  new EngineOriginClient(new VllmScorer({ id, baseUrl: `http://${id}.test`, timeoutMs: 5000, model: 'edgespec-target' }), options(id, vocab, 1024, topLogprobs));

describe('engine adapters against documented-format fixtures', () => {
  for (const [name, make, path] of [
    ['sglang-verify-greedy', () => sglang('sgl', 100), '/generate'],
    ['sglang-verify-bonus', () => sglang('sgl', 100), '/generate'],
    ['vllm-verify-greedy', () => vllm('vl', 100), '/v1/completions'],
  ] as const) {
    it(`${name}: sends the documented request and reads the verdict`, async () => {
      const f = fixture(name);
      const captured = stubFetch(() => f.response);
      const verdict = await make().verify(f.verify as VerifyRequest);
      expect(captured).toHaveLength(1);
      expect(new URL(captured[0].url).pathname).toBe(path);
      expect(captured[0].body).toEqual(f.request);
      expect(verdict).toMatchObject(f.expected);
    });
  }

  it('vllm-verify-topk: rebuilds the top-k distributions exactly and verifies with the seeded draws', async () => {
    const f = fixture('vllm-verify-topk');
    const captured = stubFetch(() => f.response);
    const request = f.verify as VerifyRequest;
    const verdict = await vllm('vl', 100).verify(request);
    expect(captured[0].body).toEqual(f.request);
    const p = (f.expected_distributions as Array<Array<[number, number]>>).map((row) => {
      const logits = new Float64Array(100).fill(-Infinity);
      for (const [token, lp] of row) logits[token] = lp;
      return processLogits(logits, request.sampling);
    });
    const expected = verifyTokenLevel(request.draft, p, roundRng(request.sampling.seed, request.sampling.offset), request.sampling.offset);
    expect(verdict).toMatchObject({ accepted: expected.acceptedCount, tokens: expected.tokens });
  });

  it('refuses sampling its top-N cannot make exact (400, no engine call), and names a malformed answer (502)', async () => {
    const captured = stubFetch(() => ({ meta_info: { input_top_logprobs: [null] } }));
    const sampled = { context: [1, 2], draft: [{ token: 3, q: [[3, 1]] as [number, number][] }], sampling: { temperature: 0.8, top_p: 0.95, top_k: 0, seed: 1, offset: 0 }, method: 'token' as const };
    await expect(sglang('sgl', 100).verify(sampled)).rejects.toMatchObject({ status: 400, code: 'sampling_unsupported_by_origin', message: expect.stringMatching(/top-20 log-probabilities/) });
    await expect(vllm('vl', 100, 5).verify({ ...sampled, sampling: { ...sampled.sampling, top_k: 6 } })).rejects.toMatchObject({ status: 400 });
    expect(captured).toHaveLength(0);
    const greedy = { ...sampled, draft: [{ token: 3 }], sampling: { ...sampled.sampling, temperature: 0 } };
    await expect(sglang('sgl', 100).verify(greedy)).rejects.toMatchObject({ status: 502, code: 'origin_error', message: expect.stringMatching(/unexpected format: meta_info.input_top_logprobs must have k \+ 1 = 2 entries/) });
  });
});

/** In-process engines answering in the documented formats from the real target model: full log-softmax, top N. */
function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const out = new Float64Array(logits.length);
  const logZ = max + Math.log(sum);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - logZ;
  return out;
}
function topN(row: Float64Array, n: number): Array<[number, number]> {
  return [...row.keys()].sort((a, b) => row[b] - row[a] || a - b).slice(0, n).map((t) => [t, row[t]]);
}

describe('engine adapters are exact against engines backed by the real target', () => {
  let model: LoadedModel;
  let reference: TargetModel;
  let rowsOf: (ids: number[]) => Promise<Float64Array[]>;
  beforeAll(async () => {
    model = await loadNodeModel(TARGET_DIR);
    reference = new TargetModel(model.lm);
    const vocab = model.config.vocabSize;
    rowsOf = async (ids) => {
      const result = await model.lm.forward(ids, model.lm.emptyCache());
      return Array.from({ length: result.rows }, (_, r) => logSoftmax(result.logits.subarray(r * vocab, (r + 1) * vocab)));
    };
  });

  /** Fake engines: SGLang /generate and vLLM /v1/completions over the model, answers computed synchronously before the fetch resolves. */
  function stubEngines() {
    let pending: Promise<unknown> = Promise.resolve();
    vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
      const body = JSON.parse(String(init.body));
      const path = new URL(url).pathname;
      pending = (async () => {
        if (path === '/generate') {
          const ids: number[] = body.input_ids;
          const rows = await rowsOf(ids);
          const s = body.logprob_start_len;
          const n = body.top_logprobs_num;
          const triples = (row: Float64Array) => topN(row, n).map(([t, lp]) => [lp, t, null]);
          const last = rows[ids.length - 1];
          const out = argmax(last);
          return {
            text: '',
            meta_info: {
              cached_tokens: 0,
              input_token_logprobs: ids.slice(s).map((t, j) => [j === 0 ? null : rows[s + j - 1][t], t, null]),
              input_top_logprobs: ids.slice(s).map((_, j) => (j === 0 ? null : triples(rows[s + j - 1]))),
              output_token_logprobs: [[last[out], out, null]],
              output_top_logprobs: [triples(last)],
            },
          };
        }
        const ids: number[] = body.prompt;
        const rows = await rowsOf(ids);
        const n = body.prompt_logprobs;
        const promptLogprobs = ids.map((t, i) => {
          if (i === 0) return null;
          const row = rows[i - 1];
          const entries = Object.fromEntries(topN(row, n).map(([tok, lp], r) => [String(tok), { logprob: lp, rank: r + 1, decoded_token: '' }]));
          entries[String(t)] ??= { logprob: row[t], rank: 1 + [...row].filter((v) => v > row[t]).length, decoded_token: '' };
          return entries;
        });
        const last = rows[ids.length - 1];
        const out = argmax(last);
        const top = Object.fromEntries(topN(last, body.logprobs).map(([t, lp]) => [`token_id:${t}`, lp]));
        return { choices: [{ index: 0, text: '', prompt_logprobs: promptLogprobs, logprobs: { tokens: [`token_id:${out}`], token_logprobs: [last[out]], top_logprobs: [top], text_offset: [0] } }], usage: {} };
      })();
      return new Response(JSON.stringify(await pending), { status: 200 });
    });
  }

  const context = [101, 202, 303, 404, 505, 606, 707, 808];
  async function referenceContinuation(n: number) {
    const events: number[] = [];
    for await (const e of generateTokens(reference, { context, max_tokens: n, sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 }, stop_token_ids: [] })) {
      if (e.type === 'token') events.push(e.token);
    }
    return events;
  }

  for (const kind of ['sglang', 'vllm'] as const) {
    it(`${kind}: greedy and top-k sampled verdicts equal the reference origin's, and generate matches too`, async () => {
      stubEngines();
      const vocab = model.config.vocabSize;
      const client = kind === 'sglang' ? sglang('e', vocab) : vllm('e', vocab);
      const truth = await referenceContinuation(6);
      const drafts = [truth.slice(0, 5), [...truth.slice(0, 2), (truth[2] + 1) % vocab, 9, 9], [], [(truth[0] + 3) % vocab]];
      for (const draft of drafts) {
        const request: VerifyRequest = { context, draft: draft.map((token) => ({ token })), sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 3 }, method: 'token' };
        const expected = await verifyDraft(reference, request);
        const got = await client.verify(request);
        expect({ accepted: got.accepted, tokens: got.tokens }).toEqual({ accepted: expected.accepted, tokens: expected.tokens });
      }
      for (const method of ['token', 'block'] as const) {
        for (let seed = 0; seed < 6; seed++) {
          const draft = truth.slice(0, 4).map((token) => ({ token, q: [[token, 0.7], [(token + 1) % vocab, 0.3]] as [number, number][] }));
          const request: VerifyRequest = { context, draft, sampling: { temperature: 0.9, top_p: 0.9, top_k: 8, seed, offset: 5 }, method };
          const expected = await verifyDraft(reference, request);
          const got = await client.verify(request);
          expect({ accepted: got.accepted, tokens: got.tokens }, `${method} seed ${seed}`).toEqual({ accepted: expected.accepted, tokens: expected.tokens });
        }
      }
      const generate: GenerateRequest = { context, max_tokens: 6, sampling: { temperature: 0.8, top_p: 1, top_k: 5, seed: 42, offset: 2 }, stop_token_ids: [] };
      const tokensOf = async (events: AsyncGenerator<GenerateEvent>) => {
        const out: number[] = [];
        for await (const e of events) if (e.type === 'token') out.push(e.token);
        return out;
      };
      expect(await tokensOf(client.generate(generate))).toEqual(await tokensOf(generateTokens(reference, generate)));
    });
  }
});
