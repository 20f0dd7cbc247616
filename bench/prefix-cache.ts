import { readFileSync } from 'node:fs';
import { loadFolderTokenizer } from '../test/support/models';
import { heldOutPrompts } from '../test/support/prompts';
import type { BenchRecord } from './records';
import type { EdgeService } from '../scripts/stack';
import { postJson, streamCompletion, type EdgeTarget } from './sse';

/**
 * Prefix cache: time to first token and edge time for a prompt near the
 * model's context length, cold vs warm, interleaved in one run. Each repeat is
 * its own tenant with its own API key (the tenant id derives the cache salt),
 * so its cold request misses both the edge's PrefixCache object and the
 * origin's target KV; its warm request shares the long prefix and differs in
 * the last `tailTokens` tokens (a shared system prompt or conversation history
 * with a new question). Needs the test Worker (startEdge's default) for
 * /internal/prefix-cache, to read bytes stored.
 */
export interface PrefixCacheOptions {
  /** The edge, and the admin API to create one tenant (and key) per repeat. */
  edge: Pick<EdgeService, 'url' | 'createTenantKey'>;
  draftDir: string;
  repeats: number;
  maxTokens: number;
  /** Tokens after the shared prefix that differ between cold and warm requests. */
  tailTokens: number;
  log: (line: string) => void;
}

interface Run {
  ttftMs: number;
  wallMs: number;
  tokens: number;
  rounds: number;
  drafted: number;
  accepted: number;
  draftMs: number;
  verifyMs: number;
  cachedTokens: number;
  originCachedFirst: number;
}

export async function prefixCacheSuite(options: PrefixCacheOptions): Promise<BenchRecord[]> {
  const config = JSON.parse(readFileSync(`${options.draftDir}/config.json`, 'utf8'));
  const tokenizer = await loadFolderTokenizer(options.draftDir);
  const corpus = tokenizer.encode(heldOutPrompts(39, 4000).join('\n'));
  // Near the context: leave room for the generated tokens and one verify round's draft.
  const promptTokens = config.max_position_embeddings - options.maxTokens - 8;
  const shared = promptTokens - options.tailTokens;
  if (corpus.length < promptTokens + options.tailTokens * 2 * options.repeats) throw new Error(`held-out prompts give ${corpus.length} tokens, need more`);
  const tail = (i: number) => corpus.slice(promptTokens + i * options.tailTokens, promptTokens + (i + 1) * options.tailTokens);
  const run = crypto.randomUUID().slice(0, 8);

  const cold: Run[] = [];
  const warm: Run[] = [];
  let bytesPerToken = 0;
  let blockBytes = 0;
  for (let r = 0; r < options.repeats; r++) {
    const tenant: EdgeTarget = { url: options.edge.url, apiKey: (await options.edge.createTenantKey({}, `bench-${run}-${r}`)).key };
    const prefix = corpus.slice(r, r + shared); // a different prefix per repeat, too
    const first = [...prefix, ...tail(2 * r)];
    cold.push(await streamOnce(tenant, { prompt: first, max_tokens: options.maxTokens, temperature: 0 }));
    const stored = await waitForBlocks(tenant, first, shared);
    bytesPerToken = stored.bytes / (stored.blocks * stored.block_tokens);
    blockBytes = stored.block_bytes[0];
    warm.push(await streamOnce(tenant, { prompt: [...prefix, ...tail(2 * r + 1)], max_tokens: options.maxTokens, temperature: 0 }));
    options.log(`  repeat ${r + 1}/${options.repeats}: TTFT cold ${Math.round(cold[r].ttftMs)} ms, warm ${Math.round(warm[r].ttftMs)} ms (${warm[r].cachedTokens}/${promptTokens} prompt tokens cached at the edge, ${warm[r].originCachedFirst} at the origin)`);
  }

  const coldTtft = median(cold.map((x) => x.ttftMs));
  const records = [
    { mode: 'cold', runs: cold },
    { mode: 'warm', runs: warm },
  ].map(({ mode, runs }): BenchRecord => {
    const sum = (f: (x: Run) => number) => runs.reduce((a, x) => a + f(x), 0);
    const ttft = median(runs.map((x) => x.ttftMs));
    return {
      suite: 'prefix-cache',
      mode,
      rtt_ms: 0,
      tokens_per_s: round((sum((x) => x.tokens) / sum((x) => x.wallMs)) * 1000),
      ttft_ms: round(ttft),
      target_passes_per_token: round(sum((x) => x.rounds) / sum((x) => x.tokens)),
      mean_accepted: round(sum((x) => x.tokens) / sum((x) => x.rounds)),
      draft_ms_per_token: round(sum((x) => x.draftMs) / Math.max(1, sum((x) => x.drafted))),
      origin_cost: 'measured',
      prompt_tokens: promptTokens,
      cached_tokens: round(sum((x) => x.cachedTokens) / runs.length),
      origin_cached_tokens: round(sum((x) => x.originCachedFirst) / runs.length),
      // Time spent in the Worker outside origin calls (wall clock of workerd under wrangler dev): restore + draft.
      edge_ms: round(median(runs.map((x) => x.wallMs - x.verifyMs))),
      draft_ms: round(median(runs.map((x) => x.draftMs))),
      ttft_speedup: round(coldTtft / ttft),
      bytes_per_cached_token: round(bytesPerToken),
      block_bytes: blockBytes,
      repeats: runs.length,
    };
  });
  options.log(`  TTFT cold ${records[0].ttft_ms} ms, warm ${records[1].ttft_ms} ms: ${records[1].ttft_speedup}x; edge ${records[0].edge_ms} -> ${records[1].edge_ms} ms; ${records[1].bytes_per_cached_token} bytes per cached token`);
  return records;
}

async function streamOnce(tenant: EdgeTarget, body: Record<string, unknown>): Promise<Run> {
  const { ttftMs, wallMs, last } = await streamCompletion(tenant, body);
  const s = last.speculation;
  return {
    ttftMs,
    wallMs,
    tokens: last.usage.completion_tokens,
    rounds: s.target_passes ?? s.rounds,
    drafted: s.drafted,
    accepted: s.accepted,
    draftMs: s.draft_ms,
    verifyMs: s.verify_ms,
    cachedTokens: last.usage.prompt_tokens_details.cached_tokens,
    originCachedFirst: s.origin_cached_tokens?.[0] ?? 0,
  };
}

/** Blocks are stored after the response (waitUntil): poll the object until the prefix's blocks are there. */
async function waitForBlocks(tenant: EdgeTarget, prompt: number[], sharedTokens: number): Promise<any> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const response = await postJson(tenant, '/internal/prefix-cache', { action: 'inspect', prompt });
    if (!response.ok) throw new Error(`/internal/prefix-cache answered ${response.status} (is this the test Worker?): ${await response.text()}`);
    const state: any = await response.json();
    const blocks = Math.floor(sharedTokens / state.block_tokens);
    if (state.present.slice(0, blocks).every(Boolean)) return state;
    if (Date.now() > deadline) throw new Error(`prefix blocks were not stored within 30 s (${state.present.filter(Boolean).length}/${blocks})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (v: number) => Math.round(v * 100) / 100;
