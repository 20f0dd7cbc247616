import { describe, expect, it } from 'vitest';
import { parseDecoderConfig } from '../../shared/model';

describe('parseDecoderConfig', () => {
  it('reads Llama-style keys with grouped-query attention and explicit head_dim', () => {
    const config = parseDecoderConfig({
      model_type: 'llama', vocab_size: 4096, hidden_size: 256, num_hidden_layers: 4,
      num_attention_heads: 8, num_key_value_heads: 2, head_dim: 48, max_position_embeddings: 1024,
      eos_token_id: [0, 2], bos_token_id: 0,
    });
    expect(config).toEqual({ vocabSize: 4096, numLayers: 4, numHeads: 8, numKvHeads: 2, headDim: 48, maxPositions: 1024, eosTokenIds: [0, 2], bosTokenId: 0 });
  });

  it('reads GPT-2-style keys and derives head_dim and kv heads', () => {
    const config = parseDecoderConfig({ vocab_size: 50257, n_layer: 2, n_head: 4, n_embd: 128, n_positions: 512, eos_token_id: 50256 });
    expect(config).toMatchObject({ numLayers: 2, numHeads: 4, numKvHeads: 4, headDim: 32, maxPositions: 512, eosTokenIds: [50256], bosTokenId: null });
  });

  it.each([
    ['no vocab_size', { n_layer: 2, n_head: 4, n_embd: 128, n_positions: 512 }, /vocab_size/],
    ['no layers', { vocab_size: 10, n_head: 4, n_embd: 128, n_positions: 512 }, /num_hidden_layers/],
    ['heads not dividing hidden size', { vocab_size: 10, n_layer: 1, n_head: 3, n_embd: 128, n_positions: 512 }, /head_dim/],
    ['kv heads not dividing heads', { vocab_size: 10, num_hidden_layers: 1, num_attention_heads: 8, num_key_value_heads: 3, hidden_size: 64, max_position_embeddings: 8 }, /multiple/],
    ['not an object', 'hello', /not a decoder config/],
  ])('explains what is wrong: %s', (_name, json, message) => {
    expect(() => parseDecoderConfig(json)).toThrow(message);
  });
});
