// The pure-JS tokenizer the edge uses (@huggingface/tokenizers) must encode
// exactly like Hugging Face's Rust library, which trained it.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { DRAFT, TARGET, FIXTURE, repo } from "./helpers";

const reference = JSON.parse(readFileSync(join(repo, "test", "models", "fixtures", "tokenizer-reference.json"), "utf8")) as { cases: { text: string; ids: number[] }[] };

function load(dir: string) {
  return new Tokenizer(JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")), JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")));
}

describe.each([["edgespec-target", TARGET], ["edgespec-draft", DRAFT], ["hf-gqa fixture", FIXTURE]])("%s tokenizer", (_name, dir) => {
  const tok = load(dir);
  it("encodes like the Rust library (reference ids)", () => {
    for (const c of reference.cases) expect(tok.encode(c.text, { add_special_tokens: false }).ids, JSON.stringify(c.text.slice(0, 40))).toEqual(c.ids);
  });

  it("adds no BOS by default and round-trips text", () => {
    for (const c of reference.cases) {
      expect(tok.encode(c.text).ids).toEqual(c.ids);
      if (c.ids.length > 0) expect(tok.decode(c.ids)).toBe(c.text);
    }
  });

  it("knows <|endoftext|> as id 0 and vocabulary tokens like toString", () => {
    expect(tok.encode("<|endoftext|>", { add_special_tokens: false }).ids).toEqual([0]);
    expect(tok.decode([0], { skip_special_tokens: true })).toBe("");
    const vocab = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")).model.vocab as Record<string, number>;
    expect(Object.keys(vocab).length).toBe(4096);
  });
});

describe("Rust library (live)", () => {
  it("still produces the reference ids", async () => {
    const { Tokenizer: RustTokenizer } = (await import("tokenizers")).default as typeof import("tokenizers");
    const rust = RustTokenizer.fromFile(join(TARGET, "tokenizer.json"));
    for (const c of reference.cases) expect((await rust.encode(c.text, null, { addSpecialTokens: false })).getIds()).toEqual(c.ids);
  });
});
