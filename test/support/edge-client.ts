import { inject } from 'vitest';

/** Small helpers for talking to the edge Worker the globalSetup started. */
export const edgeUrl = () => inject('edgeUrl');
export const originUrl = () => inject('originUrl');

export interface CompletionBody {
  id: string;
  object: string;
  model: string;
  choices: Array<{ text: string; index: number; finish_reason: string | null; token_ids?: number[]; prompt_token_ids?: number[] }>;
  usage: {
    prompt_tokens: number;
    completion_tokens: number;
    total_tokens: number;
    prompt_tokens_details: { cached_tokens: number };
    completion_tokens_details: { accepted_prediction_tokens: number; rejected_prediction_tokens: number };
  };
  speculation: {
    mode: string;
    rounds: number;
    drafted: number;
    accepted: number;
    mean_accepted_length: number | null;
    draft_ms: number;
    verify_ms: number;
    origin: string | null;
  };
}

export async function complete(body: Record<string, unknown>): Promise<{ status: number; json: any; headers: Headers }> {
  const response = await fetch(`${edgeUrl()}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json(), headers: response.headers };
}

/** Parse an SSE body into its data payloads. */
export function sseData(text: string): string[] {
  return text
    .split('\n\n')
    .map((event) => event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n'))
    .filter(Boolean);
}

/** Origin-only greedy decoding straight from the origin: the reference output. */
export async function originGreedy(context: number[], maxTokens: number, stopTokenIds: number[] = []): Promise<number[]> {
  const response = await fetch(`${originUrl()}/v1/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ context, max_tokens: maxTokens, sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 }, stop_token_ids: stopTokenIds }),
  });
  if (!response.ok) throw new Error(`origin generate failed: ${response.status} ${await response.text()}`);
  return (await response.text())
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .flatMap((e) => (e.type === 'token' ? [e.token as number] : []));
}
