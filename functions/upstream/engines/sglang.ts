import { originFetch, readJsonReply } from '../client';
import { formatError, type EngineScorer, type ScoredPositions } from './scored';

/**
 * SGLang's native `POST /generate` as a verifier (documented request fields:
 * `input_ids`, `sampling_params`, `return_logprob`, `logprob_start_len`,
 * `top_logprobs_num`; response `meta_info.input_top_logprobs` /
 * `output_top_logprobs` as [logprob, token_id, text] triples).
 *
 * Position bookkeeping, from SGLang's scheduler: with logprob_start_len = s the
 * input entries cover input_ids[s..], entry j scoring input_ids[s + j] from the
 * positions before it, and entry 0 is always null (SGLang pads it). So s =
 * context.length − 1 makes entries 1..k the distributions each draft token was
 * drawn against, and the one generated token's output_top_logprobs[0] is the
 * distribution after the whole draft (bonus). Every token before s is left to
 * SGLang's radix cache: only the new tokens are recomputed each round.
 * Contract-tested against fixtures in test/origin/engines.
 */
export interface SglangOptions {
  id: string;
  baseUrl: string;
  timeoutMs: number;
  /** Bearer token for SGLang's --api-key, when set. */
  apiKey?: string;
}

type Triple = [number | null, number, string | null];

interface SglangGenerateResponse {
  meta_info?: {
    cached_tokens?: number;
    input_token_logprobs?: Triple[];
    input_top_logprobs?: Array<Triple[] | null>;
    output_token_logprobs?: Triple[];
    output_top_logprobs?: Array<Triple[] | null>;
  };
}

export function sglangRequest(context: readonly number[], draftTokens: readonly number[], topN: number) {
  return {
    input_ids: [...context, ...draftTokens],
    // Greedy, one token, never stopped early by EOS: only the log-probabilities are used.
    sampling_params: { max_new_tokens: 1, temperature: 0, ignore_eos: true },
    return_logprob: true,
    logprob_start_len: context.length - 1,
    top_logprobs_num: topN,
    return_text_in_logprobs: false,
    stream: false,
  };
}

export function parseSglangResponse(id: string, body: unknown, context: readonly number[], draftTokens: readonly number[]): ScoredPositions {
  const meta = (body as SglangGenerateResponse)?.meta_info;
  const k = draftTokens.length;
  const inputTop = meta?.input_top_logprobs;
  const inputTokens = meta?.input_token_logprobs;
  const outputTop = meta?.output_top_logprobs?.[0];
  if (!Array.isArray(inputTop) || inputTop.length !== k + 1) {
    throw formatError('sglang', id, `meta_info.input_top_logprobs must have k + 1 = ${k + 1} entries (logprob_start_len = context length − 1), got ${Array.isArray(inputTop) ? inputTop.length : typeof inputTop}`);
  }
  // The scored input must be the one we sent: entry j names input_ids[s + j].
  const expected = [context[context.length - 1], ...draftTokens];
  if (Array.isArray(inputTokens) && inputTokens.some((t, j) => t?.[1] !== expected[j])) {
    throw formatError('sglang', id, 'meta_info.input_token_logprobs does not name the tokens that were sent');
  }
  if (!Array.isArray(outputTop) || outputTop.length === 0) throw formatError('sglang', id, 'meta_info.output_top_logprobs[0] is missing');
  const rows: Array<Array<[number, number]>> = [];
  for (let j = 1; j <= k; j++) rows.push(tripleRow(id, inputTop[j], `input_top_logprobs[${j}]`));
  rows.push(tripleRow(id, outputTop, 'output_top_logprobs[0]'));
  return { rows, cachedTokens: meta?.cached_tokens ?? 0 };
}

function tripleRow(id: string, entries: Triple[] | null | undefined, where: string): Array<[number, number]> {
  if (!Array.isArray(entries) || entries.length === 0) throw formatError('sglang', id, `${where} is empty`);
  return entries.map((e) => {
    if (!Array.isArray(e) || typeof e[0] !== 'number' || !Number.isInteger(e[1]) || e[1] < 0) throw formatError('sglang', id, `${where} holds an entry that is not [logprob, token_id, text]`);
    return [e[1], e[0]];
  });
}

export class SglangScorer implements EngineScorer {
  readonly kind = 'sglang';
  readonly healthPath = '/health';

  constructor(private readonly options: SglangOptions) {}

  async score(context: readonly number[], draftTokens: readonly number[], topN: number, signal?: AbortSignal): Promise<ScoredPositions> {
    const { id, baseUrl, timeoutMs, apiKey } = this.options;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (apiKey) headers.authorization = `Bearer ${apiKey}`;
    const body = JSON.stringify(sglangRequest(context, draftTokens, topN));
    const response = await originFetch(id, `${baseUrl}/generate`, { method: 'POST', headers, body }, timeoutMs, signal);
    return parseSglangResponse(id, await readJsonReply(id, response, '/generate', signal), context, draftTokens);
  }
}
