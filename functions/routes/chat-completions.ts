import { Hono } from 'hono';
import { parseRequest, readJsonBody } from '../../shared/validation';
import type { EdgeEnv } from '../context';
import { generationDeps, startGeneration } from '../generation';
import { chatTopLogprobs, chatMaxTokens, chatPromptTokens, chatRequestSchema } from '../openai/chat-request';
import { chatShape } from '../openai/chat-response';
import { checkModel, predictionTokens } from '../openai/request';
import { respond } from '../openai/respond';

/**
 * POST /v1/chat/completions: parse, render the conversation with the model's
 * chat template, tokenize, run the same generation pipeline as completions,
 * write OpenAI's chat response (JSON, or `chat.completion.chunk` SSE).
 */
export const chatCompletions = new Hono<EdgeEnv>();

chatCompletions.post('/v1/chat/completions', async (c) => {
  const { config, draftEngine, caller } = c.var;
  const request = parseRequest(chatRequestSchema, await readJsonBody(c.req.raw));
  checkModel(request.model, config.modelId);
  const prompt = chatPromptTokens(request.messages, draftEngine);
  const { temperature, top_p, top_k, seed } = request;
  const generation = await startGeneration(generationDeps(c), {
    prompt,
    maxTokens: chatMaxTokens(request, prompt.length, draftEngine, caller.tenant.limits),
    sampling: { temperature, top_p, top_k, seed },
    speculation: request.speculation,
    fallback: request.fallback,
    prediction: predictionTokens(request.prediction, draftEngine),
    logprobs: chatTopLogprobs(request),
  });
  return respond(c, chatShape, generation, request);
});
