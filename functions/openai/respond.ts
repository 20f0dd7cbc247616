import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { TextTokenizer } from '../../shared/tokenizer';
import type { Generation } from '../generation';
import { textRounds } from '../generation/text';
import { publicError } from './public-error';
import { completionChunk, type CompletionMeta } from './response';

/** What a completion response is written from: a started generation, and how to present it. */
export interface CompletionOutput {
  meta: CompletionMeta;
  generation: Generation;
  tokenizer: TextTokenizer;
  stop: string[];
  returnTokenIds: boolean;
  includeUsageChunk: boolean;
}

/** One `text_completion` object with the whole text. */
export async function completionJson(c: Context, out: CompletionOutput): Promise<Response> {
  const { generation } = out;
  const generatedIds: number[] = [];
  let completed = false;
  try {
    const pieces = textRounds(generation, out.tokenizer, out.stop, generatedIds);
    let text = '';
    let step = await pieces.next();
    for (; !step.done; step = await pieces.next()) text += step.value.text;
    const body = completionChunk(out.meta, text, step.value, generation.summary(generatedIds.length));
    if (out.returnTokenIds) Object.assign(body.choices[0], { prompt_token_ids: generation.prompt, token_ids: generatedIds });
    completed = true;
    return c.json(body, 200, generation.headers());
  } finally {
    generation.finish({ completionTokens: generatedIds.length, completed });
  }
}

/** OpenAI's SSE chunks, the final one with finish_reason and the final fields, then `[DONE]`. */
export function completionStream(c: Context, out: CompletionOutput): Response {
  const { generation } = out;
  for (const [name, value] of Object.entries(generation.headers())) c.header(name, value);
  return streamSSE(c, async (sse) => {
    // The client closing the stream cancels the generation and every upstream call it has in flight.
    sse.onAbort(() => generation.cancel('client closed the stream'));
    const generatedIds: number[] = [];
    let completed = false;
    let clientGone = false;
    const send = (chunk: object) => sse.writeSSE({ data: JSON.stringify(chunk) });
    try {
      const pieces = textRounds(generation, out.tokenizer, out.stop, generatedIds);
      let step = await pieces.next();
      for (; !step.done; step = await pieces.next()) {
        const { text, ids } = step.value;
        const chunk = completionChunk(out.meta, text, null);
        if (out.returnTokenIds) Object.assign(chunk.choices[0], { token_ids: ids });
        if (text || (out.returnTokenIds && ids.length)) await send(chunk);
      }
      const summary = generation.summary(generatedIds.length);
      await send(completionChunk(out.meta, '', step.value, summary));
      if (out.includeUsageChunk) await send({ ...completionChunk(out.meta, '', null), choices: [], ...summary });
      completed = true;
    } catch (err) {
      // Headers are sent: the failure can only travel in the stream, in OpenAI's error shape.
      clientGone = generation.signal.aborted;
      if (!clientGone) await send(publicError(err, c.get('requestId') ?? 'unknown').toBody());
    } finally {
      generation.finish({ completionTokens: generatedIds.length, completed });
    }
    if (!clientGone) await sse.writeSSE({ data: '[DONE]' });
  });
}
