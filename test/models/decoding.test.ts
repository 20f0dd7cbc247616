// Shipped models in onnxruntime-node: cached decoding equals uncached, and a
// verify block (k + 1 tokens after a cached prefix) equals a full pass.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { DRAFT, TARGET, FIXTURE, readConfig, onnxPath, makeDecoder, referencePrompt } from "./helpers";

async function decoderFor(dir: string) {
  const session = await ort.InferenceSession.create(onnxPath(dir), { intraOpNumThreads: 1 });
  const c = readConfig(dir);
  return { session, c, d: makeDecoder(ort, session, c) };
}

function maxAbsDiff(a: Float32Array, b: Float32Array) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.each([["edgespec-draft", DRAFT], ["edgespec-target", TARGET], ["hf-gqa fixture", FIXTURE]])("%s", (_name, dir) => {
  it("cached greedy decoding equals uncached", async () => {
    const { session, d } = await decoderFor(dir);
    const prompt = referencePrompt().slice(0, 24);
    const cached = await d.greedyCached(prompt, 12);
    const uncached = await d.greedyUncached(prompt, 12);
    expect(cached).toEqual(uncached);
    await session.release();
  });

  it("k+1 tokens verified after a cached prefix equal a full pass", async () => {
    const { session, c, d } = await decoderFor(dir);
    const seq = referencePrompt().slice(0, 30);
    const full = await d.step(seq, d.emptyPast(), 0);
    const prefix = await d.step(seq.slice(0, 25), d.emptyPast(), 0);
    const block = await d.step(seq.slice(25), prefix.present, 25);
    const ref = full.logits.subarray(25 * c.vocab_size, 30 * c.vocab_size);
    // int8 activations are quantized per call (DynamicQuantizeLinear), so the
    // draft's logits move slightly with the block; its argmax must not.
    expect(maxAbsDiff(block.logits, ref)).toBeLessThan(dir === DRAFT ? 0.5 : 1e-3);
    for (let r = 0; r < 5; r++) expect(d.argmaxAt(block.logits, r)).toBe(d.argmaxAt(ref, r));
    await session.release();
  });
});

describe("hf-gqa fixture", () => {
  it("matches the PyTorch reference logits and greedy tokens", async () => {
    const { session, c, d } = await decoderFor(FIXTURE);
    const ref = JSON.parse(readFileSync(join(FIXTURE, "reference.json"), "utf8"));
    const row = ref.input_ids[0] as number[];
    const out = await d.step(row, d.emptyPast(), 0);
    const last = out.logits.subarray((row.length - 1) * c.vocab_size, row.length * c.vocab_size);
    expect(maxAbsDiff(last, Float32Array.from(ref.logits_last[0]))).toBeLessThan(1e-3);
    expect(await d.greedyCached(ref.greedy_prompt, ref.greedy_tokens.length)).toEqual(ref.greedy_tokens);
    await session.release();
  });
});
