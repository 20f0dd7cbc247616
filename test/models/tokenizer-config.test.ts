// The training pipeline is the single source of the shipped tokenizer_config.json,
// chat template included: a re-run writes the same bytes (models/pipeline/tokenizer.ts).
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CHAT_TEMPLATE, tokenizerConfigText } from "../../models/pipeline/tokenizer";
import { chatTemplateFromConfig } from "../../shared/chat-template";
import { DRAFT, TARGET, readConfig } from "./helpers";

describe("tokenizer_config.json from the pipeline", () => {
  for (const [name, dir] of [["edgespec-draft", DRAFT], ["edgespec-target", TARGET]] as const) {
    it(`reproduces ${name}'s byte for byte`, () => {
      const shipped = readFileSync(join(dir, "tokenizer_config.json"), "utf8");
      expect(tokenizerConfigText(Number(readConfig(dir).max_position_embeddings))).toBe(shipped);
      expect(JSON.parse(shipped).chat_template).toBe(CHAT_TEMPLATE);
    });
  }

  it("writes a template that renders role, name, content and the generation prompt", () => {
    const template = chatTemplateFromConfig(JSON.parse(tokenizerConfigText(1024)))!;
    const text = template.render([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi", name: "ana" }]);
    expect(text).toBe("system:\nBe brief.<|endoftext|>user (ana):\nHi<|endoftext|>assistant:\n");
  });
});
