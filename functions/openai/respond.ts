import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { TextTokenizer } from '../../shared/tokenizer';
import type { EdgeContext } from '../context';
import type { Generation } from '../generation';
import { textRounds } from '../generation/text';
import { publicError } from './public-error';
import { newResponseMeta, responseObject, type ResponseShape } from './response';
import { recordJson, TokenDetailsReader, type DetailsDelta } from './token-details';

/**
 * The one response writer of every OpenAI endpoint (completions, chat): a
 * started generation in, OpenAI's JSON or SSE out. What differs between
 * endpoints is only the shape of a choice (`shape`, ./response.ts).
 */
export interface ResponseOutput {
  shape: ResponseShape;
  /** The model name the response reports. */
  model: string;
  generation: Generation;
  tokenizer: TextTokenizer;
  stop: string[];
  returnTokenIds: boolean;
  includeUsageChunk: boolean;
  /** `speculation.record`: what happened to each token and round. */
  record: boolean;
}

/** The fields of a parsed request (completions, chat) that decide how its response is written. */
export interface PresentationRequest {
  stream: boolean;
  stop: string[];
  return_token_ids?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  speculation?: { record?: boolean };
}

/** The response a parsed request asked for, under the deployment's model name: SSE when `stream`, else JSON. */
export function respond(c: EdgeContext, shape: ResponseShape, generation: Generation, request: PresentationRequest): Response | Promise<Response> {
  const out: ResponseOutput = {
    shape,
    model: c.var.config.modelId,
    generation,
    tokenizer: c.var.draftEngine.tokenizer,
    stop: request.stop,
    returnTokenIds: request.return_token_ids ?? false,
    includeUsageChunk: request.stream_options?.include_usage ?? false,
    record: request.speculation?.record ?? false,
  };
  return request.stream ? respondStream(c, out) : respondJson(c, out);
}

/** One response object with the whole text. */
export async function respondJson(c: Context, out: ResponseOutput): Promise<Response> {
  const { generation, shape } = out;
  const generatedIds: number[] = [];
  let completed = false;
  try {
    const pieces = textRounds(generation, out.tokenizer, out.stop, generatedIds);
    let text = '';
    let step = await pieces.next();
    for (; !step.done; step = await pieces.next()) text += step.value.text;
    const choice = shape.wholeChoice(text, step.value);
    const summary = generation.summary(generatedIds.length);
    const details = new TokenDetailsReader(generation.record, out.tokenizer);
    const delta = details.read();
    addLogprobs(out, choice, delta, details);
    if (out.record) Object.assign(summary.speculation, { record: recordJson(delta) });
    const body = responseObject(shape, newResponseMeta(shape, out.model), false, [choice], summary);
    if (out.returnTokenIds) {
      Object.assign(shape.promptTokenIdsIn === 'choice' ? choice : body, { prompt_token_ids: generation.prompt });
      Object.assign(choice, { token_ids: generatedIds });
    }
    completed = true;
    return c.json(body, 200, generation.headers());
  } finally {
    generation.finish({ completionTokens: generatedIds.length, completed });
  }
}

/** The choice's `logprobs` for these tokens, when the request asked for them (else the shape's null stays). */
function addLogprobs(out: ResponseOutput, choice: Record<string, unknown>, delta: DetailsDelta, reader: TokenDetailsReader): void {
  if (out.generation.record.wantLogprobs && delta.tokens.length) choice.logprobs = out.shape.logprobs(delta.tokens, reader);
}

/** OpenAI's SSE chunks (an opening one where the shape has it), the final one with finish_reason and the final fields, then `[DONE]`. */
export function respondStream(c: Context, out: ResponseOutput): Response {
  const { generation, shape } = out;
  const meta = newResponseMeta(shape, out.model);
  for (const [name, value] of Object.entries(generation.headers())) c.header(name, value);
  return streamSSE(c, async (sse) => {
    // The client closing the stream cancels the generation and every upstream call it has in flight.
    sse.onAbort(() => generation.cancel('client closed the stream'));
    const generatedIds: number[] = [];
    let completed = false;
    let clientGone = false;
    const send = (choices: Record<string, unknown>[], extra: object = {}) => sse.writeSSE({ data: JSON.stringify(responseObject(shape, meta, true, choices, extra)) });
    try {
      if (shape.openingChoice) {
        const prompt = out.returnTokenIds && shape.promptTokenIdsIn === 'response' ? { prompt_token_ids: generation.prompt } : {};
        await send([{ ...shape.openingChoice }], prompt);
      }
      const pieces = textRounds(generation, out.tokenizer, out.stop, generatedIds);
      const details = new TokenDetailsReader(generation.record, out.tokenizer);
      let step = await pieces.next();
      for (; !step.done; step = await pieces.next()) {
        const { text, ids } = step.value;
        const choice = shape.deltaChoice(text, null);
        if (out.returnTokenIds) Object.assign(choice, { token_ids: ids });
        // A round's details travel on the chunk of its text (which a held-back character or stop prefix may leave empty).
        const delta = details.read();
        addLogprobs(out, choice, delta, details);
        const extra = out.record ? { speculation_record: recordJson(delta) } : {};
        if (text || (out.returnTokenIds && ids.length) || delta.tokens.length) await send([choice], extra);
      }
      const summary = generation.summary(generatedIds.length);
      await send([shape.deltaChoice('', step.value)], summary);
      if (out.includeUsageChunk) await send([], summary);
      completed = true;
    } catch (err) {
      // Headers are sent: the failure can only travel in the stream, in OpenAI's error shape.
      clientGone = generation.signal.aborted;
      if (!clientGone) await sse.writeSSE({ data: JSON.stringify(publicError(err, c.get('requestId') ?? 'unknown').toBody()) });
    } finally {
      generation.finish({ completionTokens: generatedIds.length, completed });
    }
    if (!clientGone) await sse.writeSSE({ data: '[DONE]' });
  });
}
