// Shared helpers for the model tests: folder paths and a decoder-step driver
// generic over onnxruntime-node and onnxruntime-web (same Tensor API).
import { readFileSync, existsSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DRAFT = join(repo, "models", "edgespec-draft");
export const TARGET = join(repo, "models", "edgespec-target");
export const FIXTURE = join(repo, "test", "fixtures", "hf-gqa");

export interface DecoderConfig {
  num_hidden_layers: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
}

export function readConfig(dir: string): DecoderConfig & Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
}

export function onnxPath(dir: string): string {
  for (const f of ["model_quantized.onnx", "model.onnx", "decoder_model_merged.onnx"]) if (existsSync(join(dir, "onnx", f))) return join(dir, "onnx", f);
  throw new Error(`no ONNX file in ${dir}`);
}

// Minimal structural view of onnxruntime's Tensor/InferenceSession shared by -node and -web.
interface TensorLike { data: unknown; dims: readonly number[] }
interface OrtLike {
  Tensor: new (type: "int64" | "float32", data: BigInt64Array | Float32Array, dims: number[]) => TensorLike;
}
interface SessionLike { run(feeds: Record<string, TensorLike>): Promise<Record<string, TensorLike>> }

export function makeDecoder(ort: OrtLike, session: SessionLike, c: DecoderConfig) {
  const emptyPast = () => {
    const past: Record<string, TensorLike> = {};
    for (let i = 0; i < c.num_hidden_layers; i++)
      for (const kind of ["key", "value"]) past[`past_key_values.${i}.${kind}`] = new ort.Tensor("float32", new Float32Array(0), [1, c.num_key_value_heads, 0, c.head_dim]);
    return past;
  };
  async function step(tokens: number[], past: Record<string, TensorLike>, pastLen: number) {
    const s = tokens.length;
    const out = await session.run({
      input_ids: new ort.Tensor("int64", BigInt64Array.from(tokens.map(BigInt)), [1, s]),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(pastLen + s).fill(1n), [1, pastLen + s]),
      position_ids: new ort.Tensor("int64", BigInt64Array.from(tokens.map((_, j) => BigInt(pastLen + j))), [1, s]),
      ...past,
    });
    const present: Record<string, TensorLike> = {};
    for (let i = 0; i < c.num_hidden_layers; i++)
      for (const kind of ["key", "value"]) present[`past_key_values.${i}.${kind}`] = out[`present.${i}.${kind}`];
    return { logits: out.logits.data as Float32Array, present };
  }
  const argmaxAt = (logits: Float32Array, row: number) => {
    let best = 0;
    for (let v = 1; v < c.vocab_size; v++) if (logits[row * c.vocab_size + v] > logits[row * c.vocab_size + best]) best = v;
    return best;
  };
  async function greedyCached(prompt: number[], n: number) {
    let r = await step(prompt, emptyPast(), 0);
    let row = prompt.length - 1;
    let len = prompt.length;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const next = argmaxAt(r.logits, row);
      out.push(next);
      r = await step([next], r.present, len);
      len++;
      row = 0;
    }
    return out;
  }
  async function greedyUncached(prompt: number[], n: number) {
    const seq = [...prompt];
    for (let i = 0; i < n; i++) {
      const r = await step(seq, emptyPast(), 0);
      seq.push(argmaxAt(r.logits, seq.length - 1));
    }
    return seq.slice(prompt.length);
  }
  return { emptyPast, step, argmaxAt, greedyCached, greedyUncached };
}

/** A prompt from held-out benchmark packages, encoded with the Rust-reference ids. */
export function referencePrompt(): number[] {
  const ref = JSON.parse(readFileSync(join(repo, "test", "models", "fixtures", "tokenizer-reference.json"), "utf8"));
  const long = ref.cases.find((c: { ids: number[] }) => c.ids.length > 60);
  return long.ids.slice(0, 48);
}
