import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { authHeaders, createTenantKey, edgeUrl, originGreedy } from '../support/edge-client';
import { TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * The prefix cache end to end, in workerd: PrefixCache Durable Objects under
 * `wrangler dev` (SQLite storage), the real origin process, real HTTP. Each
 * test uses its own tenants (each a real tenant with its own API key, whose id
 * derives the cache salt), new per run, so state persisted by earlier runs
 * never makes a cold cache warm.
 */
const tenantKeys = new Map<string, Promise<string>>();
/** The API key of this run's tenant called `name`, created on first use. */
const tenant = (name: string) => name;
const keyOf = (name: string): Promise<string> => {
  if (!tenantKeys.has(name)) tenantKeys.set(name, createTenantKey().then((t) => t.key));
  return tenantKeys.get(name)!;
};
const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const B = 16; // PREFIX_CACHE_BLOCK_TOKENS in wrangler.toml
const maxTokens = 24;

interface Completion {
  tokens: number[];
  promptIds: number[];
  cached: number;
  originCached: number[];
}

async function complete(asTenant: string, prompt: string | number[], extra: Record<string, unknown> = {}): Promise<Completion> {
  const response = await fetch(`${edgeUrl()}/v1/completions`, {
    method: 'POST',
    headers: authHeaders(await keyOf(asTenant)),
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, return_token_ids: true, ...extra }),
  });
  const json: any = await response.json();
  expect(response.status, JSON.stringify(json)).toBe(200);
  // Speculative requests report the draft KV restored at the edge; origin-only ones the origin's target KV.
  const cachedAt = json.speculation.mode === 'origin' ? json.speculation.origin_cached_tokens[0] : json.speculation.prompt_cached_tokens;
  expect(json.usage.prompt_tokens_details.cached_tokens).toBe(cachedAt);
  return { tokens: json.choices[0].token_ids, promptIds: json.choices[0].prompt_token_ids, cached: json.usage.prompt_tokens_details.cached_tokens, originCached: json.speculation.origin_cached_tokens };
}

async function cacheOp(asTenant: string, body: Record<string, unknown>): Promise<any> {
  const response = await fetch(`${edgeUrl()}/internal/prefix-cache`, {
    method: 'POST',
    headers: authHeaders(await keyOf(asTenant)),
    body: JSON.stringify(body),
  });
  const json: any = await response.json();
  expect(response.status, JSON.stringify(json)).toBe(200);
  return json;
}

/** Blocks are stored after the response (waitUntil): wait until the first `count` blocks of `prompt` are there. */
async function storedBlocks(asTenant: string, prompt: number[], count: number): Promise<any> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const state = await cacheOp(asTenant, { action: 'inspect', prompt });
    if (state.present.slice(0, count).every(Boolean) || Date.now() > deadline) return state;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Full blocks the draft may restore: the prompt's last token always runs (its logits start the draft). */
const restorable = (promptLength: number) => Math.floor((promptLength - 1) / B) * B;

const prompts = heldOutPrompts(4, 900);

describe('prefix cache (PrefixCache Durable Object + origin target KV)', () => {
  it('misses cold, hits warm with the same tokens, and reuses target KV at the origin', async () => {
    const t = tenant('hit');
    const cold = await complete(t, prompts[0]);
    expect(cold.promptIds.length).toBeGreaterThan(5 * B);
    expect(cold.cached).toBe(0);
    expect(cold.originCached[0]).toBe(0);
    // Later rounds of one generation continue from the origin's live sequence.
    expect(cold.originCached.slice(1).every((n) => n >= cold.promptIds.length)).toBe(true);
    const state = await storedBlocks(t, cold.promptIds, Math.floor(cold.promptIds.length / B));
    // Prompt and generated text: every full block of what the draft ran.
    expect(state.blocks).toBeGreaterThanOrEqual(Math.floor(cold.promptIds.length / B));
    expect(state.alarm).toBeGreaterThan(Date.now());

    const warm = await complete(t, cold.promptIds);
    expect(warm.cached).toBe(restorable(cold.promptIds.length));
    expect(warm.originCached[0]).toBeGreaterThanOrEqual(warm.cached);
    expect(warm.tokens).toEqual(cold.tokens);
    expect(warm.tokens).toEqual(await originGreedy(cold.promptIds, maxTokens, eosIds));
  });

  it('hits the shared part of a prompt that diverges (partial prefix)', async () => {
    const t = tenant('partial');
    const first = await complete(t, prompts[1]);
    await storedBlocks(t, first.promptIds, Math.floor(first.promptIds.length / B));
    const shared = 3 * B + 5;
    const other = [...first.promptIds.slice(0, shared), ...first.promptIds.slice(shared).map((id) => (id + 1) % 4000)];
    const partial = await complete(t, other);
    expect(partial.cached).toBe(3 * B);
    expect(partial.tokens).toEqual(await originGreedy(other, maxTokens, eosIds));
  });

  it('isolates tenants: the same prompt under another salt misses at the edge and at the origin', async () => {
    const a = await complete(tenant('salt-a'), prompts[2]);
    await storedBlocks(tenant('salt-a'), a.promptIds, 2);
    expect((await complete(tenant('salt-a'), a.promptIds)).cached).toBeGreaterThan(0);
    const b = await complete(tenant('salt-b'), a.promptIds);
    expect(b.cached).toBe(0);
    expect(b.originCached[0]).toBe(0);
    expect(b.tokens).toEqual(a.tokens);
    // The other tenant's object view shows none of tenant a's blocks.
    expect((await cacheOp(tenant('salt-c'), { action: 'inspect', prompt: a.promptIds })).present.some(Boolean)).toBe(false);
  });

  it('treats a corrupted or truncated stored block as a miss from there on, then repairs it', async () => {
    const t = tenant('corrupt');
    const cold = await complete(t, prompts[3]);
    const blocks = Math.floor(cold.promptIds.length / B);
    await storedBlocks(t, cold.promptIds, blocks);
    expect((await cacheOp(t, { action: 'corrupt', prompt: cold.promptIds, block: 2 })).changed).toBe(true);
    const afterCorrupt = await complete(t, cold.promptIds);
    expect(afterCorrupt.cached).toBe(2 * B);
    expect(afterCorrupt.tokens).toEqual(cold.tokens);
    // The damaged row was dropped and the response stored a good one again.
    await storedBlocks(t, cold.promptIds, blocks);
    expect((await complete(t, cold.promptIds)).cached).toBe(restorable(cold.promptIds.length));

    expect((await cacheOp(t, { action: 'truncate', prompt: cold.promptIds, block: 1 })).changed).toBe(true);
    const afterTruncate = await complete(t, cold.promptIds);
    expect(afterTruncate.cached).toBe(B);
    expect(afterTruncate.tokens).toEqual(cold.tokens);
  });

  it('evicts least recently used blocks under a small byte budget, keeping chains from their head', async () => {
    const t = tenant('evict');
    const prompt = (await complete(t, `${prompts[0]}\n// evict`)).promptIds;
    const state = await storedBlocks(t, prompt, Math.floor(prompt.length / B));
    const blockBytes = state.block_bytes[0];
    expect(blockBytes).toBeGreaterThan(0);
    await cacheOp(t, { action: 'budget', prompt, max_bytes: 3 * blockBytes });
    const shrunk = await cacheOp(t, { action: 'inspect', prompt });
    expect(shrunk.bytes).toBeLessThanOrEqual(3 * blockBytes);
    expect(shrunk.present.slice(0, 3)).toEqual([true, true, true]);

    const again = await complete(t, prompt);
    expect(again.cached).toBe(3 * B);
    expect(again.tokens).toEqual(await originGreedy(prompt, maxTokens, eosIds));
    // Its store stays within the budget too.
    await new Promise((r) => setTimeout(r, 1000));
    expect((await cacheOp(t, { action: 'inspect', prompt })).bytes).toBeLessThanOrEqual(3 * blockBytes);
    await cacheOp(t, { action: 'budget', prompt, max_bytes: null });
  });

  it('schedules expiry by alarm and, by its rule, drops blocks unused for the TTL', async () => {
    const t = tenant('expire');
    const first = await complete(t, `${prompts[2]}\n// expire`);
    const state = await storedBlocks(t, first.promptIds, Math.floor(first.promptIds.length / B));
    expect(state.alarm).toBeGreaterThan(Date.now() + state.ttlMs / 2);
    // An hour-old block survives; one older than zero milliseconds (all of them) expires.
    expect((await cacheOp(t, { action: 'expire', prompt: first.promptIds, older_than_ms: 3_600_000 })).expired).toBe(0);
    expect((await cacheOp(t, { action: 'expire', prompt: first.promptIds, older_than_ms: 0 })).expired).toBe(state.blocks);
    const after = await complete(t, first.promptIds);
    expect(after.cached).toBe(0);
    expect(after.tokens).toEqual(first.tokens);
  });

  it('keeps one copy when two writers store the same prefix at once', async () => {
    const t = tenant('concurrent');
    const prompt = `${prompts[1]}\n// two writers`;
    const [a, b] = await Promise.all([complete(t, prompt), complete(t, prompt)]);
    expect(a.tokens).toEqual(b.tokens);
    const blocks = Math.floor(a.promptIds.length / B);
    await storedBlocks(t, a.promptIds, blocks);
    await new Promise((r) => setTimeout(r, 1000));
    const state = await cacheOp(t, { action: 'inspect', prompt: a.promptIds });
    const blockBytes = state.block_bytes[0];
    expect(state.bytes).toBe(state.blocks * blockBytes);
    expect(state.blocks).toBeLessThanOrEqual(Math.floor((a.promptIds.length + maxTokens) / B));
    const third = await complete(t, a.promptIds);
    expect(third.cached).toBe(restorable(a.promptIds.length));
    expect(third.tokens).toEqual(a.tokens);
  });

  it('gives greedy output identical to target-only decoding with a cold, a warm and a half-evicted cache', async () => {
    const t = tenant('identity');
    for (const text of prompts) {
      const cold = await complete(t, text);
      const reference = await originGreedy(cold.promptIds, maxTokens, eosIds);
      expect(cold.tokens).toEqual(reference);
      const blocks = Math.floor(cold.promptIds.length / B);
      await storedBlocks(t, cold.promptIds, blocks);
      const warm = await complete(t, cold.promptIds);
      expect(warm.cached).toBe(restorable(cold.promptIds.length));
      expect(warm.tokens).toEqual(reference);
      const half = Math.floor(blocks / 2);
      await cacheOp(t, { action: 'evict-from', prompt: cold.promptIds, from: half });
      const halfEvicted = await complete(t, cold.promptIds);
      expect(halfEvicted.cached).toBe(half * B);
      expect(halfEvicted.tokens).toEqual(reference);
    }
  });

  it('does not restore when speculation is off, and reports the origin cache instead', async () => {
    const t = tenant('origin-only');
    const first = await complete(t, prompts[2], { speculation: { draft_length: 0 } });
    const second = await complete(t, first.promptIds, { speculation: { draft_length: 0 } });
    expect(second.tokens).toEqual(first.tokens);
    expect(second.originCached[0]).toBeGreaterThan(0);
    expect(second.cached).toBe(second.originCached[0]);
  });
});
