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

/** Load a decoder from a model folder, preferring int8 weights for the draft and full precision for the target. */
export async function loadModel(
  ort: OrtRuntime,
  files: ModelFiles,
  prefer: Precision,
  sessionOptions: Record<string, unknown> = {},
): Promise<LoadedModel> {
  const config = parseDecoderConfig(await readJson(files, 'config.json'));
  const order = prefer === 'quantized' ? [...ONNX_FILES.quantized, ...ONNX_FILES.full] : [...ONNX_FILES.full, ...ONNX_FILES.quantized];
  for (const onnxPath of order) {
    const bytes = await files.read(onnxPath);
    if (bytes) return { lm: await CausalLM.load(ort, bytes, config, sessionOptions), config, onnxPath };
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
