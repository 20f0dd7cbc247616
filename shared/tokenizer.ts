import { Tokenizer } from '@huggingface/tokenizers';
import { readJson, type ModelFiles } from './model/load';

/** Text <-> token ids with a Hugging Face tokenizer.json, identical at the edge and in tests. */
export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
  /**
   * At least as many UTF-8 bytes as any one token stands for. A text of B
   * bytes then has at least B / maxBytesPerToken tokens, so an over-long
   * prompt is refused by its length alone, before tokenizing it: BPE over a
   * long run of one character is slow (5 MB took 410 s).
   */
  maxBytesPerToken: number;
}

export async function loadTokenizer(files: ModelFiles): Promise<TextTokenizer> {
  const tokenizerJson = await readJson(files, 'tokenizer.json');
  const tokenizerConfig = (await files.read('tokenizer_config.json')) ? await readJson(files, 'tokenizer_config.json') : {};
  const tokenizer = new Tokenizer(tokenizerJson as object, tokenizerConfig as object);
  return {
    maxBytesPerToken: maxBytesPerToken(tokenizerJson as TokenizerJson),
    // Completions continue raw text: no BOS or template is added (the models are trained on raw files).
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids,
    // The library refuses an empty list; no tokens are no text.
    decode: (ids) => (ids.length ? tokenizer.decode([...ids], { skip_special_tokens: true }) : ''),
  };
}

/**
 * Turns a growing list of generated ids into text deltas for streaming. Byte-level
 * BPE splits multi-byte characters across tokens; a decode ending in U+FFFD is
 * held back until the character completes, so no chunk carries half a character.
 */
export class IncrementalDecoder {
  private ids: number[] = [];
  private emitted = 0;

  constructor(private readonly tokenizer: TextTokenizer) {}

  push(newIds: readonly number[]): string {
    this.ids.push(...newIds);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith('\uFFFD')) return '';
    const delta = text.slice(this.emitted);
    this.emitted = text.length;
    return delta;
  }

  /** Whatever was held back, at the end of generation. */
  flush(): string {
    const text = this.tokenizer.decode(this.ids);
    const delta = text.slice(this.emitted);
    this.emitted = text.length;
    return delta;
  }
}

interface TokenizerJson {
  model?: { vocab?: Record<string, number> | Array<[string, number]> };
  added_tokens?: Array<{ content: string }>;
  pre_tokenizer?: { type?: string } | null;
  normalizer?: unknown;
}

/**
 * The UTF-8 length of the longest token string bounds the bytes a token
 * stands for: byte-level BPE writes each byte as one character of 1-2 UTF-8
 * bytes, SentencePiece writes a space as the 3-byte "▁" and byte fallbacks as
 * "<0xNN>", so the string is never shorter than what it decodes to. A
 * normalizer can shrink text before tokenizing (NFKC folds ligatures), so
 * with one the bound doubles, to stay on the side of accepting.
 */
function maxBytesPerToken(json: TokenizerJson): number {
  const vocab = json.model?.vocab;
  const tokens = Array.isArray(vocab) ? vocab.map(([token]) => token) : Object.keys(vocab ?? {});
  tokens.push(...(json.added_tokens ?? []).map((t) => t.content));
  const encoder = new TextEncoder();
  let longest = 1;
  for (const token of tokens) longest = Math.max(longest, encoder.encode(token).length);
  return json.normalizer ? 2 * longest : longest;
}
