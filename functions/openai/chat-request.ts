import { z } from 'zod';
import { ChatTemplateError, type ChatMessage } from '../../shared/chat-template';
import { ApiError } from '../../shared/errors';
import type { TenantLimits } from '../auth/tenants';
import type { DraftEngine } from '../draft/engine';
import { checkMaxTokens } from '../generation/plan';
import { promptTokens } from './prompt';
import { MAX_TOP_LOGPROBS } from '../../shared/sampling/logprobs';
import { completionRequestSchema, tokenBudget } from './request';

/**
 * POST /v1/chat/completions body: OpenAI's chat fields over the same field
 * definitions as completions (sampling, stop, stream, speculation, fallback,
 * prediction).
 * Text only: every field or content part edgespec does not implement (tools,
 * images, audio, JSON mode, ...) is a 400 naming it, never ignored;
 * only its neutral value (null, `n: 1`, `response_format: {type: "text"}`) passes.
 */
const shared = completionRequestSchema.shape;

const textPart = z.strictObject({
  type: z.literal('text', {
    error: (issue) => `${JSON.stringify(issue.input)} content parts are not supported: edgespec serves a text model; send {"type": "text", "text": ...} parts or a string`,
  }),
  text: z.string(),
});

/** A string or an array of text parts; a string is one part. The parts are joined with "\n" (as vLLM does) before the template sees them. */
const textContent = z.preprocess(
  (value) => (typeof value === 'string' ? [{ type: 'text', text: value }] : value),
  z.array(textPart, 'content must be a string or an array of {"type": "text", "text": ...} parts').min(1, 'content must not be an empty array'),
);

const refused = (message: string) => z.null(message).optional();

const message = z.strictObject({
  role: z.enum(['system', 'developer', 'user', 'assistant'], {
    error: (issue) => `role ${JSON.stringify(issue.input)} is not supported: one of system, developer, user, assistant (edgespec implements no tool or function calling)`,
  }),
  content: textContent,
  name: z.string().min(1).max(256).optional(),
  tool_calls: refused('tool_calls are not supported: edgespec implements no tool calling'),
  function_call: refused('function_call is not supported: edgespec implements no function calling'),
  tool_call_id: refused('tool_call_id is not supported: edgespec implements no tool calling'),
  audio: refused('audio is not supported: edgespec serves a text model'),
  refusal: refused('refusal is not supported'),
});

export const chatRequestSchema = z
  .strictObject({
    model: shared.model,
    messages: z.array(message).min(1, 'messages must not be empty'),
    /** OpenAI's current name for the budget; wins over the deprecated max_tokens. Both absent: see `chatMaxTokens`. */
    max_completion_tokens: tokenBudget.nullish(),
    max_tokens: tokenBudget.nullish(),
    temperature: shared.temperature,
    top_p: shared.top_p,
    top_k: shared.top_k,
    seed: shared.seed,
    stop: shared.stop,
    stream: shared.stream,
    stream_options: shared.stream_options,
    n: shared.n,
    frequency_penalty: shared.frequency_penalty,
    presence_penalty: shared.presence_penalty,
    user: shared.user,
    return_token_ids: shared.return_token_ids,
    fallback: shared.fallback,
    speculation: shared.speculation,
    prediction: shared.prediction,
    /** The target's raw log-probability of each token (README: Log-probabilities), with `top_logprobs` alternatives. */
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
    logit_bias: z
      .record(z.string(), z.number())
      .refine((bias) => Object.keys(bias).length === 0, 'logit_bias is not supported')
      .nullish(),
    response_format: z
      .strictObject({ type: z.literal('text', 'response_format: only {"type": "text"} is supported (no JSON mode or structured outputs)') })
      .nullish(),
    modalities: z.array(z.literal('text', 'only text output is supported')).nullish(),
    audio: refused('audio output is not supported: edgespec serves a text model'),
    tools: z.array(z.unknown()).max(0, 'tools are not supported: edgespec implements no tool calling').nullish(),
    tool_choice: z.literal('none', 'tool_choice is not supported: edgespec implements no tool calling').nullish(),
    parallel_tool_calls: refused('parallel_tool_calls is not supported: edgespec implements no tool calling'),
    functions: z.array(z.unknown()).max(0, 'functions are not supported: edgespec implements no function calling').nullish(),
    function_call: z.literal('none', 'function_call is not supported: edgespec implements no function calling').nullish(),
    web_search_options: refused('web_search_options is not supported'),
  })
  // OpenAI refuses alternatives without log-probabilities rather than ignoring them.
  .refine((r) => !r.top_logprobs || r.logprobs === true, { message: 'top_logprobs requires logprobs: true', path: ['top_logprobs'] });

export type ChatRequest = z.infer<typeof chatRequestSchema>;

/** How many alternatives the origin returns per token, or undefined for no log-probabilities. */
export function chatTopLogprobs(request: Pick<ChatRequest, 'logprobs' | 'top_logprobs'>): number | undefined {
  return request.logprobs ? (request.top_logprobs ?? 0) : undefined;
}

/** The joined text of a content value (always parts after parsing). */
export function contentText(parts: ReadonlyArray<{ text: string }>): string {
  return parts.map((p) => p.text).join('\n');
}

/**
 * The conversation as token ids: rendered with the model's chat template
 * (developer messages as system ones, the generation prompt appended), then
 * bounded and tokenized exactly like a completion prompt (413 when it cannot
 * fit, by bytes before tokenizing and by tokens after). Special tokens in the
 * rendered text become their ids, as in transformers.
 */
export function chatPromptTokens(messages: ChatRequest['messages'], engine: DraftEngine): number[] {
  if (!engine.chatTemplate) {
    throw new ApiError(
      400,
      "This model has no chat template (no 'chat_template' in its tokenizer_config.json, no chat_template.jinja), so it cannot serve /v1/chat/completions; use /v1/completions with a prompt.",
      'messages',
      'chat_template_missing',
    );
  }
  const conversation: ChatMessage[] = messages.map((m) => ({
    // OpenAI's developer messages are the newer name of system messages; Hugging Face templates know "system".
    role: m.role === 'developer' ? 'system' : m.role,
    content: contentText(m.content),
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
  let text: string;
  try {
    text = engine.chatTemplate.render(conversation, { addGenerationPrompt: true });
  } catch (err) {
    if (!(err instanceof ChatTemplateError)) throw err;
    throw new ApiError(400, `The model's chat template refused this conversation: ${err.message}`, 'messages', 'chat_template_error');
  }
  if (!text) throw new ApiError(400, "The model's chat template rendered this conversation as empty text.", 'messages', 'chat_template_error');
  // By bytes before tokenizing, then by tokens (so the 413 names `messages`, as the completions one names `prompt`).
  return promptTokens(promptTokens(text, engine, 'messages'), engine, 'messages');
}

/** The most tokens a chat request without max_completion_tokens / max_tokens generates (OpenAI's default is the whole context). */
export const DEFAULT_CHAT_MAX_TOKENS = 256;

/**
 * How many tokens to generate: max_completion_tokens, else max_tokens (an
 * explicit value above the tenant's cap is a 400 naming the field it came
 * in). Neither given: the room left in the draft's context, at most
 * DEFAULT_CHAT_MAX_TOKENS, within the tenant's cap.
 */
export function chatMaxTokens(request: Pick<ChatRequest, 'max_completion_tokens' | 'max_tokens'>, promptLength: number, engine: DraftEngine, limits: TenantLimits): number {
  const asked = request.max_completion_tokens ?? request.max_tokens;
  if (asked != null) {
    checkMaxTokens(asked, limits, request.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens');
    return asked;
  }
  return Math.max(1, Math.min(DEFAULT_CHAT_MAX_TOKENS, engine.config.maxPositions - promptLength, limits.maxTokens ?? Infinity));
}
