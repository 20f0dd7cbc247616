import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import { parseRequest, readJsonBody } from '../../shared/validation';
import { listJson, pageParams } from '../background/http';
import type { EdgeContext, EdgeEnv } from '../context';
import { completionRequestSchema } from '../openai/request';
import { ingestTriggerEvent } from '../triggers/ingest';
import { TriggerStore, triggerJson } from '../triggers/store';
import { MAX_TEMPLATE_CHARS, templateError } from '../triggers/template';
import { newTriggerSecret, TRIGGER_SCHEMES } from '../triggers/verify';
import { EndpointStore } from '../webhooks/endpoints';
import { isWebhookSecret } from '../webhooks/signing';

/**
 * Inbound triggers.
 *
 *   POST   /v1/triggers/:id/events   NO API key: the sender's signature authenticates (mounted before /v1/* auth)
 *                                    → 202 {job_id}; a replayed delivery → 200 {duplicate: true}; bad signature 401; unknown 404
 *   POST   /v1/triggers              {scheme, template, webhook_endpoint_id, params?, secret?, name?} → 201, with `secret` (this once)
 *   GET    /v1/triggers[?limit&after]
 *   GET    /v1/triggers/:id
 *   DELETE /v1/triggers/:id
 */
export const triggerEvents = new Hono<EdgeEnv>();

triggerEvents.post(
  '/v1/triggers/:id/events',
  (c, next) =>
    bodyLimit({
      maxSize: c.var.config.triggers.maxBodyBytes,
      onError: () => {
        throw new ApiError(413, `Event body is larger than ${Math.round(c.var.config.triggers.maxBodyBytes / 1024)} KiB.`, null, 'body_too_large');
      },
    })(c, next),
  async (c) => {
    const body = new Uint8Array(await c.req.arrayBuffer());
    const result = await ingestTriggerEvent(c.env, c.var.config, c.req.param('id'), c.req.raw.headers, body);
    if (result.status === 200 || result.status === 202) return c.json(result.body, result.status);
    throw new ApiError(result.status, result.message, null, result.code);
  },
);

export const triggers = new Hono<EdgeEnv>();

const secretText = z.string().min(8, 'secret has at least 8 characters').max(256).regex(/^[\x21-\x7e]+$/, 'secret is printable ASCII without spaces');
const createSchema = z
  .strictObject({
    scheme: z.enum(TRIGGER_SCHEMES),
    name: z.string().min(1).max(128).optional(),
    secret: secretText.optional(),
    template: z.string().min(1).max(MAX_TEMPLATE_CHARS),
    params: z.record(z.string(), z.unknown()).optional(),
    webhook_endpoint_id: z.string().min(1),
  })
  .refine((t) => t.scheme !== 'standard-webhooks' || t.secret === undefined || isWebhookSecret(t.secret), { message: 'a standard-webhooks secret is "whsec_" + base64 of 24 to 64 bytes', path: ['secret'] });

const baseUrl = (c: EdgeContext) => new URL(c.req.url).origin;

triggers.post('/v1/triggers', async (c) => {
  const request = parseRequest(createSchema, await readJsonBody(c.req.raw));
  const tenantId = c.var.caller.tenant.id;
  const params = request.params ?? {};
  for (const field of ['prompt', 'stream', 'stream_options'] as const) {
    if (field in params) throw new ApiError(400, `Invalid value for 'params.${field}': the prompt comes from the template, and a trigger's job is not streamed.`, `params.${field}`, 'invalid_value');
  }
  // The generation parameters must make a valid completion request once the template gives the prompt.
  parseRequest(completionRequestSchema, { ...params, prompt: 'x' });
  const parseError = templateError(request.template);
  if (parseError) throw new ApiError(400, `Invalid value for 'template': ${parseError}`, 'template', 'invalid_template');
  const endpoint = await new EndpointStore(c.env.DB).get(tenantId, request.webhook_endpoint_id);
  if (!endpoint || endpoint.inline) throw new ApiError(400, `No webhook endpoint with id '${request.webhook_endpoint_id}'.`, 'webhook_endpoint_id', 'webhook_endpoint_not_found');
  const secret = request.secret ?? newTriggerSecret(request.scheme);
  const row = await new TriggerStore(c.env.DB).create(tenantId, {
    name: request.name ?? null,
    scheme: request.scheme,
    secret,
    template: request.template,
    params: JSON.stringify(params),
    webhook_endpoint_id: endpoint.id,
  });
  return c.json({ ...triggerJson(row, baseUrl(c)), secret }, 201);
});

triggers.get('/v1/triggers', async (c) => {
  const { limit, after } = pageParams(c);
  const { rows, hasMore } = await new TriggerStore(c.env.DB).list(c.var.caller.tenant.id, limit, after);
  return c.json(listJson(rows.map((row) => triggerJson(row, baseUrl(c))), hasMore));
});

triggers.get('/v1/triggers/:id', async (c) => {
  const row = await new TriggerStore(c.env.DB).get(c.var.caller.tenant.id, c.req.param('id'));
  if (!row) throw new ApiError(404, `No trigger with id '${c.req.param('id')}'.`, 'id', 'trigger_not_found');
  return c.json(triggerJson(row, baseUrl(c)));
});

triggers.delete('/v1/triggers/:id', async (c) => {
  const deleted = await new TriggerStore(c.env.DB).delete(c.var.caller.tenant.id, c.req.param('id'));
  if (!deleted) throw new ApiError(404, `No trigger with id '${c.req.param('id')}'.`, 'id', 'trigger_not_found');
  return c.json({ id: c.req.param('id'), object: 'trigger', deleted: true });
});
