import { Hono } from 'hono';
import { ApiError } from '../../shared/errors';
import { parseRequest, readJsonBody } from '../../shared/validation';
import type { EdgeEnv } from '../context';
import { generationDeps, startGeneration } from '../generation';
import { promptTokens } from '../openai/prompt';
import { completionRequestSchema } from '../openai/request';
import { completionJson, completionStream } from '../openai/respond';
import { newCompletionMeta } from '../openai/response';

/** POST /v1/completions: parse, tokenize, run the generation pipeline, write OpenAI's response. */
export const completions = new Hono<EdgeEnv>();

completions.post('/v1/completions', async (c) => {
  const { config, draftEngine } = c.var;
  const request = parseRequest(completionRequestSchema, await readJsonBody(c.req.raw));
  if (request.model && request.model !== config.modelId) {
    throw new ApiError(404, `The model '${request.model}' does not exist; this deployment serves '${config.modelId}'.`, 'model', 'model_not_found');
  }
  const generation = await startGeneration(generationDeps(c), {
    prompt: promptTokens(request.prompt, draftEngine),
    maxTokens: request.max_tokens,
    sampling: { temperature: request.temperature, top_p: request.top_p, top_k: request.top_k, seed: request.seed },
    speculation: request.speculation,
    fallback: request.fallback,
  });
  const output = {
    meta: newCompletionMeta(config.modelId),
    generation,
    tokenizer: draftEngine.tokenizer,
    stop: request.stop,
    returnTokenIds: request.return_token_ids ?? false,
    includeUsageChunk: request.stream_options?.include_usage ?? false,
  };
  return request.stream ? completionStream(c, output) : completionJson(c, output);
});
