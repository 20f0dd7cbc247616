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
  /** The bytes one token stands for (OpenAI's logprobs `bytes`): a token may be part of a UTF-8 character, which its text alone cannot show. */
  tokenBytes(id: number): Uint8Array;
}

export async function loadTokenizer(files: ModelFiles): Promise<TextTokenizer> {
  const tokenizerJson = await readJson(files, 'tokenizer.json');
  const tokenizerConfig = (await files.read('tokenizer_config.json')) ? await readJson(files, 'tokenizer_config.json') : {};
  const tokenizer = new Tokenizer(tokenizerJson as object, tokenizerConfig as object);
  return {
    maxBytesPerToken: maxBytesPerToken(tokenizerJson as TokenizerJson),
    // Special tokens stand for no text, as in `decode`: their bytes are empty.
    tokenBytes: tokenBytesOf(tokenizerJson as TokenizerJson, (id) => tokenizer.decode([id], { skip_special_tokens: true })),
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
  model?: { type?: string; vocab?: Record<string, number> | Array<[string, number]> };
  added_tokens?: Array<{ id?: number; content: string }>;
  pre_tokenizer?: { type?: string } | null;
  decoder?: { type?: string; decoders?: Array<{ type?: string }> } | null;
  normalizer?: unknown;
}

/**
 * id -> bytes from the vocabulary itself. Byte-level BPE (GPT-2, Llama 3, the
 * shipped models) writes each byte as one printable character (GPT-2's
 * bytes_to_unicode table), so the token string maps back to its exact bytes;
 * SentencePiece writes bytes as "<0xNN>" and spaces as "▁". Other tokenizers
 * (and added tokens): the UTF-8 of the token's decoded text.
 */
function tokenBytesOf(json: TokenizerJson, decodeOne: (id: number) => string): (id: number) => Uint8Array {
  const vocab = json.model?.vocab;
  const strings = new Map<number, string>(Array.isArray(vocab) ? vocab.map(([token], id) => [id, token] as [number, string]) : Object.entries(vocab ?? {}).map(([token, id]) => [id, token] as [number, string]));
  const added = new Set((json.added_tokens ?? []).flatMap((t) => (t.id === undefined ? [] : [t.id])));
  const decoders = [json.decoder?.type, ...(json.decoder?.decoders ?? []).map((d) => d.type)];
  const byteLevel = decoders.includes('ByteLevel') ? byteDecoder() : null;
  const encoder = new TextEncoder();
  return (id) => {
    const token = strings.get(id);
    if (token === undefined || added.has(id)) return encoder.encode(decodeOne(id));
    if (byteLevel) {
      const bytes = Array.from(token, (ch) => byteLevel.get(ch));
      if (bytes.every((b) => b !== undefined)) return Uint8Array.from(bytes as number[]);
    }
    const byteFallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    if (byteFallback) return Uint8Array.of(parseInt(byteFallback[1], 16));
    if (json.model?.type === 'Unigram' || decoders.includes('Metaspace') || decoders.includes('Replace')) return encoder.encode(token.replaceAll('\u2581', ' '));
    return encoder.encode(decodeOne(id));
  };
}

/** GPT-2's bytes_to_unicode, inverted: printable character -> byte. */
function byteDecoder(): Map<string, number> {
  const printable = [...range(0x21, 0x7e), ...range(0xa1, 0xac), ...range(0xae, 0xff)];
  const table = new Map<string, number>();
  for (const b of printable) table.set(String.fromCodePoint(b), b);
  let shifted = 0;
  for (let b = 0; b < 256; b++) if (!printable.includes(b)) table.set(String.fromCodePoint(256 + shifted++), b);
  return table;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
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
