// End-to-end quick run of the model pipeline (`npm run train:models -- --quick`):
// every stage on a 2 MB corpus with tiny models. It needs Debian's python3-torch
// and takes a minute or two on 2 cores, so it only runs with EDGESPEC_PIPELINE_TEST=1
// (CI never retrains; the committed artifacts are tested by the other files).
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { repo } from "./helpers";

const enabled = process.env.EDGESPEC_PIPELINE_TEST === "1";

describe.skipIf(!enabled)("model pipeline --quick", () => {
  it("runs every stage and writes checked model folders", () => {
    const work = join(repo, "models", ".work", "quick-test");
    rmSync(work, { recursive: true, force: true });
    const r = spawnSync("npx", ["tsx", join(repo, "models", "pipeline", "run.ts"), "--quick", "--run", "quick-test"], { cwd: repo, encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    for (const name of ["edgespec-target", "edgespec-draft"]) {
      const out = join(work, "out", name);
      for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "SHA256SUMS", "MODEL_CARD.md"]) expect(existsSync(join(out, f)), f).toBe(true);
    }
    expect(existsSync(join(work, "out", "edgespec-draft", "onnx", "model_quantized.onnx"))).toBe(true);
    const ev = JSON.parse(readFileSync(join(work, "eval.json"), "utf8"));
    expect(ev.draft.greedy.mean_accepted).toBeGreaterThanOrEqual(0);
    expect(r.stdout).toMatch(/tok\/s/);
  }, 600_000);
});
