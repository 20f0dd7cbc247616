// ONNX checks run with onnxruntime-node (the origin's runtime; there is no
// Python onnxruntime here): exported logits equal PyTorch's within tolerance,
// cached decoding equals uncached, and k+1 tokens verified at once after a
// cached prefix give the same logits as a full pass.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";

export interface DecoderConfig {
  num_hidden_layers: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
}

export type Past = Record<string, ort.Tensor>;

export function modelFile(dir: string): string {
  for (const f of ["model.onnx", "model_quantized.onnx", "decoder_model_merged.onnx"]) if (existsSync(join(dir, "onnx", f))) return join(dir, "onnx", f);
  throw new Error(`no ONNX model in ${dir}/onnx`);
}

export function emptyPast(c: DecoderConfig, batch = 1): Past {
  const past: Past = {};
  for (let i = 0; i < c.num_hidden_layers; i++) {
    for (const kind of ["key", "value"]) past[`past_key_values.${i}.${kind}`] = new ort.Tensor("float32", new Float32Array(0), [batch, c.num_key_value_heads, 0, c.head_dim]);
  }
  return past;
}

/** One decoder call: rows of token ids after `pastLen` cached positions. */
export async function step(session: ort.InferenceSession, c: DecoderConfig, rows: number[][], past: Past, pastLen: number) {
  const b = rows.length;
  const s = rows[0].length;
  const ids = new ort.Tensor("int64", BigInt64Array.from(rows.flat().map(BigInt)), [b, s]);
  const mask = new ort.Tensor("int64", new BigInt64Array(b * (pastLen + s)).fill(1n), [b, pastLen + s]);
  const pos = new ort.Tensor("int64", BigInt64Array.from(rows.flatMap(() => Array.from({ length: s }, (_, j) => BigInt(pastLen + j)))), [b, s]);
  const out = await session.run({ input_ids: ids, attention_mask: mask, position_ids: pos, ...past });
  const present: Past = {};
  for (let i = 0; i < c.num_hidden_layers; i++) {
    for (const kind of ["key", "value"]) present[`past_key_values.${i}.${kind}`] = out[`present.${i}.${kind}`];
  }
  return { logits: out.logits.data as Float32Array, dims: out.logits.dims as number[], present };
}

export function argmaxRow(logits: Float32Array, vocab: number, row: number): number {
  let best = 0;
  let bv = -Infinity;
  for (let v = 0; v < vocab; v++) {
    const x = logits[row * vocab + v];
    if (x > bv) { bv = x; best = v; }
  }
  return best;
}

/** Greedy decoding with the KV cache, one token per call after the prompt. */
export async function greedyCached(session: ort.InferenceSession, c: DecoderConfig, prompt: number[], n: number): Promise<number[]> {
  let r = await step(session, c, [prompt], emptyPast(c), 0);
  let len = prompt.length;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const next = argmaxRow(r.logits, c.vocab_size, r.dims[1] - 1);
    out.push(next);
    if (i + 1 < n) { r = await step(session, c, [[next]], r.present, len); len++; }
  }
  return out;
}

/** Greedy decoding recomputing the whole sequence each step (no cache). */
export async function greedyUncached(session: ort.InferenceSession, c: DecoderConfig, prompt: number[], n: number): Promise<number[]> {
  const seq = [...prompt];
  for (let i = 0; i < n; i++) {
    const r = await step(session, c, [seq], emptyPast(c), 0);
    seq.push(argmaxRow(r.logits, c.vocab_size, r.dims[1] - 1));
  }
  return seq.slice(prompt.length);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export async function checkModelFolder(dir: string, referencePath: string): Promise<void> {
  const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as DecoderConfig;
  const ref = JSON.parse(readFileSync(referencePath, "utf8"));
  const session = await ort.InferenceSession.create(modelFile(dir), { intraOpNumThreads: 1 });
  const quantized = Boolean(ref.quantized);
  const V = c.vocab_size;
  // 1. Logits vs PyTorch (fp32: tight; int8: top-1 and a loose bound).
  const full = await step(session, c, ref.input_ids, emptyPast(c, ref.input_ids.length), 0);
  const s = ref.input_ids[0].length;
  let worst = 0;
  let top1 = 0;
  for (let b = 0; b < ref.input_ids.length; b++) {
    const last = full.logits.subarray((b * s + s - 1) * V, (b * s + s) * V);
    worst = Math.max(worst, maxAbsDiff(last, ref.logits_last[b]));
    const refArg = ref.logits_last[b].indexOf(Math.max(...ref.logits_last[b]));
    if (argmaxRow(last, V, 0) === refArg) top1++;
  }
  const tol = quantized ? 1.0 : 1e-3;
  console.log(`[check] ${dir.split("/").pop()}: max |logit - torch| = ${worst.toExponential(2)} (tolerance ${tol}), top-1 ${top1}/${ref.input_ids.length}`);
  if (!(worst <= tol)) throw new Error(`exported logits differ from PyTorch by ${worst}`);
  // 2. Cached decoding equals uncached.
  const cached = await greedyCached(session, c, ref.greedy_prompt, 10);
  const uncached = await greedyUncached(session, c, ref.greedy_prompt, 10);
  console.log(`[check] cached ${cached.join(",")} | uncached ${uncached.join(",")}${quantized ? "" : ` | torch ${ref.greedy_tokens.join(",")}`}`);
  if (cached.join() !== uncached.join()) throw new Error("cached greedy decoding differs from uncached");
  if (!quantized && cached.join() !== ref.greedy_tokens.join()) throw new Error("ONNX greedy tokens differ from PyTorch");
  // 3. Verification shape: k+1 = 5 tokens at once after a cached prefix of 7.
  const seq = ref.input_ids[0];
  const prefix = await step(session, c, [seq.slice(0, 7)], emptyPast(c), 0);
  const verify = await step(session, c, [seq.slice(7, 12)], prefix.present, 7);
  const d = maxAbsDiff(verify.logits, full.logits.subarray(7 * V, 12 * V));
  console.log(`[check] verify 5 tokens after cached 7: max diff vs full pass ${d.toExponential(2)}`);
  if (!(d <= 1e-3 || (quantized && d <= 0.5))) throw new Error(`cached multi-token logits differ by ${d}`);
}
