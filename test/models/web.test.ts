// The draft runs at the edge in onnxruntime-web (WASM, 1 thread): it must
// produce the same greedy tokens as onnxruntime-node on the same file.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import * as ortNode from "onnxruntime-node";
import * as ortWeb from "onnxruntime-web";
import { DRAFT, readConfig, onnxPath, makeDecoder, referencePrompt } from "./helpers";

describe("edgespec-draft in onnxruntime-web", () => {
  it("greedy tokens equal onnxruntime-node's", async () => {
    ortWeb.env.wasm.numThreads = 1;
    ortWeb.env.wasm.proxy = false;
    const c = readConfig(DRAFT);
    const bytes = readFileSync(onnxPath(DRAFT));
    const web = await ortWeb.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
    const node = await ortNode.InferenceSession.create(onnxPath(DRAFT), { intraOpNumThreads: 1 });
    const prompt = referencePrompt().slice(0, 32);
    const fromWeb = await makeDecoder(ortWeb, web, c).greedyCached(prompt, 16);
    const fromNode = await makeDecoder(ortNode, node, c).greedyCached(prompt, 16);
    expect(fromWeb).toEqual(fromNode);
    await web.release();
    await node.release();
  });
});
