// The draft runs at the edge in onnxruntime-web (WASM, 1 thread): it must
// compute what onnxruntime-node computes on the same file.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import * as ortNode from "onnxruntime-node";
import * as ortWeb from "onnxruntime-web";
import { DRAFT, TARGET, readConfig, onnxPath, makeDecoder, referencePrompt } from "./helpers";

describe("the shipped models in onnxruntime-web", () => {
  // fp32 kernels agree to float rounding: the same greedy tokens, exactly.
  it("fp32 (the target): the same greedy tokens as onnxruntime-node", async () => {
    ortWeb.env.wasm.numThreads = 1;
    ortWeb.env.wasm.proxy = false;
    const c = readConfig(TARGET);
    const web = await ortWeb.InferenceSession.create(new Uint8Array(readFileSync(onnxPath(TARGET))), { executionProviders: ["wasm"] });
    const node = await ortNode.InferenceSession.create(onnxPath(TARGET), { intraOpNumThreads: 1 });
    const prompt = referencePrompt().slice(0, 32);
    const fromWeb = await makeDecoder(ortWeb, web, c).greedyCached(prompt, 16);
    const fromNode = await makeDecoder(ortNode, node, c).greedyCached(prompt, 16);
    expect(fromWeb).toEqual(fromNode);
    await web.release();
    await node.release();
  });

  // Dynamic int8 quantization runs different kernels in WASM and in native MLAS (and native differs by CPU:
  // AVX2, AVX-512 VNNI), so logits agree to about 0.1-0.2, and a greedy run can part ways at a near-tie.
  // The check: teacher-forced on onnxruntime-node's greedy tokens, every position's logits agree within
  // that noise, and the argmax agrees wherever the top two are further apart than the noise.
  it("int8 (the draft): onnxruntime-node's logits within the quantization noise, its argmax wherever it is not a near-tie", async () => {
    ortWeb.env.wasm.numThreads = 1;
    ortWeb.env.wasm.proxy = false;
    const c = readConfig(DRAFT);
    const bytes = readFileSync(onnxPath(DRAFT));
    const web = await ortWeb.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
    const node = await ortNode.InferenceSession.create(onnxPath(DRAFT), { intraOpNumThreads: 1 });
    const prompt = referencePrompt().slice(0, 32);
    const nodeDecoder = makeDecoder(ortNode, node, c);
    const webDecoder = makeDecoder(ortWeb, web, c);
    const tokens = await nodeDecoder.greedyCached(prompt, 16);
    const sequence = [...prompt, ...tokens];
    // One pass each over the whole sequence: row i predicts sequence[i + 1].
    const fromNode = (await nodeDecoder.step(sequence, nodeDecoder.emptyPast(), 0)).logits;
    const fromWeb = (await webDecoder.step(sequence, webDecoder.emptyPast(), 0)).logits;
    const noise = 1; // up to 0.66 measured (AMD EPYC, AVX2 without VNNI)
    let decided = 0;
    for (let row = prompt.length - 1; row < sequence.length - 1; row++) {
      const a = fromNode.subarray(row * c.vocab_size, (row + 1) * c.vocab_size);
      const b = fromWeb.subarray(row * c.vocab_size, (row + 1) * c.vocab_size);
      let diff = 0;
      for (let v = 0; v < c.vocab_size; v++) diff = Math.max(diff, Math.abs(a[v] - b[v]));
      expect(diff, `row ${row}`).toBeLessThan(noise);
      const sorted = [...a].sort((x, y) => y - x);
      if (sorted[0] - sorted[1] > 1.5 * noise) {
        decided++;
        expect(nodeDecoder.argmaxAt(fromWeb, row), `row ${row}`).toBe(nodeDecoder.argmaxAt(fromNode, row));
      }
    }
    // The small draft's distributions are flat, so few positions are clear decisions; a test that checked none would mean nothing.
    expect(decided).toBeGreaterThanOrEqual(1);
    await web.release();
    await node.release();
  });
});
