import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { ApiError } from '../../shared/errors';
import { IncrementalDecoder, type TextTokenizer } from '../../shared/tokenizer';
import type { FinishReason } from '../speculation/loop';
import { completionChunk, type CompletionMeta } from './response';
import { StopMatcher } from './stop';

/** What a completion response is written from: the rounds of token ids a generation yields, and how to finish. */
export interface CompletionOutput {
  meta: CompletionMeta;
  prompt: readonly number[];
  /** The generation; its first round has already run (`first`), so failures before any output were clean errors. */
  rounds: AsyncGenerator<number[], FinishReason>;
  first: IteratorResult<number[], FinishReason>;
  tokenizer: TextTokenizer;
  stop: string[];
  returnTokenIds: boolean;
  includeUsageChunk: boolean;
  /** Fields of the final object (usage, speculation, ...) once `completionTokens` tokens were generated. */
  final(completionTokens: number): object;
  /** After a generation that completed (e.g. keep its prefix blocks). */
  onComplete(): void;
  /** Response headers, asked as late as possible: after generation for JSON, before the first byte for a stream. */
  headers(): Record<string, string>;
}

/** Text and token ids of each round, stop strings applied; returns why generation ended. */
async function* textRounds(out: CompletionOutput, generatedIds: number[]): AsyncGenerator<{ text: string; ids: number[] }, FinishReason> {
  const decoder = new IncrementalDecoder(out.tokenizer);
  const stopper = new StopMatcher(out.stop);
  for (let next = out.first; ; next = await out.rounds.next()) {
    if (next.done) {
      yield { text: stopper.push(decoder.flush()) + stopper.flush(), ids: [] };
      return next.value;
    }
    generatedIds.push(...next.value);
    yield { text: stopper.push(decoder.push(next.value)), ids: next.value };
    if (stopper.hasStopped) {
      await out.rounds.return('stop');
      return 'stop';
    }
  }
}

/** One `text_completion` object with the whole text. */
export async function completionJson(c: Context, out: CompletionOutput): Promise<Response> {
  const generatedIds: number[] = [];
  const pieces = textRounds(out, generatedIds);
  let text = '';
  let step = await pieces.next();
  for (; !step.done; step = await pieces.next()) text += step.value.text;
  const body = completionChunk(out.meta, text, step.value, out.final(generatedIds.length));
  if (out.returnTokenIds) Object.assign(body.choices[0], { prompt_token_ids: out.prompt, token_ids: generatedIds });
  out.onComplete();
  return c.json(body, 200, out.headers());
}

/** OpenAI's SSE chunks, the final one with finish_reason and the final fields, then `[DONE]`. */
export function completionStream(c: Context, out: CompletionOutput): Response {
  for (const [name, value] of Object.entries(out.headers())) c.header(name, value);
  return streamSSE(c, async (sse) => {
    const generatedIds: number[] = [];
    const pieces = textRounds(out, generatedIds);
    const send = (chunk: object) => sse.writeSSE({ data: JSON.stringify(chunk) });
    try {
      let step = await pieces.next();
      for (; !step.done; step = await pieces.next()) {
        const { text, ids } = step.value;
        const chunk = completionChunk(out.meta, text, null);
        if (out.returnTokenIds) Object.assign(chunk.choices[0], { token_ids: ids });
        if (text || (out.returnTokenIds && ids.length)) await send(chunk);
      }
      const final = out.final(generatedIds.length);
      await send(completionChunk(out.meta, '', step.value, final));
      if (out.includeUsageChunk) await send({ ...completionChunk(out.meta, '', null), choices: [], ...final });
      out.onComplete();
    } catch (err) {
      // Headers are sent: the failure can only travel in the stream, in OpenAI's error shape.
      const apiError = err instanceof ApiError ? err : new ApiError(502, `generation failed: ${(err as Error).message}`);
      await send(apiError.toBody());
    }
    await sse.writeSSE({ data: '[DONE]' });
  });
}
