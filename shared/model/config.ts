import { z } from 'zod';

/**
 * The shape facts the runtime needs from a decoder's `config.json`.
 * Accepts Llama-style keys (what our training pipeline and most Hugging Face
 * exports write) and GPT-2-style keys (n_layer, n_head, n_embd, n_positions).
 */
export interface DecoderConfig {
  vocabSize: number;
  numLayers: number;
  numHeads: number;
  /** Grouped-query attention: K/V heads may be fewer than query heads. */
  numKvHeads: number;
  headDim: number;
  maxPositions: number;
  eosTokenIds: number[];
  bosTokenId: number | null;
}

const positiveInt = z.number().int().positive();
const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]);

const rawConfigSchema = z.looseObject({
  vocab_size: positiveInt,
  num_hidden_layers: positiveInt.optional(),
  n_layer: positiveInt.optional(),
  num_attention_heads: positiveInt.optional(),
  n_head: positiveInt.optional(),
  num_key_value_heads: positiveInt.optional(),
  hidden_size: positiveInt.optional(),
  n_embd: positiveInt.optional(),
  head_dim: positiveInt.optional(),
  max_position_embeddings: positiveInt.optional(),
  n_positions: positiveInt.optional(),
  eos_token_id: tokenIds.nullish(),
  bos_token_id: tokenIds.nullish(),
});

export function parseDecoderConfig(json: unknown): DecoderConfig {
  const parsed = rawConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new Error(`config.json is not a decoder config: ${z.prettifyError(parsed.error)}`);
  }
  const c = parsed.data;
  const numLayers = c.num_hidden_layers ?? c.n_layer;
  const numHeads = c.num_attention_heads ?? c.n_head;
  const hiddenSize = c.hidden_size ?? c.n_embd;
  const maxPositions = c.max_position_embeddings ?? c.n_positions;
  if (!numLayers || !numHeads || !maxPositions) {
    throw new Error('config.json lacks num_hidden_layers, num_attention_heads or max_position_embeddings');
  }
  const headDim = c.head_dim ?? (hiddenSize ? hiddenSize / numHeads : undefined);
  if (!headDim || !Number.isInteger(headDim)) {
    throw new Error('config.json lacks head_dim and hidden_size is not a multiple of num_attention_heads');
  }
  const numKvHeads = c.num_key_value_heads ?? numHeads;
  if (numHeads % numKvHeads !== 0) {
    throw new Error(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  const asList = (v: number | number[] | null | undefined) => (v == null ? [] : Array.isArray(v) ? v : [v]);
  return {
    vocabSize: c.vocab_size,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    maxPositions,
    eosTokenIds: asList(c.eos_token_id),
    bosTokenId: asList(c.bos_token_id)[0] ?? null,
  };
}
