import type { DecoderConfig } from './config';
import { emptyKvCache, type KvCache } from './kv-cache';
import type { OrtRuntime, OrtSession, OrtTensor } from './ort';

/** Logits for the positions just fed: `rows` rows of `vocabSize` values each. */
export interface ForwardResult {
  logits: Float32Array;
  rows: number;
  cache: KvCache;
}

/**
 * A decoder-only ONNX model in the Hugging Face Optimum layout with KV cache:
 * inputs input_ids, attention_mask, [position_ids], past_key_values.N.key/value,
 * [use_cache_branch] -> logits, present.N.key/value. `position_ids` and
 * `use_cache_branch` are optional because exports differ (merged decoders carry
 * the branch flag; some GPT-2 exports derive positions from the mask).
 */
export class CausalLM {
  private readonly hasPositionIds: boolean;
  private readonly hasCacheBranch: boolean;

  private constructor(
    private readonly ort: OrtRuntime,
    private readonly session: OrtSession,
    readonly config: DecoderConfig,
  ) {
    const inputs = new Set(session.inputNames);
    for (const name of ['input_ids', 'attention_mask']) {
      if (!inputs.has(name)) throw new Error(`ONNX model has no "${name}" input; expected the Optimum decoder layout`);
    }
    for (let i = 0; i < config.numLayers; i++) {
      if (!inputs.has(`past_key_values.${i}.key`)) {
        throw new Error(`ONNX model has no "past_key_values.${i}.key" input: export it with KV cache (config says ${config.numLayers} layers)`);
      }
    }
    if (!session.outputNames.includes('logits')) throw new Error('ONNX model has no "logits" output');
    this.hasPositionIds = inputs.has('position_ids');
    this.hasCacheBranch = inputs.has('use_cache_branch');
  }

  static async load(ort: OrtRuntime, modelBytes: Uint8Array, config: DecoderConfig, sessionOptions: Record<string, unknown> = {}): Promise<CausalLM> {
    const session = await ort.InferenceSession.create(modelBytes, {
      graphOptimizationLevel: 'all',
      ...sessionOptions,
    });
    return new CausalLM(ort, session, config);
  }

  emptyCache(): KvCache {
    return emptyKvCache(this.config.numLayers, this.config.numKvHeads, this.config.headDim);
  }

  /** Run `tokens` after the cached positions; returns their logits and the extended cache. */
  async forward(tokens: readonly number[], cache: KvCache): Promise<ForwardResult> {
    const n = tokens.length;
    if (n === 0) throw new RangeError('forward needs at least one token');
    const past = cache.length;
    const total = past + n;
    if (total > this.config.maxPositions) {
      throw new RangeError(`sequence of ${total} tokens exceeds the model context of ${this.config.maxPositions}`);
    }
    const { Tensor } = this.ort;
    const feeds: Record<string, OrtTensor> = {
      input_ids: new Tensor('int64', BigInt64Array.from(tokens, BigInt), [1, n]),
      attention_mask: new Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
    };
    if (this.hasPositionIds) {
      feeds.position_ids = new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(past + i)), [1, n]);
    }
    if (this.hasCacheBranch) feeds.use_cache_branch = new Tensor('bool', [past > 0], [1]);
    const { numKvHeads, headDim } = this.config;
    for (let i = 0; i < this.config.numLayers; i++) {
      feeds[`past_key_values.${i}.key`] = new Tensor('float32', cache.keys[i], [1, numKvHeads, past, headDim]);
      feeds[`past_key_values.${i}.value`] = new Tensor('float32', cache.values[i], [1, numKvHeads, past, headDim]);
    }
    const out = await this.session.run(feeds);
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    for (let i = 0; i < this.config.numLayers; i++) {
      keys.push(float32(out[`present.${i}.key`], `present.${i}.key`));
      values.push(float32(out[`present.${i}.value`], `present.${i}.value`));
    }
    const logits = float32(out.logits, 'logits');
    if (logits.length !== n * this.config.vocabSize) {
      throw new Error(`logits hold ${logits.length / n} values per token but config.json says vocab_size ${this.config.vocabSize}`);
    }
    return {
      logits,
      rows: n,
      cache: { length: total, numKvHeads, headDim, keys, values },
    };
  }
}

function float32(tensor: OrtTensor | undefined, name: string): Float32Array {
  if (!tensor) throw new Error(`ONNX model returned no "${name}"`);
  if (!(tensor.data instanceof Float32Array)) {
    throw new Error(`"${name}" is ${tensor.type}; edgespec runs float32 activations and KV (quantize weights, not the cache)`);
  }
  return tensor.data;
}

/** Row `row` of a [rows, vocab] logits block, without copying. */
export function logitsRow(result: ForwardResult, row: number, vocabSize: number): Float32Array {
  return result.logits.subarray(row * vocabSize, (row + 1) * vocabSize);
}
