// `npm run models:fixtures`: committed test fixtures, so CI never needs torch.
//  - test/fixtures/hf-gqa/: a tiny random-weight Llama with grouped-query attention
//    and an explicit head_dim, in the standard Hugging Face / transformers.js layout
//    (config.json, tokenizer.json, tokenizer_config.json, onnx/model.onnx) plus
//    reference.json (PyTorch logits and greedy tokens) for loader tests.
//  - test/models/fixtures/tokenizer-reference.json: token ids from Hugging Face's
//    Rust tokenizer for a set of strings, to compare the pure-JS tokenizer against.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ensurePython, py } from "./run";
import { loadTokenizer } from "./tokenizer";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const tokenizerDir = [join(repo, "models", "edgespec-target"), join(repo, "models", ".work", "full", "tokenizer")].find((d) => existsSync(join(d, "tokenizer.json")));
if (!tokenizerDir) throw new Error("no tokenizer: run `npm run train:models` first");

ensurePython();
py("export.py", ["fixture", "--out", join(repo, "test", "fixtures", "hf-gqa"), "--tokenizer", tokenizerDir], false);

export const TOKENIZER_SAMPLES = [
  "",
  "const x = 1;",
  "function add(a, b) {\n  return a + b;\n}\n",
  "export default class Foo extends Bar {\n\tconstructor() { super(); this.toString = () => 'x'; }\n}",
  "import { readFileSync } from \"node:fs\";\n\n// comment with émojis 🚀 and ünïcödé\n",
  "   leading spaces and trailing   \n\n\n",
  "<|endoftext|>after the special token",
  "hasOwnProperty constructor __proto__ valueOf toString",
  "if (a !== b && c >= d || e <= f) { x += 1; y **= 2; z ??= null; }",
  "const s = `template ${value} literal`;\r\nwindow.onload = () => {};",
  "数字 1234567890 0x1F 3.14e-10",
];

const tok = loadTokenizer(tokenizerDir);
const cases = [];
for (const text of TOKENIZER_SAMPLES) cases.push({ text, ids: (await tok.encode(text, null, { addSpecialTokens: false })).getIds() });
const corpusPrompts = join(repo, "models", "corpus", "bench_prompts.jsonl");
if (existsSync(corpusPrompts)) {
  for (const line of readFileSync(corpusPrompts, "utf8").split("\n").filter(Boolean).slice(0, 8)) {
    const { prompt } = JSON.parse(line) as { prompt: string };
    cases.push({ text: prompt, ids: (await tok.encode(prompt, null, { addSpecialTokens: false })).getIds() });
  }
}
const out = join(repo, "test", "models", "fixtures", "tokenizer-reference.json");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ note: "ids from the Rust `tokenizers` library (npm run models:fixtures)", cases }, null, 1) + "\n");
console.log(`wrote ${out} (${cases.length} cases)`);
