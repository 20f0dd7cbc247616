// Byte-level BPE tokenizer, trained with Hugging Face's Rust library (npm
// `tokenizers`) and saved as a standard tokenizer.json + tokenizer_config.json.
// The Node binding's train() ignores the vocabulary size (it trains to the
// default 30k), so we keep the earliest merges until the vocabulary is full:
// BPE merges are ranked, so a prefix of the merge list is itself a valid BPE.
import { readFileSync, writeFileSync, mkdirSync, openSync, writeSync, closeSync } from "node:fs";
import { join } from "node:path";
import tokenizers from "tokenizers";

const { Tokenizer, BPE, byteLevelPreTokenizer, byteLevelAlphabet } = tokenizers as unknown as {
  Tokenizer: typeof import("tokenizers").Tokenizer;
  BPE: typeof import("tokenizers").BPE;
  byteLevelPreTokenizer: typeof import("tokenizers").byteLevelPreTokenizer;
  byteLevelAlphabet: typeof import("tokenizers").byteLevelAlphabet;
};

export const EOS = "<|endoftext|>";

export function trainTokenizer(trainFiles: string[], outDir: string, vocabSize: number, modelMaxLength: number): void {
  mkdirSync(outDir, { recursive: true });
  const tok = new Tokenizer(BPE.empty());
  tok.setPreTokenizer(byteLevelPreTokenizer(false, true));
  tok.train(trainFiles);
  const raw = join(outDir, "tokenizer.raw.json");
  tok.save(raw, false);
  const trained = JSON.parse(readFileSync(raw, "utf8"));
  const merges: [string, string][] = trained.model.merges.map((m: string | [string, string]) =>
    typeof m === "string" ? (m.split(" ") as [string, string]) : m,
  );
  // id 0: <|endoftext|>; then all 256 byte symbols (so any input encodes); then merges.
  const vocab: Record<string, number> = Object.create(null);
  vocab[EOS] = 0;
  for (const ch of [...byteLevelAlphabet()].sort()) vocab[ch] = Object.keys(vocab).length;
  const kept: [string, string][] = [];
  for (const [a, b] of merges) {
    if (Object.keys(vocab).length >= vocabSize) break;
    if (!(a in vocab) || !(b in vocab)) continue;
    const m = a + b;
    if (m in vocab) continue;
    vocab[m] = Object.keys(vocab).length;
    kept.push([a, b]);
  }
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: 0, content: EOS, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: kept,
    },
  };
  writeFileSync(join(outDir, "tokenizer.json"), JSON.stringify(json));
  writeFileSync(join(outDir, "tokenizer_config.json"), tokenizerConfigText(modelMaxLength));
}

/**
 * The shipped models' chat template (Jinja, as Hugging Face's
 * `apply_chat_template` and @huggingface/jinja render it; shared/chat-template.ts):
 * each message as `role[ (name)]:\n` + content + <|endoftext|>, then
 * `assistant:\n` when a generation prompt is asked for. The models saw no chat
 * data: it only gives /v1/chat/completions a defined, tokenizable prompt. This
 * is its single source: tokenizer_config.json gets it from here.
 */
export const CHAT_TEMPLATE =
  "{% for message in messages %}{{ message['role'] }}{% if message['name'] %} ({{ message['name'] }}){% endif %}" +
  "{{ ':\\n' + message['content'] + eos_token }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'assistant:\\n' }}{% endif %}";

/** tokenizer_config.json exactly as written into the model folders (tests compare it with the shipped files). */
export function tokenizerConfigText(modelMaxLength: number): string {
  return JSON.stringify(tokenizerConfig(modelMaxLength), null, 2) + "\n";
}

export function tokenizerConfig(modelMaxLength: number) {
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    bos_token: EOS,
    eos_token: EOS,
    unk_token: EOS,
    pad_token: null,
    clean_up_tokenization_spaces: false,
    model_max_length: modelMaxLength,
    added_tokens_decoder: {
      "0": { content: EOS, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    },
    chat_template: CHAT_TEMPLATE,
  };
}

export function loadTokenizer(dir: string) {
  return Tokenizer.fromFile(join(dir, "tokenizer.json"));
}

/**
 * Encodes JSONL docs into a flat uint16 token file, each document followed by
 * <|endoftext|> (id 0), and returns token and byte counts.
 */
export async function encodeDocs(tokenizerDir: string, jsonlPath: string, outPath: string, maxBytes = Infinity): Promise<{ tokens: number; bytes: number; docs: number }> {
  const tok = loadTokenizer(tokenizerDir);
  const lines = readFileSync(jsonlPath, "utf8").split("\n").filter(Boolean);
  const fd = openSync(outPath, "w");
  let tokens = 0;
  let bytes = 0;
  let docs = 0;
  const batch = 64;
  for (let i = 0; i < lines.length && bytes < maxBytes; i += batch) {
    const texts = lines.slice(i, i + batch).map((l) => (JSON.parse(l) as { text: string }).text);
    const encs = await tok.encodeBatch(texts, { addSpecialTokens: false });
    for (let j = 0; j < encs.length; j++) {
      const ids = encs[j].getIds();
      const arr = new Uint16Array(ids.length + 1);
      arr.set(ids);
      arr[ids.length] = 0;
      writeSync(fd, Buffer.from(arr.buffer));
      tokens += arr.length;
      bytes += Buffer.byteLength(texts[j]);
      docs++;
    }
  }
  closeSync(fd);
  return { tokens, bytes, docs };
}
