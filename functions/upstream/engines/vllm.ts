import { originFetch, readJsonReply } from '../client';
import { formatError, type EngineScorer, type ScoredPositions } from './scored';

/**
 * vLLM's OpenAI-compatible `POST /v1/completions` as a verifier: the prompt
 * is a list of token ids, `prompt_logprobs: N` returns for every prompt
 * position a {token_id: {logprob, rank, decoded_token}} map (the top N plus
 * the prompt's own token; entry 0 is null), and the one generated token's
 * `logprobs.top_logprobs[0]` (keys "token_id:<id>" with
 * `return_tokens_as_token_ids`) is the distribution after the whole draft.
 * Costs to know: prompt_logprobs covers the whole prompt every round (the
 * response grows with the context), vLLM caps N at --max-logprobs (20 by
 * default), and vLLM has served prompt_logprobs requests without its prefix
 * cache, re-running the prefix each round (ARCHITECTURE.md: Verify protocol,
 * "Engines as origins").
 * Contract-tested against fixtures in test/origin/engines.
 */
export interface VllmOptions {
  id: string;
  baseUrl: string;
  timeoutMs: number;
  /** The served model name (`--served-model-name`). */
  model: string;
  /** Bearer token for vLLM's --api-key, when set. */
  apiKey?: string;
}

interface VllmCompletionResponse {
  choices?: Array<{
    prompt_logprobs?: Array<Record<string, { logprob: number; rank?: number | null }> | null>;
    logprobs?: { tokens?: string[]; top_logprobs?: Array<Record<string, number> | null> } | null;
  }>;
  usage?: { prompt_tokens_details?: { cached_tokens?: number } | null };
}

export function vllmRequest(model: string, context: readonly number[], draftTokens: readonly number[], topN: number) {
  return {
    model,
    prompt: [...context, ...draftTokens],
    max_tokens: 1,
    temperature: 0,
    ignore_eos: true,
    prompt_logprobs: topN,
    logprobs: topN,
    return_tokens_as_token_ids: true,
  };
}

export function parseVllmResponse(id: string, body: unknown, context: readonly number[], draftTokens: readonly number[]): ScoredPositions {
  const choice = (body as VllmCompletionResponse)?.choices?.[0];
  const promptLogprobs = choice?.prompt_logprobs;
  const total = context.length + draftTokens.length;
  if (!Array.isArray(promptLogprobs) || promptLogprobs.length !== total) {
    throw formatError('vllm', id, `choices[0].prompt_logprobs must have one entry per prompt token (${total}), got ${Array.isArray(promptLogprobs) ? promptLogprobs.length : typeof promptLogprobs}`);
  }
  const rows: Array<Array<[number, number]>> = [];
  for (let j = 0; j < draftTokens.length; j++) {
    const at = context.length + j;
    const entry = promptLogprobs[at];
    if (!entry || typeof entry !== 'object') throw formatError('vllm', id, `prompt_logprobs[${at}] is empty`);
    if (!(String(draftTokens[j]) in entry)) throw formatError('vllm', id, `prompt_logprobs[${at}] does not include the prompt's own token ${draftTokens[j]}`);
    rows.push(
      Object.entries(entry).map(([token, value]) => {
        if (!/^\d+$/.test(token) || typeof value?.logprob !== 'number') throw formatError('vllm', id, `prompt_logprobs[${at}] holds an entry that is not "<token id>": {"logprob": <number>}`);
        return [Number(token), value.logprob] as [number, number];
      }),
    );
  }
  const top = choice?.logprobs?.top_logprobs?.[0];
  if (!top || typeof top !== 'object') throw formatError('vllm', id, 'choices[0].logprobs.top_logprobs[0] is missing (send logprobs with the request)');
  rows.push(
    Object.entries(top).map(([key, logprob]) => {
      const match = /^token_id:(\d+)$/.exec(key);
      if (!match || typeof logprob !== 'number') throw formatError('vllm', id, 'logprobs.top_logprobs[0] holds an entry that is not "token_id:<id>": <logprob> (send return_tokens_as_token_ids)');
      return [Number(match[1]), logprob] as [number, number];
    }),
  );
  return { rows, cachedTokens: (body as VllmCompletionResponse).usage?.prompt_tokens_details?.cached_tokens ?? 0 };
}

export class VllmScorer implements EngineScorer {
  readonly kind = 'vllm';
  readonly healthPath = '/health';

  constructor(private readonly options: VllmOptions) {}

  async score(context: readonly number[], draftTokens: readonly number[], topN: number, signal?: AbortSignal): Promise<ScoredPositions> {
    const { id, baseUrl, timeoutMs, apiKey, model } = this.options;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (apiKey) headers.authorization = `Bearer ${apiKey}`;
    const body = JSON.stringify(vllmRequest(model, context, draftTokens, topN));
    const response = await originFetch(id, `${baseUrl}/v1/completions`, { method: 'POST', headers, body }, timeoutMs, signal);
    return parseVllmResponse(id, await readJsonReply(id, response, '/v1/completions', signal), context, draftTokens);
  }
}
