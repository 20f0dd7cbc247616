// End-to-end quick run of the model pipeline (`npm run train:models -- --quick`):
// every stage (corpus from the project's own node_modules, tokenizer, training,
// FastDraft alignment, export, int8 quantization, ONNX checks, evaluation, cards)
// with tiny models: ~30 s alone on 2 cores, over a minute on a busy machine, and
// it needs Debian's python3-torch. So it is opt-in (CI never retrains; the other
// files test the committed artifacts): EDGESPEC_PIPELINE_TEST=1 npx vitest run test/models
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { repo } from "./helpers";

const python = process.env.EDGESPEC_PYTHON ?? "/usr/bin/python3";
const hasTorch = existsSync(python) && spawnSync(python, ["-c", "import torch, onnx"], { stdio: "ignore" }).status === 0;
const enabled = process.env.EDGESPEC_PIPELINE_TEST === "1" && hasTorch;

describe.skipIf(!enabled)("model pipeline --quick", () => {
  it("runs every stage and writes checked model folders", () => {
    const work = join(repo, "models", ".work", "quick-test");
    rmSync(work, { recursive: true, force: true });
    const r = spawnSync(join(repo, "node_modules", ".bin", "tsx"), [join(repo, "models", "pipeline", "run.ts"), "--quick", "--run", "quick-test"], { cwd: repo, encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    for (const name of ["edgespec-target", "edgespec-draft"]) {
      const out = join(work, "out", name);
      for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "SHA256SUMS", "MODEL_CARD.md"]) expect(existsSync(join(out, f)), f).toBe(true);
    }
    expect(existsSync(join(work, "out", "edgespec-draft", "onnx", "model_quantized.onnx"))).toBe(true);
    const ev = JSON.parse(readFileSync(join(work, "eval.json"), "utf8"));
    expect(ev.draft.greedy.mean_accepted).toBeGreaterThanOrEqual(0);
    expect(r.stdout).toMatch(/tok\/s/);
  }, 300_000);
});
