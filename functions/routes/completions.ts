import { Hono } from 'hono';
import { parseRequest, readJsonBody } from '../../shared/validation';
import type { EdgeEnv } from '../context';
import { generationDeps, startGeneration } from '../generation';
import { promptTokens } from '../openai/prompt';
import { checkModel, completionRequestSchema, predictionTokens } from '../openai/request';
import { respond } from '../openai/respond';
import { completionShape } from '../openai/response';

/** POST /v1/completions: parse, tokenize, run the generation pipeline, write OpenAI's response. */
export const completions = new Hono<EdgeEnv>();

completions.post('/v1/completions', async (c) => {
  const { config, draftEngine } = c.var;
  const request = parseRequest(completionRequestSchema, await readJsonBody(c.req.raw));
  checkModel(request.model, config.modelId);
  const generation = await startGeneration(generationDeps(c), {
    prompt: promptTokens(request.prompt, draftEngine),
    maxTokens: request.max_tokens,
    sampling: { temperature: request.temperature, top_p: request.top_p, top_k: request.top_k, seed: request.seed },
    speculation: request.speculation,
    fallback: request.fallback,
    prediction: predictionTokens(request.prediction, draftEngine),
    logprobs: request.logprobs ?? undefined,
  });
  return respond(c, completionShape, generation, request);
});
