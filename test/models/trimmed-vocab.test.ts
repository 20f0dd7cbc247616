import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ortWeb from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { DraftModelProposer } from '../../functions/proposers/draft-model';
import { keptIds, trimmedFiles, trimOnnx } from '../../models/pipeline/trim-vocab';
import { loadModel, logitsRow, parseTrimmedVocab, type CausalLM, type OrtRuntime } from '../../shared/model';
import { folderFiles } from '../../shared/model/node-files';
import { assertSparseDistribution } from '../../shared/sampling';
import { greedy, loadHarness, plan, run, type Harness } from '../speculation/harness';
import { DRAFT_DIR, loadFolderTokenizer, nodeOrt } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * A trimmed-vocabulary draft (models/pipeline/trim-vocab.ts): the LM head
 * sliced to N kept ids, trimmed_vocab.json mapping columns back to full ids.
 * Built here in memory from the shipped draft, with ids chosen to miss many of
 * the target's tokens (a band with every fifth id missing, plus every third id), so greedy identity is
 * exercised through many rejections.
 */
const ONNX = 'onnx/model_quantized.onnx';
let full: CausalLM;
let trimmed: CausalLM;
let ids: Int32Array;
let h: Harness;
let prompts: number[][];

beforeAll(async () => {
  const config = JSON.parse(await readFile(join(DRAFT_DIR, 'config.json'), 'utf8'));
  const vocab: number = config.vocab_size;
  // A "mass" favouring ids below 1200 except every fifth (so column j is not token j past id 3) and every third id.
  const mass = Float64Array.from({ length: vocab }, (_, i) => (i < 1200 && i % 5 !== 3 ? 2 : i % 3 === 0 ? 1 : 0) + 1 / (i + 1));
  ids = keptIds(mass, 1536, [0]);
  const onnx = trimOnnx(new Uint8Array(await readFile(join(DRAFT_DIR, ONNX))), vocab, ids);
  const files = trimmedFiles(DRAFT_DIR, onnx, { token_ids: [...ids] });
  [full, trimmed, h] = await Promise.all([
    loadModel(nodeOrt, folderFiles(DRAFT_DIR), 'quantized', { intraOpNumThreads: 1 }).then((m) => m.lm),
    loadModel(nodeOrt, files, 'quantized', { intraOpNumThreads: 1 }).then((m) => m.lm),
    loadHarness(),
  ]);
  const tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  prompts = heldOutPrompts(3, 300).map((p) => tokenizer.encode(p));
});

describe('a trimmed-vocabulary draft', () => {
  it('keeps BOS/EOS, ascending ids, and has logits of the kept width', () => {
    expect(ids.length).toBe(1536);
    expect(ids[0]).toBe(0);
    for (let j = 1; j < ids.length; j++) expect(ids[j]).toBeGreaterThan(ids[j - 1]);
    expect(trimmed.logitsWidth).toBe(1536);
    expect(full.logitsWidth).toBe(full.config.vocabSize);
    expect(full.tokenIds).toBeNull();
  });

  it("gives the full draft's logits at the kept ids (onnxruntime-node and -web)", async () => {
    const web = (await loadModel(ortWeb as unknown as OrtRuntime, trimmedFiles(DRAFT_DIR, trimOnnx(new Uint8Array(await readFile(join(DRAFT_DIR, ONNX))), full.config.vocabSize, ids), { token_ids: [...ids] }), 'quantized')).lm;
    for (const prompt of prompts) {
      const a = await full.forward(prompt, full.emptyCache());
      const b = await trimmed.forward(prompt, trimmed.emptyCache());
      const c = await web.forward(prompt, web.emptyCache());
      expect(b.rows).toBe(a.rows);
      let worst = 0;
      let worstWeb = 0;
      for (let r = 0; r < a.rows; r += 7) {
        const fa = logitsRow(a, r, full.logitsWidth);
        const fb = logitsRow(b, r, trimmed.logitsWidth);
        const fc = logitsRow(c, r, web.logitsWidth);
        for (let j = 0; j < ids.length; j++) {
          worst = Math.max(worst, Math.abs(fb[j] - fa[ids[j]]));
          worstWeb = Math.max(worstWeb, Math.abs(fc[j] - fa[ids[j]]));
        }
      }
      // The same int8 kernels on the same quantized activations: equal up to float summation order.
      expect(worst).toBeLessThan(1e-4);
      // onnxruntime-web's int8 kernels differ from native ones by the quantization noise (test/models/web.test.ts).
      expect(worstWeb).toBeLessThan(0.5);
      // KV is untouched by the trim.
      expect(b.cache.keys[0]).toEqual(a.cache.keys[0]);
    }
  });

  it('loads only a valid trimmed_vocab.json', () => {
    expect([...parseTrimmedVocab({ vocab_size: 8, token_ids: [0, 3, 7] }, 8)]).toEqual([0, 3, 7]);
    expect(() => parseTrimmedVocab({ token_ids: [0, 3, 3] }, 8)).toThrow(/strictly ascending/);
    expect(() => parseTrimmedVocab({ token_ids: [3, 0] }, 8)).toThrow(/strictly ascending/);
    expect(() => parseTrimmedVocab({ token_ids: [0, 8] }, 8)).toThrow(/below vocab_size 8/);
    expect(() => parseTrimmedVocab({ vocab_size: 16, token_ids: [0] }, 8)).toThrow(/made for vocab_size 16/);
    expect(() => parseTrimmedVocab({ kept: 3 }, 8)).toThrow(/no "token_ids"/);
  });

  it('refuses to be read as a full-width model (a trimmed draft is never a target)', async () => {
    const b = await trimmed.forward([1, 2, 3], trimmed.emptyCache());
    expect(() => logitsRow(b, 0, trimmed.config.vocabSize)).toThrow(/trimmed-vocabulary/);
  });

  it('drafts full token ids among the kept ones, greedy and sampled, with q over kept ids summing to 1', async () => {
    const kept = new Set(ids);
    for (const [p, prompt] of prompts.entries()) {
      const proposer = new DraftModelProposer(trimmed, 32);
      const greedyDraft = await proposer.propose(prompt, 6, { ...greedy, offset: 0 });
      expect(greedyDraft.length).toBe(6);
      for (const d of greedyDraft) expect(kept.has(d.token)).toBe(true);
      // The greedy proposal is the argmax of the full draft restricted to the kept ids.
      const a = await full.forward(prompt, full.emptyCache());
      const row = logitsRow(a, a.rows - 1, full.logitsWidth);
      let best = ids[0];
      for (const id of ids) if (row[id] > row[best]) best = id;
      expect(greedyDraft[0].token).toBe(best);
      const sampled = await new DraftModelProposer(trimmed, 32).propose(prompt, 6, { temperature: 0.9, top_p: 0.95, top_k: 0, seed: 7 + p, offset: 0 }, { confidence: true });
      expect(sampled.length).toBe(6);
      for (const d of sampled) {
        expect(kept.has(d.token)).toBe(true);
        assertSparseDistribution(d.q!, full.config.vocabSize);
        for (const [id] of d.q!) expect(kept.has(id)).toBe(true);
        expect(d.q!.some(([id, prob]) => id === d.token && prob > 0)).toBe(true);
      }
    }
  });

  it('greedy speculation with it against the real target gives exactly the target-only greedy tokens', async () => {
    let accepted = 0;
    let drafted = 0;
    for (const prompt of [...prompts, [11, 400, 93, 1200, 7, 88, 512]]) {
      const reference = (await run(h, prompt, 40, greedy, plan('origin', { draftLength: 0 }))).tokens;
      for (const mode of ['lockstep', 'pipelined'] as const) {
        const speculative = await run(h, prompt, 40, greedy, plan(mode, { draftLength: 4, depth: 2 }), { proposer: () => new DraftModelProposer(trimmed, 32) });
        expect(speculative.tokens, `${mode}, prompt ${prompt.slice(0, 6)}`).toEqual(reference);
        drafted += speculative.stats.drafted;
        accepted += speculative.stats.accepted;
      }
    }
    // It did draft, and the target accepted some and rejected some: both paths of verification ran.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(drafted);
  });
});

describe('the shipped trimmed draft (models/edgespec-draft-trimmed)', () => {
  const DIR = 'models/edgespec-draft-trimmed';

  it('matches its SHA256SUMS, and its ONNX file is trimOnnx of edgespec-draft with its ids, byte for byte', async () => {
    const sums = (await readFile(join(DIR, 'SHA256SUMS'), 'utf8')).trim().split('\n');
    expect(sums.length).toBeGreaterThanOrEqual(7);
    for (const line of sums) {
      const [hash, path] = line.split(/ {2}/);
      expect(createHash('sha256').update(await readFile(join(DIR, path))).digest('hex'), path).toBe(hash);
    }
    const shipped = JSON.parse(await readFile(join(DIR, 'trimmed_vocab.json'), 'utf8')) as { vocab_size: number; kept: number; token_ids: number[] };
    expect(shipped.token_ids.length).toBe(shipped.kept);
    const rebuilt = trimOnnx(new Uint8Array(await readFile(join(DRAFT_DIR, ONNX))), shipped.vocab_size, Int32Array.from(shipped.token_ids));
    expect(Buffer.compare(Buffer.from(rebuilt), await readFile(join(DIR, ONNX)))).toBe(0);
  });

  it("loads with its trimmed_vocab.json and gives the full draft's logits at the kept ids", async () => {
    const { lm } = await loadModel(nodeOrt, folderFiles(DIR), 'quantized', { intraOpNumThreads: 1 });
    expect(lm.config.vocabSize).toBe(full.config.vocabSize);
    expect(lm.logitsWidth).toBe(1024);
    const kept = lm.tokenIds!;
    const a = await full.forward(prompts[0], full.emptyCache());
    const b = await lm.forward(prompts[0], lm.emptyCache());
    let worst = 0;
    for (let r = 0; r < a.rows; r += 5) {
      const fa = logitsRow(a, r, full.logitsWidth);
      const fb = logitsRow(b, r, lm.logitsWidth);
      for (let j = 0; j < kept.length; j++) worst = Math.max(worst, Math.abs(fb[j] - fa[kept[j]]));
    }
    expect(worst).toBeLessThan(1e-4);
  });
});

