import { Hono } from 'hono';
import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import { parseRequest, readJsonBody } from '../../shared/validation';
import { listJson, pageParams } from '../background/http';
import type { EdgeContext, EdgeEnv } from '../context';
import { eventTypesSchema } from '../jobs/request';
import { EndpointStore, endpointJson, type EndpointRow } from '../webhooks/endpoints';
import { replayEvents } from '../webhooks/events';
import { checkWebhookUrl } from '../webhooks/ssrf';

/**
 * Webhook endpoints of the caller's tenant (API key):
 *
 *   POST   /v1/webhook_endpoints                 {url, event_types?, description?}  → 201, with `secret` (this once)
 *   GET    /v1/webhook_endpoints[?limit&after]
 *   GET    /v1/webhook_endpoints/:id             enabled, disabled_reason, failing_since, …
 *   PATCH  /v1/webhook_endpoints/:id             {url?, event_types?, description?, enabled?}
 *   DELETE /v1/webhook_endpoints/:id
 *   POST   /v1/webhook_endpoints/:id/rotate_secret  {overlap_seconds?}  → the new `secret` (this once); the old one co-signs until the overlap ends
 *   POST   /v1/webhook_endpoints/:id/replay      {since, until?, only_failed?}  re-send events of that time range
 *
 * Every URL passes the SSRF guard (functions/webhooks/ssrf.ts) here and again at each send.
 */
export const webhookEndpoints = new Hono<EdgeEnv>();

const description = z.string().max(256).nullable();
const createSchema = z.strictObject({ url: z.string().min(1).max(2048), event_types: eventTypesSchema.optional(), description: description.optional() });
const patchSchema = z.strictObject({ url: z.string().min(1).max(2048).optional(), event_types: eventTypesSchema.optional(), description: description.optional(), enabled: z.boolean().optional() });
const rotateSchema = z.strictObject({ overlap_seconds: z.number().int().min(0).max(7 * 86_400).optional() });
/** Unix seconds or an ISO 8601 date. */
const instant = z.union([z.number().int().nonnegative().transform((s) => s * 1000), z.iso.datetime({ offset: true }).transform((d) => Date.parse(d))]);
const replaySchema = z.strictObject({ since: instant, until: instant.optional(), only_failed: z.boolean().optional() });

function checkedUrl(c: EdgeContext, url: string): string {
  const check = checkWebhookUrl(url, { allowHttpLoopback: c.var.config.webhooks.allowHttpLoopback });
  if (!check.ok) throw new ApiError(400, `Invalid value for 'url': ${check.reason}.`, 'url', 'webhook_url_refused');
  return check.url.href;
}

async function optionalJson(c: EdgeContext): Promise<unknown> {
  const text = await c.req.raw.clone().text();
  return text.trim() ? readJsonBody(c.req.raw) : {};
}

async function endpointOr404(c: EdgeContext): Promise<EndpointRow> {
  const endpoint = await new EndpointStore(c.env.DB).get(c.var.caller.tenant.id, c.req.param('id')!);
  if (!endpoint) throw new ApiError(404, `No webhook endpoint with id '${c.req.param('id')}'.`, 'id', 'webhook_endpoint_not_found');
  return endpoint;
}

webhookEndpoints.post('/v1/webhook_endpoints', async (c) => {
  const request = parseRequest(createSchema, await readJsonBody(c.req.raw));
  const row = await new EndpointStore(c.env.DB).create(c.var.caller.tenant.id, { url: checkedUrl(c, request.url), eventTypes: request.event_types, description: request.description });
  return c.json({ ...endpointJson(row), secret: row.secret }, 201);
});

webhookEndpoints.get('/v1/webhook_endpoints', async (c) => {
  const { limit, after } = pageParams(c);
  const { rows, hasMore } = await new EndpointStore(c.env.DB).list(c.var.caller.tenant.id, limit, after);
  return c.json(listJson(rows.map((row) => endpointJson(row)), hasMore));
});

webhookEndpoints.get('/v1/webhook_endpoints/:id', async (c) => c.json(endpointJson(await endpointOr404(c))));

webhookEndpoints.patch('/v1/webhook_endpoints/:id', async (c) => {
  const request = parseRequest(patchSchema, await readJsonBody(c.req.raw));
  const endpoint = await endpointOr404(c);
  const updated = await new EndpointStore(c.env.DB).update(endpoint.tenant_id, endpoint.id, {
    url: request.url === undefined ? undefined : checkedUrl(c, request.url),
    eventTypes: request.event_types,
    description: request.description,
    enabled: request.enabled,
  });
  if (!updated) throw new ApiError(404, `No webhook endpoint with id '${endpoint.id}'.`, 'id', 'webhook_endpoint_not_found');
  return c.json(endpointJson(updated));
});

webhookEndpoints.delete('/v1/webhook_endpoints/:id', async (c) => {
  const endpoint = await endpointOr404(c);
  await new EndpointStore(c.env.DB).delete(endpoint.tenant_id, endpoint.id);
  return c.json({ id: endpoint.id, object: 'webhook_endpoint', deleted: true });
});

webhookEndpoints.post('/v1/webhook_endpoints/:id/rotate_secret', async (c) => {
  const request = parseRequest(rotateSchema, await optionalJson(c));
  const endpoint = await endpointOr404(c);
  const overlapMs = request.overlap_seconds === undefined ? c.var.config.webhooks.rotationOverlapMs : request.overlap_seconds * 1000;
  const rotated = await new EndpointStore(c.env.DB).rotate(endpoint.tenant_id, endpoint.id, overlapMs);
  if (!rotated) throw new ApiError(404, `No webhook endpoint with id '${endpoint.id}'.`, 'id', 'webhook_endpoint_not_found');
  return c.json({ ...endpointJson(rotated.row), secret: rotated.secret });
});

webhookEndpoints.post('/v1/webhook_endpoints/:id/replay', async (c) => {
  const request = parseRequest(replaySchema, await readJsonBody(c.req.raw));
  const endpoint = await endpointOr404(c);
  const now = Date.now();
  const until = request.until ?? now + 1;
  if (until <= request.since) throw new ApiError(400, "Invalid value for 'until': it must be after 'since'.", 'until', 'invalid_value');
  const replayed = await replayEvents(c.env, endpoint, { since: request.since, until, onlyFailed: request.only_failed ?? false }, now);
  return c.json({ object: 'webhook_endpoint.replay', endpoint_id: endpoint.id, since: Math.floor(request.since / 1000), until: Math.floor(until / 1000), replayed }, 202);
});
