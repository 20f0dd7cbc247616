import { Hono } from 'hono';
import { ApiError } from '../../shared/errors';
import { readJsonBody } from '../../shared/validation';
import { sha256Hex } from '../auth/api-key';
import { conflict, listJson, pageParams } from '../background/http';
import { startJob } from '../background/messages';
import type { EdgeContext, EdgeEnv } from '../context';
import { canonicalJson, idempotencyKey, parseJobRequest, type JobRequest } from '../jobs/request';
import { JOB_STATUSES, type JobStatus } from '../jobs/state';
import { JobStore, jobJson } from '../jobs/store';
import { EndpointStore } from '../webhooks/endpoints';
import { dispatchEvent, jobDeliveries } from '../webhooks/events';
import { checkWebhookUrl } from '../webhooks/ssrf';

/**
 * Background jobs (API key; one tenant sees only its own jobs: anything else is a 404):
 *
 *   POST /v1/jobs                     completion request + webhook? + metadata?, Idempotency-Key?  → 202 {object: "job", status: "queued"}
 *   GET  /v1/jobs[?limit&after&status] newest first, cursor-paginated
 *   GET  /v1/jobs/:id                 status, result, usage, speculation, timestamps, attempts
 *   POST /v1/jobs/:id/cancel          queued → cancelled now; in_progress → stops within a round
 *   GET  /v1/jobs/:id/deliveries      its webhook deliveries and every attempt
 */
export const jobs = new Hono<EdgeEnv>();

jobs.post('/v1/jobs', async (c) => {
  if (!c.env.JOBS_QUEUE) throw new ApiError(503, 'Background jobs are not configured on this deployment (JOBS_QUEUE).', null, 'jobs_unavailable');
  const { config, caller } = c.var;
  const key = idempotencyKey(c.req.header('idempotency-key'));
  const body = await readJsonBody(c.req.raw);
  const request = parseJobRequest(body);
  if (request.completion.model && request.completion.model !== config.modelId) {
    throw new ApiError(404, `The model '${request.completion.model}' does not exist; this deployment serves '${config.modelId}'.`, 'model', 'model_not_found');
  }
  const endpoint = await resolveWebhook(c, request);
  // The job names the model that runs it.
  request.completionBody.model ??= config.modelId;
  const now = Date.now();
  const result = await new JobStore(c.env.DB).create({
    tenantId: caller.tenant.id,
    apiKeyId: caller.apiKeyId,
    request,
    endpoint,
    idempotency: key ? { key, hash: await sha256Hex(canonicalJson(body)) } : null,
    now,
  });
  if (result.outcome === 'existing') {
    if (!result.sameRequest) return conflict(c, 'This Idempotency-Key was used with a different request body in the last 24 hours.', 'idempotency_key_reused', 'Idempotency-Key');
    const store = new JobStore(c.env.DB);
    return c.json(jobJson(result.job, await store.endpointOf(result.job)), 202, { 'idempotent-replayed': 'true' });
  }
  await startJob(c.env, result.job.id);
  const json = jobJson(result.job, result.endpoint);
  // An inline endpoint's generated secret: shown here, once.
  const generatedSecret = endpoint && 'inline' in endpoint && !endpoint.inline?.secret ? result.endpoint?.secret : undefined;
  return c.json(generatedSecret ? { ...json, webhook: { ...json.webhook, secret: generatedSecret } } : json, 202);
});

async function resolveWebhook(c: EdgeContext, request: JobRequest) {
  const { webhook } = request;
  if (webhook === null) return null;
  if (typeof webhook === 'string') {
    const existing = await new EndpointStore(c.env.DB).get(c.var.caller.tenant.id, webhook);
    if (!existing || existing.inline) throw new ApiError(400, `No webhook endpoint with id '${webhook}'.`, 'webhook', 'webhook_endpoint_not_found');
    return { existing };
  }
  const check = checkWebhookUrl(webhook.url, { allowHttpLoopback: c.var.config.webhooks.allowHttpLoopback });
  if (!check.ok) throw new ApiError(400, `Invalid value for 'webhook.url': ${check.reason}.`, 'webhook.url', 'webhook_url_refused');
  return { inline: { url: check.url.href, secret: webhook.secret, eventTypes: webhook.event_types } };
}

jobs.get('/v1/jobs', async (c) => {
  const { limit, after } = pageParams(c);
  const status = c.req.query('status');
  if (status !== undefined && !JOB_STATUSES.includes(status as JobStatus)) throw new ApiError(400, `status must be one of ${JOB_STATUSES.join(', ')}.`, 'status', 'invalid_value');
  const { rows, hasMore } = await new JobStore(c.env.DB).list(c.var.caller.tenant.id, limit, after, status as JobStatus | undefined);
  return c.json(listJson(rows.map((row) => jobJson(row)), hasMore));
});

async function jobOr404(c: EdgeContext) {
  const store = new JobStore(c.env.DB);
  const job = await store.get(c.var.caller.tenant.id, c.req.param('id')!);
  if (!job) throw new ApiError(404, `No job with id '${c.req.param('id')}'.`, 'id', 'job_not_found');
  return { store, job };
}

jobs.get('/v1/jobs/:id', async (c) => {
  const { store, job } = await jobOr404(c);
  return c.json(jobJson(job, await store.endpointOf(job)));
});

jobs.post('/v1/jobs/:id/cancel', async (c) => {
  const { store, job } = await jobOr404(c);
  if (job.status === 'completed' || job.status === 'failed') return conflict(c, `The job is already ${job.status}.`, 'job_not_cancellable', 'id');
  const result = (await store.cancel(job.tenant_id, job.id, Date.now()))!;
  if (result.event) await dispatchEvent(c.env, result.event);
  return c.json(jobJson(result.job, await store.endpointOf(result.job)));
});

jobs.get('/v1/jobs/:id/deliveries', async (c) => {
  const { job } = await jobOr404(c);
  const data = await jobDeliveries(c.env.DB, job.tenant_id, job.id);
  return c.json({ object: 'list', data, has_more: false });
});
