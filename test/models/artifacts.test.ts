// The committed model folders match the loader contract (models/README.md).
import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { readFileSync, statSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { DRAFT, TARGET, FIXTURE, readConfig, onnxPath } from "./helpers";

const LLAMA_KEYS = ["model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
  "max_position_embeddings", "bos_token_id", "eos_token_id", "rope_theta", "tie_word_embeddings"];

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

describe.each([
  ["edgespec-draft", DRAFT, "model_quantized.onnx"],
  ["edgespec-target", TARGET, "model.onnx"],
])("%s", (_name, dir, onnxFile) => {
  it("SHA256SUMS lists every file and matches it", () => {
    const lines = readFileSync(join(dir, "SHA256SUMS"), "utf8").trim().split("\n");
    const listed = new Map(lines.map((l) => { const [h, f] = l.split(/\s+/); return [f, h]; }));
    const present = files(dir).map((f) => f.slice(dir.length + 1)).filter((f) => f !== "SHA256SUMS").sort();
    expect([...listed.keys()].sort()).toEqual(present);
    for (const [f, h] of listed) expect(createHash("sha256").update(readFileSync(join(dir, f))).digest("hex"), f).toBe(h);
  });

  it("config.json has the Hugging Face Llama keys", () => {
    const c = readConfig(dir);
    for (const k of LLAMA_KEYS) expect(c, k).toHaveProperty(k);
    expect(c.model_type).toBe("llama");
    expect(c.max_position_embeddings).toBeGreaterThanOrEqual(512);
    expect(c.bos_token_id).toBe(0);
    expect(c.eos_token_id).toBe(0);
  });

  it("tokenizer files declare <|endoftext|> and the context length", () => {
    const tc = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    expect(tc.eos_token).toBe("<|endoftext|>");
    expect(tc.bos_token).toBe("<|endoftext|>");
    expect(tc.model_max_length).toBeGreaterThanOrEqual(512);
    const tj = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
    expect(tj.model.vocab["<|endoftext|>"]).toBe(0);
    expect(Object.keys(tj.model.vocab).length).toBe(readConfig(dir).vocab_size);
    expect(readFileSync(join(dir, "tokenizer.json"))).toEqual(readFileSync(join(TARGET, "tokenizer.json")));
  });

  it(`ships onnx/${onnxFile} with the Optimum decoder inputs and outputs`, async () => {
    expect(onnxPath(dir).endsWith(onnxFile)).toBe(true);
    const c = readConfig(dir);
    const s = await ort.InferenceSession.create(join(dir, "onnx", onnxFile));
    const kv = (p: string) => Array.from({ length: c.num_hidden_layers }, (_, i) => [`${p}.${i}.key`, `${p}.${i}.value`]).flat();
    expect([...s.inputNames].sort()).toEqual(["input_ids", "attention_mask", "position_ids", ...kv("past_key_values")].sort());
    expect([...s.outputNames].sort()).toEqual(["logits", ...kv("present")].sort());
    await s.release();
  });

  it("has a model card with measured numbers", () => {
    const card = readFileSync(join(dir, "MODEL_CARD.md"), "utf8");
    expect(card).toMatch(/bits\/byte/);
    expect(card).toMatch(/top-1 agreement/);
  });
});

describe("sizes", () => {
  it("draft int8 <= 8 MB and all model files < 40 MB", () => {
    expect(statSync(join(DRAFT, "onnx", "model_quantized.onnx")).size).toBeLessThanOrEqual(8e6);
    expect(existsSync(join(DRAFT, "onnx", "model.onnx"))).toBe(false);
    const total = [...files(DRAFT), ...files(TARGET)].reduce((a, f) => a + statSync(f).size, 0);
    expect(total).toBeLessThan(40e6);
  });

  it("the hf-gqa fixture is commit-sized and uses GQA with an explicit head_dim", () => {
    const total = files(FIXTURE).reduce((a, f) => a + statSync(f).size, 0);
    expect(total).toBeLessThan(1e6);
    const c = readConfig(FIXTURE);
    expect(c.num_key_value_heads).toBeLessThan(c.num_attention_heads as number);
    expect(c.head_dim).not.toBe((c.hidden_size as number) / (c.num_attention_heads as number));
  });
});
