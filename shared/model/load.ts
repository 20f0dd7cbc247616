import { parseDecoderConfig, type DecoderConfig } from './config';
import { CausalLM } from './causal-lm';
import type { OrtRuntime } from './ort';

/** Where a model folder's files come from: the file system at the origin, an R2 bucket at the edge. */
export interface ModelFiles {
  /** Bytes of `path` (relative to the model folder), or null when absent. */
  read(path: string): Promise<Uint8Array | null>;
}

/**
 * ONNX file names in the order they are tried. Our pipeline writes
 * onnx/model.onnx and onnx/model_quantized.onnx; transformers.js / Optimum
 * exports use the same names or a merged decoder.
 */
const ONNX_FILES = {
  quantized: ['onnx/model_quantized.onnx', 'onnx/decoder_model_merged_quantized.onnx', 'model_quantized.onnx'],
  full: ['onnx/model.onnx', 'onnx/decoder_model_merged.onnx', 'model.onnx', 'decoder_model_merged.onnx'],
} as const;

export type Precision = 'quantized' | 'full';

export interface LoadedModel {
  lm: CausalLM;
  config: DecoderConfig;
  onnxPath: string;
}

/**
 * A trimmed draft's `trimmed_vocab.json` (models/pipeline/trim-vocab.ts): its
 * LM head keeps only `token_ids` (full ids, strictly ascending), so logit
 * column j is token token_ids[j]. Absent = a full LM head (standard exports).
 */
export const TRIMMED_VOCAB_FILE = 'trimmed_vocab.json';

/** The kept token ids of a trimmed_vocab.json, validated against the model's vocabulary. */
export function parseTrimmedVocab(json: unknown, vocabSize: number): Int32Array {
  const { token_ids: ids, vocab_size: declared } = (json ?? {}) as { token_ids?: unknown; vocab_size?: unknown };
  if (!Array.isArray(ids) || ids.length === 0) throw new Error(`${TRIMMED_VOCAB_FILE} has no "token_ids" list`);
  if (declared !== undefined && declared !== vocabSize) throw new Error(`${TRIMMED_VOCAB_FILE} was made for vocab_size ${declared}, config.json says ${vocabSize}`);
  const out = new Int32Array(ids.length);
  for (let j = 0; j < ids.length; j++) {
    const id = ids[j];
    // Ascending ids make the lowest-column tie rule (argmax, top-k) the lowest-token-id rule of an untrimmed head.
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize || (j > 0 && id <= out[j - 1])) {
      throw new Error(`${TRIMMED_VOCAB_FILE}: token_ids[${j}] = ${JSON.stringify(id)}; ids must be strictly ascending integers below vocab_size ${vocabSize}`);
    }
    out[j] = id;
  }
  return out;
}

/** Load a decoder from a model folder, preferring int8 weights for the draft and full precision for the target. */
export async function loadModel(
  ort: OrtRuntime,
  files: ModelFiles,
  prefer: Precision,
  sessionOptions: Record<string, unknown> = {},
): Promise<LoadedModel> {
  const config = parseDecoderConfig(await readJson(files, 'config.json'));
  const trimmed = await files.read(TRIMMED_VOCAB_FILE);
  const tokenIds = trimmed ? parseTrimmedVocab(await readJson(files, TRIMMED_VOCAB_FILE), config.vocabSize) : null;
  const order = prefer === 'quantized' ? [...ONNX_FILES.quantized, ...ONNX_FILES.full] : [...ONNX_FILES.full, ...ONNX_FILES.quantized];
  for (const onnxPath of order) {
    const bytes = await files.read(onnxPath);
    if (bytes) return { lm: await CausalLM.load(ort, bytes, config, sessionOptions, tokenIds), config, onnxPath };
  }
  throw new Error(`model folder has no ONNX decoder (looked for ${order.join(', ')})`);
}

export async function readJson(files: ModelFiles, path: string): Promise<unknown> {
  const bytes = await files.read(path);
  if (!bytes) throw new Error(`model folder has no ${path}`);
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}
