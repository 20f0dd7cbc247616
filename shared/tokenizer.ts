import { Tokenizer } from '@huggingface/tokenizers';
import { readJson, type ModelFiles } from './model/load';

/** Text <-> token ids with a Hugging Face tokenizer.json, identical at the edge and in tests. */
export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
}

export async function loadTokenizer(files: ModelFiles): Promise<TextTokenizer> {
  const tokenizerJson = await readJson(files, 'tokenizer.json');
  const tokenizerConfig = (await files.read('tokenizer_config.json')) ? await readJson(files, 'tokenizer_config.json') : {};
  const tokenizer = new Tokenizer(tokenizerJson as object, tokenizerConfig as object);
  return {
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
