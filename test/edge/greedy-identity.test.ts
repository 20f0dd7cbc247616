import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { complete, originGreedy } from '../support/edge-client';
import { TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * Losslessness, exactly: at temperature 0 the edge's speculative output must be
 * token-for-token identical to origin-only greedy decoding of the same target,
 * for every draft length, on held-out prompts.
 */
const prompts = heldOutPrompts(20);
const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const maxTokens = 32;

describe('greedy speculative decoding is identical to target-only decoding', () => {
  for (const k of [1, 3, 4, 8]) {
    it(`k = ${k}, ${prompts.length} prompts`, async () => {
      let rounds = 0;
      let emitted = 0;
      for (const prompt of prompts) {
        const { status, json } = await complete({ prompt, max_tokens: maxTokens, temperature: 0, return_token_ids: true, speculation: { draft_length: k } });
        expect(status).toBe(200);
        const choice = json.choices[0];
        const reference = await originGreedy(choice.prompt_token_ids, maxTokens, eosIds);
        expect(choice.token_ids, `prompt ${JSON.stringify(prompt.slice(-40))}`).toEqual(reference);
        rounds += json.speculation.rounds;
        emitted += choice.token_ids.length;
      }
      // Speculation must actually be happening: fewer rounds than tokens whenever any draft is accepted.
      console.log(`k=${k}: ${emitted} tokens in ${rounds} rounds, mean accepted length ${(emitted / rounds).toFixed(2)}`);
      expect(rounds).toBeLessThan(emitted);
    });
  }
});
