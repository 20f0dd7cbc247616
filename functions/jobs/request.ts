import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import { parseRequest } from '../../shared/validation';
import { completionRequestSchema, type CompletionRequest } from '../openai/request';
import { EVENT_TYPES } from '../webhooks/event-types';
import { isWebhookSecret } from '../webhooks/signing';

/**
 * POST /v1/jobs body: a completion request (the /v1/completions schema,
 * without streaming) plus where its events go and the caller's metadata.
 *
 *   webhook: "whe_…"                         a registered endpoint of the tenant
 *          | {"url", "secret"?, "event_types"?}  an inline endpoint for this job alone
 *                                            (the secret is generated and returned once when not given)
 *   metadata: {string: string}               at most 16 pairs, keys ≤ 64, values ≤ 512 characters
 */
export const metadataSchema = z
  .record(z.string().min(1).max(64, 'metadata keys have at most 64 characters'), z.string().max(512, 'metadata values have at most 512 characters'))
  .refine((m) => Object.keys(m).length <= 16, 'metadata has at most 16 keys');

export const eventTypesSchema = z.array(z.enum(EVENT_TYPES)).min(1).max(EVENT_TYPES.length).transform((types) => [...new Set(types)]);

const webhookSchema = z.union([
  z.string().regex(/^whe_[0-9a-f]{24}$/, 'webhook must be a webhook endpoint id (whe_…) or {"url": …}'),
  z.strictObject({
    url: z.string().min(1).max(2048),
    secret: z.string().refine(isWebhookSecret, 'secret must be "whsec_" + base64 of 24 to 64 bytes').optional(),
    event_types: eventTypesSchema.optional(),
  }),
]);

export type JobWebhook = z.infer<typeof webhookSchema>;

export interface JobRequest {
  completion: CompletionRequest;
  /** The completion fields as sent (what the consumer parses again). */
  completionBody: Record<string, unknown>;
  webhook: JobWebhook | null;
  metadata: Record<string, string> | null;
}

export function parseJobRequest(body: unknown): JobRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError(400, 'The body must be a JSON object: a completion request plus optional "webhook" and "metadata".', null, 'invalid_value');
  const { webhook, metadata, ...completionBody } = body as Record<string, unknown>;
  const completion = parseRequest(completionRequestSchema, completionBody);
  if (completion.stream) throw new ApiError(400, "Invalid value for 'stream': a job is not streamed; its result is in GET /v1/jobs/{id} and its webhook.", 'stream', 'invalid_value');
  if (completion.stream_options) throw new ApiError(400, "Invalid value for 'stream_options': a job is not streamed.", 'stream_options', 'invalid_value');
  // A job's result keeps the text, usage and speculation stats; per-token details are not stored, so they are refused, not dropped.
  if (completion.logprobs != null) throw new ApiError(400, "Invalid value for 'logprobs': a job's result does not keep per-token log-probabilities; use /v1/completions.", 'logprobs', 'invalid_value');
  if (completion.speculation?.record) throw new ApiError(400, "Invalid value for 'speculation.record': a job's result does not keep the per-token record; use /v1/completions.", 'speculation.record', 'invalid_value');
  const parsedWebhook = webhook === undefined || webhook === null ? null : parseField('webhook', webhookSchema, webhook);
  const parsedMetadata = metadata === undefined || metadata === null ? null : parseField('metadata', metadataSchema, metadata);
  return { completion, completionBody, webhook: parsedWebhook, metadata: parsedMetadata };
}

function parseField<S extends z.ZodType>(name: string, schema: S, value: unknown): z.infer<S> {
  return parseRequest(z.object({ [name]: schema }), { [name]: value })[name] as z.infer<S>;
}

/** JSON with object keys sorted: equal bodies hash equal however their keys were ordered. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Idempotency-Key: 1-255 printable ASCII characters. */
export function idempotencyKey(header: string | undefined): string | null {
  if (header === undefined) return null;
  if (!/^[\x21-\x7e]{1,255}$/.test(header)) throw new ApiError(400, 'Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.', 'Idempotency-Key', 'invalid_idempotency_key');
  return header;
}
