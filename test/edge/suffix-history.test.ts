import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SuffixProposer } from '../../functions/proposers/suffix';
import { edgeUrl, originGreedy, originUrl, sleep } from '../support/edge-client';
import { DRAFT_DIR, loadFolderTokenizer, TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';
import { startIsolatePair, type IsolatePair } from '../support/second-isolate';

/**
 * The tenant's suffix history is durable and the tenant's own, across
 * isolates (functions/suffix-history): two more `wrangler dev` processes (two
 * workerd processes, so two isolates sharing no memory) run the test Worker;
 * edge B's SUFFIX_HISTORY (and RATE_LIMITER) bindings name edge A's Worker
 * (`script_name`), so wrangler's dev registry sends B's calls to A's objects:
 * one SuffixHistory namespace, as in a deployment. Both use one persistence
 * directory (one D1: the same tenants and keys; one R2: the draft model).
 *
 *   1. An output a tenant got through edge A drafts (accepted, greedy) for a
 *      repeat of the request through edge B, which never served the tenant;
 *      a fresh tenant's same request on B drafts nothing.
 *   2. Another tenant never gets a draft from it, on either edge.
 */

const edgePort = Number(new URL(edgeUrl()).port);
// Next to this run's own edge port (TEST_EDGE_PORT), so parallel runs on other ports never collide.
const ports: [number, number] = [Number(process.env.TEST_SUFFIX_ISOLATE_A_PORT ?? edgePort + 10), Number(process.env.TEST_SUFFIX_ISOLATE_B_PORT ?? edgePort + 11)];

const pairStart: Promise<IsolatePair> = startIsolatePair({ ports, originUrl: originUrl(), persistTo: `.wrangler/test-state-suffix-${ports[0]}`, draftDir: DRAFT_DIR, shared: ['SUFFIX_HISTORY', 'RATE_LIMITER'] });
pairStart.catch(() => {}); // reported by the tests that need it
afterAll(async () => {
  await (await pairStart.catch(() => null))?.stop();
});

async function complete(base: string, key: string, body: Record<string, unknown>): Promise<{ status: number; json: any }> {
  const response = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
  return { status: response.status, json: await response.json() };
}

/** The `suffix` proposer's stats of a response (zeros when it never drafted). */
const suffixStats = (json: any): { rounds: number; drafted: number; accepted: number } => json.speculation.proposers?.suffix ?? { rounds: 0, drafted: 0, accepted: 0 };

/** Steps of a greedy generation at which the request's own text (prompt + output so far) gives the suffix proposer a match. */
const selfMatchSteps = (prompt: number[], output: number[]) => output.filter((_, i) => new SuffixProposer(null).match([...prompt, ...output.slice(0, i)], 1) !== null).length;

const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const maxTokens = 32;
/** The held-out prompt whose greedy output the request's own text matches least: there a history makes the difference. */
let chosen: { promptIds: number[]; output: number[]; selfMatches: number };
/** Append after the response (`waitUntil`), then the object: give it time before the other isolate asks. */
const settle = () => sleep(1500);

beforeAll(async () => {
  const tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  for (const prompt of heldOutPrompts(24, 300)) {
    const promptIds = tokenizer.encode(prompt);
    const output = await originGreedy(promptIds, maxTokens, eosIds);
    const selfMatches = selfMatchSteps(promptIds, output);
    if (output.length === maxTokens && (!chosen || selfMatches < chosen.selfMatches)) chosen = { promptIds, output, selfMatches };
  }
  if (!chosen) throw new Error(`no held-out prompt has a greedy output of ${maxTokens} tokens`);
  console.log(`prompt chosen: its own text matches at ${chosen.selfMatches} of ${maxTokens} steps`);
});

describe("a tenant's suffix history across isolates (SuffixHistory Durable Object)", () => {
  it('an output written through one isolate becomes an accepted suffix draft in another', async () => {
    const pair = await pairStart;
    const owner = await pair.createTenantKey({});
    const fresh = await pair.createTenantKey({});
    const body = { prompt: chosen.promptIds, max_tokens: maxTokens, temperature: 0, return_token_ids: true };
    const first = await complete(pair.a.url, owner.key, { ...body, speculation: { proposer: 'draft-model', mode: 'lockstep', draft_length: 4 } });
    expect(first.status, JSON.stringify(first.json)).toBe(200);
    expect(first.json.choices[0].token_ids).toEqual(chosen.output);
    await settle();

    // Edge B has never served this tenant: its memory is empty, so the drafts come from A's output via the object.
    const speculation = { proposer: 'suffix', mode: 'lockstep', draft_length: 4 };
    const repeat = await complete(pair.b.url, owner.key, { ...body, speculation });
    expect(repeat.status, JSON.stringify(repeat.json)).toBe(200);
    expect(repeat.json.choices[0].token_ids).toEqual(chosen.output);
    const stats = suffixStats(repeat.json);
    console.log(`repeat on the other isolate: ${JSON.stringify(stats)} in ${repeat.json.speculation.rounds} verify rounds for ${chosen.output.length} tokens`);
    expect(stats.accepted).toBeGreaterThan(0);

    // The same request from a tenant with no history: only the request's own text can draft.
    const control = await complete(pair.b.url, fresh.key, { ...body, speculation });
    expect(control.status).toBe(200);
    expect(control.json.choices[0].token_ids).toEqual(chosen.output);
    console.log(`same request, a tenant without history: ${JSON.stringify(suffixStats(control.json))} in ${control.json.speculation.rounds} verify rounds`);
    if (chosen.selfMatches === 0) expect(suffixStats(control.json).drafted).toBe(0);
    expect(stats.accepted).toBeGreaterThan(suffixStats(control.json).accepted);
    expect(repeat.json.speculation.rounds).toBeLessThan(control.json.speculation.rounds);
  });

  it("another tenant never gets a draft from it, on either isolate", async () => {
    const pair = await pairStart;
    const owner = await pair.createTenantKey({});
    const other = await pair.createTenantKey({});
    const written = await complete(pair.a.url, owner.key, { prompt: chosen.promptIds, max_tokens: maxTokens, temperature: 0, return_token_ids: true, speculation: { proposer: 'draft-model' } });
    expect(written.status).toBe(200);
    const output: number[] = written.json.choices[0].token_ids;
    await settle();
    // A stretch of that output whose last 3 tokens occur nowhere earlier in it: only the owner's history can match.
    let cut = 8;
    while (cut < output.length && new SuffixProposer(null).match(output.slice(0, cut), 1) !== null) cut++;
    const prompt = output.slice(0, cut);
    expect(new SuffixProposer(null).match(prompt, 1)).toBeNull();
    // max_tokens 2: one verify round, at most one draft token.
    const body = { prompt, max_tokens: 2, temperature: 0, speculation: { proposer: 'suffix', draft_length: 4 } };
    // A holds the owner's output in memory; B fills the other tenant's index from the other tenant's own object.
    for (const base of [pair.a.url, pair.b.url]) {
      const theirs = await complete(base, other.key, body);
      expect(theirs.status, JSON.stringify(theirs.json)).toBe(200);
      expect(suffixStats(theirs.json).drafted).toBe(0);
    }
    // The prompt does match the owner's history, on the isolate that never served the owner too.
    const mine = await complete(pair.b.url, owner.key, body);
    expect(mine.status).toBe(200);
    expect(suffixStats(mine.json).drafted).toBe(1);
  });
});
