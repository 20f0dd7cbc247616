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

/** Every mode and verification rule, each with the draft lengths that stress it (README: Speculation modes). */
const cases: Array<{ name: string; speculation: Record<string, unknown> }> = [
  ...[1, 3, 4, 8].map((k) => ({ name: `lockstep k = ${k}`, speculation: { mode: 'lockstep', draft_length: k } })),
  { name: 'lockstep k = 4, block verification', speculation: { mode: 'lockstep', draft_length: 4, method: 'block' } },
  // Multi-path drafts: each round a tree (the path and the draft's runner-ups where it was least sure), over the session.
  { name: 'lockstep k = 4, 3 alternatives (multi-path drafts)', speculation: { mode: 'lockstep', draft_length: 4, branches: 3 } },
  { name: 'lockstep k = 4, 3 alternatives continued by the draft, block verification', speculation: { mode: 'lockstep', draft_length: 4, branches: 3, branch_length: 4, method: 'block' } },
  { name: 'pipelined k = 3, depth 2', speculation: { mode: 'pipelined', draft_length: 3, depth: 2 } },
  { name: 'pipelined k = 1, depth 4', speculation: { mode: 'pipelined', draft_length: 1, depth: 4 } },
  { name: 'adaptive (may hand over to the origin mid-generation)', speculation: { mode: 'adaptive', draft_length: 8 } },
  { name: 'branch-ahead k = 4 (next blocks drafted while verdicts are on the wire)', speculation: { mode: 'branch-ahead', draft_length: 4 } },
  // The test origin hosts the draft too (scripts/stack.ts): the same loop runs next to the target.
  { name: 'placement origin, k = 4', speculation: { placement: 'origin', draft_length: 4 } },
  { name: 'placement auto, adaptive (the deployed default)', speculation: { mode: 'adaptive', placement: 'auto', draft_length: 8 } },
  { name: 'placement origin, k = 3, block verification', speculation: { placement: 'origin', draft_length: 3, method: 'block' } },
];

describe('greedy speculative decoding is identical to target-only decoding', () => {
  for (const { name, speculation } of cases) {
    it(`${name}, ${prompts.length} prompts`, async () => {
      let rounds = 0;
      let emitted = 0;
      let branchHits = 0;
      let branchTaken = 0;
      for (const prompt of prompts) {
        const { status, json } = await complete({ prompt, max_tokens: maxTokens, temperature: 0, return_token_ids: true, speculation });
        expect(status).toBe(200);
        const choice = json.choices[0];
        const reference = await originGreedy(choice.prompt_token_ids, maxTokens, eosIds);
        expect(choice.token_ids, `prompt ${JSON.stringify(prompt.slice(-40))}`).toEqual(reference);
        rounds += json.speculation.rounds;
        if (speculation.mode === 'branch-ahead') branchHits += json.speculation.branch_ahead.hits;
        if (speculation.branches) branchTaken += json.speculation.tree.branch_taken;
        emitted += choice.token_ids.length;
      }
      // Speculation must actually be happening: fewer rounds than tokens whenever any draft is accepted.
      console.log(`${name}: ${emitted} tokens in ${rounds} rounds, mean accepted length ${(emitted / rounds).toFixed(2)}`);
      // The adaptive controller may rightly decode everything at the origin on a slow machine.
      if (speculation.mode !== 'adaptive') expect(rounds).toBeLessThan(emitted);
      // Rounds sent from a drafted branch happened, so the identity covers them.
      if (speculation.mode === 'branch-ahead') expect(branchHits).toBeGreaterThan(0);
      // Rounds decided through an alternative happened, so the identity covers them.
      if (speculation.branches) expect(branchTaken).toBeGreaterThan(0);
    });
  }
});
