/**
 * Vocabulary trimming of the draft's LM head ("Balancing Coverage and Draft
 * Latency in Vocabulary Trimming"): keep the N token ids that hold most of the
 * target's probability mass, slice the int8 LM head to those N columns, and
 * write a model folder whose `trimmed_vocab.json` lists the kept full ids
 * (ascending). The runtime maps logit column j back to token_ids[j]
 * (shared/model/load.ts); q is over kept ids only. Lossless because the
 * target still verifies every drafted token (ARCHITECTURE.md: Speculative
 * decoding, exactly).
 *
 *   npm run models:trim-vocab -- --keep 1024 [--out models/edgespec-draft-trimmed]
 *   npm run models:trim-vocab -- --curve 512,1024,2048,4096     (measure only, writes nothing)
 *
 * Coverage source: the target's temperature-1 distribution summed over every
 * position of real held-out text fed in (teacher forcing), on the benchmark
 * prompts (prompt + real continuation, `reference`) from row COVERAGE_FIRST_ROW on. Rows
 * before it are the evaluation prompts of the curve (and of
 * test/support/prompts.ts), never used to choose ids. The target's mass, not
 * token counts: each position votes for every token the target finds likely,
 * which is what the draft must be able to propose (the paper's "target
 * outputs" criterion without sampling noise).
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ortWeb from 'onnxruntime-web';
import { DraftModelProposer } from '../../functions/proposers/draft-model';
import { loadModel, parseDecoderConfig, type CausalLM, TRIMMED_VOCAB_FILE, type LoadedModel, type ModelFiles, type OrtRuntime } from '../../shared/model';
import { folderFiles } from '../../shared/model/node-files';
import { argmax, processLogits, sparseFromLogits } from '../../shared/sampling';
import { loadTokenizer, type TextTokenizer } from '../../shared/tokenizer';
import { nodeOrt } from '../../test/support/models';
import { decodeMessage, encodeMessage, bytesField, DATA_TYPE, firstString, GRAPH, NODE, readInitializer, strings, valueInfoShape, writeInitializer, writeValueInfo, type Message } from './onnx_proto';

const ONNX_FILE = 'onnx/model_quantized.onnx';
/** bench_prompts.jsonl rows [0, COVERAGE_FIRST_ROW) are evaluation prompts; the rest choose the kept ids. */
export const COVERAGE_FIRST_ROW = 16;
const WINDOW = 512;

interface BenchRow {
  prompt: string;
  /** The real continuation. */
  reference?: string;
}

async function readRows(): Promise<BenchRow[]> {
  const text = await readFile('models/corpus/bench_prompts.jsonl', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as BenchRow);
}

/** Σ over positions of the target's softmax (T = 1), per token id, over `texts` fed in 512-token windows. */
export async function targetMass(target: LoadedModel, tokenizer: TextTokenizer, texts: string[]): Promise<{ mass: Float64Array; positions: number }> {
  const vocab = target.config.vocabSize;
  const mass = new Float64Array(vocab);
  let positions = 0;
  for (const text of texts) {
    const ids = await tokenizer.encode(text);
    for (let from = 0; from + 1 < ids.length; from += WINDOW) {
      const window = ids.slice(from, from + WINDOW);
      const result = await target.lm.forward(window, target.lm.emptyCache());
      for (let r = 0; r < result.rows; r++) {
        const row = result.logits.subarray(r * vocab, (r + 1) * vocab);
        let max = -Infinity;
        for (const v of row) if (v > max) max = v;
        let sum = 0;
        for (const v of row) sum += Math.exp(v - max);
        for (let i = 0; i < vocab; i++) mass[i] += Math.exp(row[i] - max) / sum;
        positions++;
      }
    }
  }
  return { mass, positions };
}

/** The `keep` ids of most mass (always including BOS/EOS), ascending. */
export function keptIds(mass: Float64Array, keep: number, always: readonly number[]): Int32Array {
  const order = Array.from(mass.keys()).sort((a, b) => mass[b] - mass[a] || a - b);
  const kept = new Set(always);
  for (const id of order) {
    if (kept.size >= keep) break;
    kept.add(id);
  }
  return Int32Array.from([...kept].sort((a, b) => a - b));
}

/**
 * The ONNX model with its LM head cut to `ids` (full ids, ascending): every
 * initializer feeding the logits whose vocabulary axis is its last (the int8
 * weight [hidden, vocab], per-column zero points and scales [vocab]) keeps
 * those columns, and the `logits` output's last dim becomes ids.length. Every
 * other byte is written back as read (models/pipeline/onnx_proto.ts). The
 * embedding (a Gather input) is untouched: input ids stay full ids.
 */
export function trimOnnx(bytes: Uint8Array, vocab: number, ids: Int32Array): Uint8Array {
  const model = decodeMessage(bytes);
  const graphIndex = model.findIndex((f) => f.field === 7);
  if (graphIndex < 0) throw new Error('ONNX model has no graph');
  const graph = decodeMessage(model[graphIndex].value as Uint8Array);
  const nodes = graph.filter((f) => f.field === GRAPH.node).map((f) => decodeMessage(f.value as Uint8Array));
  const producer = new Map<string, Message>();
  for (const node of nodes) for (const out of strings(node, NODE.output)) producer.set(out, node);
  // Initializers reachable backwards from `logits` through the LM head, stopping at the final norm's output (a
  // tensor not of vocabulary width): walk only through nodes on the path from the LM head matmul to the logits.
  const headInputs = new Set<string>();
  const initNames = new Set(graph.filter((f) => f.field === GRAPH.initializer).map((f) => firstString(decodeMessage(f.value as Uint8Array), 8) ?? ''));
  const visit = (tensor: string, depth: number) => {
    const node = producer.get(tensor);
    if (!node || depth > 6) return;
    // The matmul and the activation's quantizer border the transformer body (hidden-wide tensors): not crossed.
    const border = ['MatMulInteger', 'MatMul', 'Gemm', 'DynamicQuantizeLinear'].includes(firstString(node, NODE.opType) ?? '');
    for (const input of strings(node, NODE.input)) {
      if (initNames.has(input)) headInputs.add(input);
      else if (!border) visit(input, depth + 1);
    }
  };
  visit('logits', 0);
  let sliced = 0;
  const newGraph: Message = graph.map((f) => {
    if (f.field === GRAPH.initializer) {
      const init = readInitializer(decodeMessage(f.value as Uint8Array));
      if (!headInputs.has(init.name) || init.dims[init.dims.length - 1] !== vocab) return f;
      sliced++;
      return bytesField(GRAPH.initializer, encodeMessage(writeInitializer(sliceLastAxis(init, vocab, ids))));
    }
    if (f.field === GRAPH.output) {
      const info = valueInfoShape(decodeMessage(f.value as Uint8Array));
      if (info.name !== 'logits') return f;
      if (info.dims[info.dims.length - 1] !== vocab) throw new Error(`logits output has dims [${info.dims}], expected the last to be ${vocab}`);
      return bytesField(GRAPH.output, encodeMessage(writeValueInfo('logits', info.elemType, [...info.dims.slice(0, -1), ids.length])));
    }
    return f;
  });
  if (sliced === 0) throw new Error('found no LM head initializer of vocabulary width feeding the logits (a tied fp32 head reading the embedding is not supported)');
  return encodeMessage(model.map((f, i) => (i === graphIndex ? bytesField(7, encodeMessage(newGraph)) : f)));
}

function sliceLastAxis(init: ReturnType<typeof readInitializer>, vocab: number, ids: Int32Array) {
  const size = ({ [DATA_TYPE.float]: 4, [DATA_TYPE.int8]: 1, [DATA_TYPE.uint8]: 1, [DATA_TYPE.int32]: 4, [DATA_TYPE.int64]: 8 } as Record<number, number>)[init.dataType];
  if (!size) throw new Error(`initializer ${init.name}: data type ${init.dataType} not supported`);
  const rows = init.raw.length / size / vocab;
  const out = new Uint8Array(rows * ids.length * size);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < ids.length; j++) {
      const from = (r * vocab + ids[j]) * size;
      out.set(init.raw.subarray(from, from + size), (r * ids.length + j) * size);
    }
  }
  return { ...init, dims: [...init.dims.slice(0, -1), ids.length], raw: out };
}

/** A ModelFiles view of `dir` with the ONNX file and trimmed_vocab.json replaced (nothing written). */
export function trimmedFiles(dir: string, onnx: Uint8Array, trimmedVocab: unknown): ModelFiles {
  const base = folderFiles(dir);
  return {
    read: async (path) => (path === ONNX_FILE ? onnx : path === TRIMMED_VOCAB_FILE ? new TextEncoder().encode(JSON.stringify(trimmedVocab)) : base.read(path)),
  };
}

async function main() {
  const { values } = parseArgs({
    options: {
      draft: { type: 'string', default: 'models/edgespec-draft' },
      target: { type: 'string', default: 'models/edgespec-target' },
      keep: { type: 'string' },
      out: { type: 'string' },
      curve: { type: 'string' },
      prompts: { type: 'string', default: '16' },
      tokens: { type: 'string', default: '64' },
      repeats: { type: 'string', default: '7' },
    },
  });
  const rows = await readRows();
  const draftDir = values.draft!;
  const config = parseDecoderConfig(JSON.parse(await readFile(join(draftDir, 'config.json'), 'utf8')));
  const vocab = config.vocabSize;
  const tokenizer = await loadTokenizer(folderFiles(draftDir));
  const target = await loadModel(nodeOrt, folderFiles(values.target!), 'full', { intraOpNumThreads: 1 });
  const coverageTexts = rows.slice(COVERAGE_FIRST_ROW).map((r) => r.prompt + (r.reference ?? ''));
  const started = performance.now();
  const { mass, positions } = await targetMass(target, tokenizer, coverageTexts);
  console.log(`target mass over ${positions} positions of ${coverageTexts.length} held-out texts (rows ${COVERAGE_FIRST_ROW}+) in ${Math.round(performance.now() - started)} ms`);
  const always = [...config.eosTokenIds, ...(config.bosTokenId === null ? [] : [config.bosTokenId])];
  const onnxBytes = new Uint8Array(await readFile(join(draftDir, ONNX_FILE)));
  const record = (ids: Int32Array) => ({ vocab_size: vocab, kept: ids.length, source: `target (edgespec-target) temperature-1 mass over ${positions} teacher-forced positions of models/corpus/bench_prompts.jsonl rows ${COVERAGE_FIRST_ROW}+`, token_ids: [...ids] });

  if (values.curve) {
    if (Number(values.prompts) > COVERAGE_FIRST_ROW) throw new Error(`--prompts must be at most ${COVERAGE_FIRST_ROW}: later rows chose the kept ids`);
    const sizes = values.curve.split(',').map(Number);
    await curve({ draftDir, target, tokenizer, rows: rows.slice(0, Number(values.prompts)), sizes, mass, always, onnxBytes, vocab, record, tokens: Number(values.tokens), repeats: Number(values.repeats) });
    return;
  }
  const keep = Number(values.keep ?? 1024);
  const ids = keptIds(mass, keep, always);
  const out = values.out ?? `${draftDir}-trimmed`;
  await writeTrimmedFolder(draftDir, out, trimOnnx(onnxBytes, vocab, ids), record(ids));
  console.log(`wrote ${out}: ${ids.length} of ${vocab} ids kept (${TRIMMED_VOCAB_FILE}), LM head sliced, SHA256SUMS written; its MODEL_CARD.md is the draft's: add the trim's lines, then rewrite SHA256SUMS`);
}

/** Copy the draft folder to `out` with the trimmed ONNX, trimmed_vocab.json, and a config.json recording the trim; SHA256SUMS rewritten. */
export async function writeTrimmedFolder(from: string, out: string, onnx: Uint8Array, trimmedVocab: { kept: number; source: string }) {
  await mkdir(join(out, 'onnx'), { recursive: true });
  for (const name of await readdir(from)) {
    if (['onnx', 'SHA256SUMS', 'config.json'].includes(name)) continue;
    await copyFile(join(from, name), join(out, name));
  }
  const config = JSON.parse(await readFile(join(from, 'config.json'), 'utf8'));
  config.edgespec = { ...config.edgespec, trimmed_vocab: { kept: trimmedVocab.kept, source: trimmedVocab.source, file: TRIMMED_VOCAB_FILE } };
  await writeFile(join(out, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  await writeFile(join(out, ONNX_FILE), onnx);
  await writeFile(join(out, TRIMMED_VOCAB_FILE), JSON.stringify(trimmedVocab) + '\n');
  await writeSums(out);
}

export async function writeSums(dir: string) {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files = entries
    .filter((e) => e.isFile() && e.name !== 'SHA256SUMS')
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
  const lines = await Promise.all(files.map(async (f) => `${createHash('sha256').update(await readFile(join(dir, f))).digest('hex')}  ${f}\n`));
  await writeFile(join(dir, 'SHA256SUMS'), lines.join(''));
}

interface CurveInput {
  draftDir: string;
  target: LoadedModel;
  tokenizer: TextTokenizer;
  rows: BenchRow[];
  sizes: number[];
  mass: Float64Array;
  always: number[];
  onnxBytes: Uint8Array;
  vocab: number;
  record: (ids: Int32Array) => unknown;
  tokens: number;
  repeats: number;
}

/** The coverage / latency / acceptance curve over kept sizes (BENCHMARKS.md: Draft speed and vocabulary trimming). */
async function curve(input: CurveInput) {
  const { target, tokenizer, vocab } = input;
  const prompts = await Promise.all(input.rows.map(async (r) => (await tokenizer.encode(r.prompt)).slice(-256)));
  // Target-only greedy continuations and the target's distributions along them (teacher forcing for agreement).
  const greedy: number[][] = [];
  for (const prompt of prompts) {
    const result = await target.lm.forward(prompt, target.lm.emptyCache());
    let cache = result.cache;
    let row = result.logits.subarray((result.rows - 1) * vocab);
    const out: number[] = [];
    for (let i = 0; i < input.tokens; i++) {
      const next = argmax(row);
      out.push(next);
      const step = await target.lm.forward([next], cache);
      cache = step.cache;
      row = step.logits;
    }
    greedy.push(out);
  }
  const ortWebRuntime = ortWeb as unknown as OrtRuntime;
  ortWeb.env.wasm.numThreads = 1;
  const models: Array<{ n: number; node: CausalLM; web: CausalLM; ids: Int32Array }> = [];
  for (const n of input.sizes) {
    const ids = n >= vocab ? Int32Array.from({ length: vocab }, (_, i) => i) : keptIds(input.mass, n, input.always);
    const files = n >= vocab ? folderFiles(input.draftDir) : trimmedFiles(input.draftDir, trimOnnx(input.onnxBytes, vocab, ids), input.record(ids));
    const node = (await loadModel(nodeOrt, files, 'quantized', { intraOpNumThreads: 1 })).lm;
    const web = (await loadModel(ortWebRuntime, files, 'quantized')).lm;
    models.push({ n, node, web, ids });
  }
  // Step timing, interleaved size by size and repeat by repeat so every size sees the same machine load.
  const context = prompts[0].slice(-128);
  const steps = 64;
  const timeStep = async (lm: CausalLM) => {
    let r = await lm.forward(context, lm.emptyCache());
    const t = performance.now();
    for (let i = 0; i < steps; i++) r = await lm.forward([(i * 13 + 5) % vocab], r.cache);
    return (performance.now() - t) / steps;
  };
  const times = new Map<number, { node: number[]; web: number[] }>(models.map((m) => [m.n, { node: [], web: [] }]));
  for (let rep = 0; rep < input.repeats; rep++) {
    for (const m of models) {
      times.get(m.n)!.node.push(await timeStep(m.node));
      times.get(m.n)!.web.push(await timeStep(m.web));
    }
  }
  // Real held-out text (prompt + its real continuation) fed to both models: the honest agreement numbers
  // (greedy acceptance is inflated when both models fall into the same loop; ARCHITECTURE.md: Platform facts).
  const texts = await Promise.all(input.rows.map(async (r) => (await tokenizer.encode(r.prompt + (r.reference ?? ''))).slice(-WINDOW)));
  const targetRows: Float32Array[][] = [];
  for (const ids of texts) {
    const r = await target.lm.forward(ids, target.lm.emptyCache());
    targetRows.push(Array.from({ length: r.rows }, (_, i) => r.logits.slice(i * vocab, (i + 1) * vocab)));
  }
  const sampledParams = { temperature: 0.8, top_p: 1, top_k: 0 };
  console.log(
    '| kept N | target mass covered (T=1, real text) | real next tokens covered | target greedy tokens covered | top-1 agreement with the target (real text fed in) | sampled acceptance α = Σ min(p, q), T=0.8, q of 32 | greedy accepted / round (k=4) | tokens / round | step ms, onnxruntime-node (median / min) | step ms, onnxruntime-web in Node (median / min) |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const m of models) {
    const kept = new Set(m.ids);
    let massCovered = 0;
    let positions = 0;
    let agree = 0;
    let alpha = 0;
    let realCovered = 0;
    for (let p = 0; p < texts.length; p++) {
      const r = await m.node.forward(texts[p], m.node.emptyCache());
      for (let i = 0; i < r.rows; i++) {
        const t = targetRows[p][i];
        const probs = softmax(t);
        for (const id of m.ids) massCovered += probs[id];
        const d = r.logits.subarray(i * m.node.logitsWidth, (i + 1) * m.node.logitsWidth);
        if (m.node.tokenAt(argmax(d)) === argmax(t)) agree++;
        if (i + 1 < r.rows && kept.has(texts[p][i + 1])) realCovered++;
        // Token-level speculative sampling accepts with probability Σ_x min(p(x), q(x)) (Leviathan et al. 2023).
        const pDist = processLogits(t, sampledParams);
        for (const [column, q] of sparseFromLogits(d, sampledParams, 32)) alpha += Math.min(pDist[m.node.tokenAt(column)], q);
        positions++;
      }
    }
    const flat = greedy.flat();
    const tokensCovered = flat.filter((t) => kept.has(t)).length / flat.length;
    // Greedy speculation at k = 4 against the target-only greedy path: exactly what verifyGreedy accepts.
    let accepted = 0;
    let rounds = 0;
    for (let p = 0; p < prompts.length; p++) {
      const proposer = new DraftModelProposer(m.node, 32);
      let t = 0;
      while (t < greedy[p].length) {
        const context = [...prompts[p], ...greedy[p].slice(0, t)];
        const draft = await proposer.propose(context, Math.min(4, greedy[p].length - t), { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: t });
        let a = 0;
        while (a < draft.length && draft[a].token === greedy[p][t + a]) a++;
        accepted += a;
        rounds++;
        t += a + 1;
      }
    }
    const ts = times.get(m.n)!;
    const fmt = (xs: number[]) => `${med(xs).toFixed(3)} / ${Math.min(...xs).toFixed(3)}`;
    const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
    const realTokens = texts.reduce((a, t) => a + t.length - 1, 0);
    console.log(
      `| ${m.n} | ${pct(massCovered / positions)} | ${pct(realCovered / realTokens)} | ${pct(tokensCovered)} | ${pct(agree / positions)} | ${(alpha / positions).toFixed(3)} | ${(accepted / rounds).toFixed(2)} | ${((accepted + rounds) / rounds).toFixed(2)} | ${fmt(ts.node)} | ${fmt(ts.web)} |`,
    );
  }
}

function softmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  const out = new Float64Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += out[i] = Math.exp(row[i] - max);
  for (let i = 0; i < row.length; i++) out[i] /= sum;
  return out;
}

const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

if (import.meta.url === `file://${process.argv[1]}`) await main();
