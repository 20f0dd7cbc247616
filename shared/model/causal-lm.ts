import type { DecoderConfig } from './config';
import { emptyKvCache, type KvCache } from './kv-cache';
import type { OrtRuntime, OrtSession, OrtTensor } from './ort';

/**
 * Logits for the positions just fed: `rows` rows of `lm.logitsWidth` values
 * each (the vocabulary size, unless the model's LM head is trimmed: then
 * column j is token `lm.tokenIds[j]`).
 */
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
  /** Values per logits row: config.vocabSize, or the number of kept tokens of a trimmed LM head. */
  readonly logitsWidth: number;

  private constructor(
    private readonly ort: OrtRuntime,
    private readonly session: OrtSession,
    readonly config: DecoderConfig,
    /**
     * A trimmed LM head (models/README.md: Trimmed drafts): logit column j is
     * token tokenIds[j], ids strictly ascending; tokens not listed have no
     * logit (probability 0). null = one column per token id.
     */
    readonly tokenIds: Int32Array | null = null,
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
    this.logitsWidth = tokenIds ? tokenIds.length : config.vocabSize;
  }

  static async load(
    ort: OrtRuntime,
    modelBytes: Uint8Array,
    config: DecoderConfig,
    sessionOptions: Record<string, unknown> = {},
    tokenIds: Int32Array | null = null,
  ): Promise<CausalLM> {
    const session = await ort.InferenceSession.create(modelBytes, {
      graphOptimizationLevel: 'all',
      ...sessionOptions,
    });
    return new CausalLM(ort, session, config, tokenIds);
  }

  /** The token id of logit column `column`. */
  tokenAt(column: number): number {
    return this.tokenIds ? this.tokenIds[column] : column;
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
    if (logits.length !== n * this.logitsWidth) {
      const expected = this.tokenIds ? `trimmed_vocab.json keeps ${this.logitsWidth} tokens` : `config.json says vocab_size ${this.config.vocabSize}`;
      throw new Error(`logits hold ${logits.length / n} values per token but ${expected}`);
    }
    return {
      logits,
      rows: n,
      cache: { length: total, numKvHeads, headDim, keys, values },
    };
  }

  /**
   * Several sequences in ONE `session.run` (continuous batching at the origin,
   * origin/queue.ts): row r runs `rows[r].tokens` after `rows[r].cache`, and
   * gets the same logits and extended cache as `forward` would give it alone
   * (within fp32 rounding: the batched GEMMs may sum in another order).
   * Rows may share one cache object (draft-tree paths over one prefix).
   *
   * Layout: past KV left-padded to the longest past P (mask 0 on the pad, so
   * no query sees it), new tokens right-padded to the longest row S (their
   * logits are ignored; the causal mask already hides them from the row's
   * real tokens, and mask 1 keeps every pad query attending to something).
   * position_ids are each row's own: past_r + i. The exported graph adds a
   * -1e9 bias where the mask is 0 (models/pipeline/llama.py), so padding
   * never produces NaN. Each row's present KV is cut back to its own
   * past_r + n_r positions.
   */
  async forwardBatch(rows: ReadonlyArray<{ tokens: readonly number[]; cache: KvCache }>): Promise<ForwardResult[]> {
    if (rows.length === 0) return [];
    if (rows.length === 1) return [await this.forward(rows[0].tokens, rows[0].cache)];
    const { numKvHeads, headDim, numLayers, maxPositions } = this.config;
    const width = this.logitsWidth;
    for (const [r, row] of rows.entries()) {
      if (row.tokens.length === 0) throw new RangeError(`forwardBatch row ${r} has no tokens`);
      if (row.cache.length + row.tokens.length > maxPositions) {
        throw new RangeError(`sequence of ${row.cache.length + row.tokens.length} tokens exceeds the model context of ${maxPositions}`);
      }
    }
    const b = rows.length;
    const P = Math.max(...rows.map((row) => row.cache.length));
    const S = Math.max(...rows.map((row) => row.tokens.length));
    const T = P + S;
    const ids = new BigInt64Array(b * S);
    const mask = new BigInt64Array(b * T);
    const positions = new BigInt64Array(b * S);
    for (const [r, { tokens, cache }] of rows.entries()) {
      const past = cache.length;
      for (let i = 0; i < S; i++) {
        ids[r * S + i] = BigInt(i < tokens.length ? tokens[i] : 0);
        // Pad positions run on past the row's end, clamped into the context (RoPE is computed, not looked up, but stay in range).
        positions[r * S + i] = BigInt(Math.min(past + i, maxPositions - 1));
      }
      mask.fill(1n, r * T + (P - past), (r + 1) * T);
    }
    const { Tensor } = this.ort;
    const feeds: Record<string, OrtTensor> = {
      input_ids: new Tensor('int64', ids, [b, S]),
      attention_mask: new Tensor('int64', mask, [b, T]),
    };
    if (this.hasPositionIds) feeds.position_ids = new Tensor('int64', positions, [b, S]);
    if (this.hasCacheBranch) feeds.use_cache_branch = new Tensor('bool', [P > 0], [1]);
    // One [b, heads, P, headDim] tensor per layer: each row's past right-aligned at P, zeros before it.
    const span = P * headDim;
    const padPast = (pick: (cache: KvCache) => Float32Array) => {
      const out = new Float32Array(b * numKvHeads * span);
      for (const [r, { cache }] of rows.entries()) {
        const past = cache.length;
        if (past === 0) continue;
        const src = pick(cache);
        for (let h = 0; h < numKvHeads; h++) {
          out.set(src.subarray(h * past * headDim, (h + 1) * past * headDim), (r * numKvHeads + h) * span + (P - past) * headDim);
        }
      }
      return out;
    };
    for (let i = 0; i < numLayers; i++) {
      feeds[`past_key_values.${i}.key`] = new Tensor('float32', padPast((c) => c.keys[i]), [b, numKvHeads, P, headDim]);
      feeds[`past_key_values.${i}.value`] = new Tensor('float32', padPast((c) => c.values[i]), [b, numKvHeads, P, headDim]);
    }
    const out = await this.session.run(feeds);
    const logits = float32(out.logits, 'logits');
    if (logits.length !== b * S * width) {
      throw new Error(`logits hold ${logits.length / (b * S)} values per token but the model has ${width} logits per row`);
    }
    const presentKeys = Array.from({ length: numLayers }, (_, i) => float32(out[`present.${i}.key`], `present.${i}.key`));
    const presentValues = Array.from({ length: numLayers }, (_, i) => float32(out[`present.${i}.value`], `present.${i}.value`));
    return rows.map(({ tokens, cache }, r) => {
      const past = cache.length;
      const n = tokens.length;
      const length = past + n;
      // Row r's own positions: [P - past, P + n) of its [heads, T, headDim] block.
      const own = (present: Float32Array) => {
        const kept = new Float32Array(numKvHeads * length * headDim);
        for (let h = 0; h < numKvHeads; h++) {
          const from = ((r * numKvHeads + h) * T + (P - past)) * headDim;
          kept.set(present.subarray(from, from + length * headDim), h * length * headDim);
        }
        return kept;
      };
      return {
        logits: logits.slice(r * S * width, (r * S + n) * width),
        rows: n,
        cache: { length, numKvHeads, headDim, keys: presentKeys.map(own), values: presentValues.map(own) },
      };
    });
  }
}

function float32(tensor: OrtTensor | undefined, name: string): Float32Array {
  if (!tensor) throw new Error(`ONNX model returned no "${name}"`);
  if (!(tensor.data instanceof Float32Array)) {
    throw new Error(`"${name}" is ${tensor.type}; edgespec runs float32 activations and KV (quantize weights, not the cache)`);
  }
  return tensor.data;
}

/**
 * Row `row` of a [rows, width] logits block, without copying. `width` is the
 * model's logitsWidth; a block of another width throws (a trimmed-vocabulary
 * draft read as if it had a full LM head, e.g. loaded as a target).
 */
export function logitsRow(result: ForwardResult, row: number, width: number): Float32Array {
  if (result.logits.length !== result.rows * width) {
    throw new RangeError(`logits hold ${result.logits.length / result.rows} values per row, not ${width}: a trimmed-vocabulary model is only a draft`);
  }
  return result.logits.subarray(row * width, (row + 1) * width);
}
