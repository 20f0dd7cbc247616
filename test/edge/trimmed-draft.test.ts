import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdge, type EdgeService } from '../../scripts/stack';
import { api, originGreedy, originUrl } from '../support/edge-client';
import { TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * The vocabulary-trimmed draft (models/edgespec-draft-trimmed, the deployed default: wrangler.toml DRAFT_MODEL) in
 * workerd: a Worker of its own loads it from local R2 with its trimmed_vocab.json, on the shared origin. Greedy
 * speculation at the edge stays token-for-token the target's, with drafts over the kept ids accepted; a sampled
 * request's q travels as full token ids the origin accepts. Its logits, id mapping and in-process greedy identity:
 * test/models/trimmed-vocab.test.ts.
 */
const TRIMMED_DIR = 'models/edgespec-draft-trimmed';
const port = Number(process.env.TEST_TRIMMED_EDGE_PORT ?? 18799);
const prompts = heldOutPrompts(10);
const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const maxTokens = 32;

let edge: EdgeService;

beforeAll(async () => {
  edge = await startEdge({ port, originUrl: originUrl(), persistTo: `.wrangler/test-state-${port}`, draftDir: TRIMMED_DIR, tenant: { name: `trimmed-${Date.now()}` } });
});
afterAll(() => edge?.stop());

const complete = (body: Record<string, unknown>) => api('POST', '/v1/completions', body, edge.apiKey, {}, edge.url);

describe('the trimmed draft in workerd', () => {
  it('greedy, drafting at the edge: identical to target-only decoding, with accepted drafts', async () => {
    let drafted = 0;
    let accepted = 0;
    for (const prompt of prompts) {
      const { status, json } = await complete({ prompt, max_tokens: maxTokens, temperature: 0, return_token_ids: true, speculation: { mode: 'lockstep', placement: 'edge', proposer: 'draft-model', draft_length: 4 } });
      expect(status, JSON.stringify(json)).toBe(200);
      const choice = json.choices[0];
      expect(choice.token_ids, `prompt ${JSON.stringify(prompt.slice(-40))}`).toEqual(await originGreedy(choice.prompt_token_ids, maxTokens, eosIds));
      drafted += json.speculation.drafted;
      accepted += json.speculation.accepted;
    }
    console.log(`trimmed draft in workerd, greedy: ${accepted} of ${drafted} drafted tokens accepted`);
    expect(drafted).toBeGreaterThan(0);
    // The shipped pair accepts about 70-85% greedy; a broken id mapping accepts next to nothing.
    expect(accepted / drafted).toBeGreaterThan(0.4);
  });

  it('sampled: q over the kept ids crosses the wire as full ids, and the origin verifies it', async () => {
    const { status, json } = await complete({ prompt: prompts[0], max_tokens: maxTokens, temperature: 0.8, seed: 5, speculation: { mode: 'lockstep', placement: 'edge', proposer: 'draft-model', draft_length: 4 } });
    expect(status, JSON.stringify(json)).toBe(200);
    expect(json.speculation.drafted).toBeGreaterThan(0);
    expect(json.speculation.accepted).toBeGreaterThan(0);
  });
});
