import { startJob } from '../background/messages';
import type { EdgeConfig } from '../config';
import type { Env } from '../env';
import { JobStore } from '../jobs/store';
import { EndpointStore } from '../webhooks/endpoints';
import { dispatchEvent } from '../webhooks/events';
import { TriggerStore } from './store';
import { renderPrompt } from './template';
import { verifyInbound } from './verify';

/**
 * One inbound event: find the trigger, verify the signature over the raw
 * bytes (nothing is parsed before), then make the job once per delivery id:
 * the trigger_deliveries row (PRIMARY KEY (trigger, delivery id)) and the job
 * are inserted in one batch, the job only if that row is this request's, so
 * a replay (or a sender's retry racing the original) finds the first job and
 * runs nothing. The answer does not wait for the generation.
 */
export type IngestResult =
  | { status: 404 | 401 | 400; code: string; message: string }
  | { status: 200; body: Record<string, unknown> }
  | { status: 202; body: Record<string, unknown> };

export async function ingestTriggerEvent(env: Env, config: EdgeConfig, triggerId: string, headers: Headers, body: Uint8Array): Promise<IngestResult> {
  const trigger = /^trg_[0-9a-f]{24}$/.test(triggerId) ? await new TriggerStore(env.DB).byId(triggerId) : null;
  if (!trigger) return { status: 404, code: 'trigger_not_found', message: `No trigger with id '${triggerId}'.` };
  const now = Date.now();
  const verified = await verifyInbound(trigger.scheme, trigger.secret, { headers, body, now }, config.triggers.toleranceS);
  if (!verified.ok) return { status: verified.status, code: verified.status === 401 ? 'invalid_signature' : 'invalid_event', message: `The event was refused: ${verified.reason}.` };

  // The senders' own handshakes, answered without a job.
  const payload = verified.payload as Record<string, unknown> | null;
  if (trigger.scheme === 'slack' && payload?.type === 'url_verification' && typeof payload.challenge === 'string') return { status: 200, body: { challenge: payload.challenge } };
  if (trigger.scheme === 'github' && verified.eventType === 'ping') return { status: 200, body: { ok: true, ignored: 'ping' } };

  const rendered = renderPrompt(trigger.template, { payload: verified.payload, event: verified.eventType, delivery_id: verified.deliveryId, trigger: { id: trigger.id, name: trigger.name } });
  const endpoint = await new EndpointStore(env.DB).get(trigger.tenant_id, trigger.webhook_endpoint_id);
  const params = JSON.parse(trigger.params) as Record<string, unknown>;
  const clip = (text: string) => text.slice(0, 512);
  const result = await new JobStore(env.DB).create({
    tenantId: trigger.tenant_id,
    apiKeyId: null,
    request: {
      completionBody: { model: config.modelId, ...params, prompt: rendered.ok ? rendered.prompt : '(template failed)' },
      metadata: { trigger_id: trigger.id, delivery_id: clip(verified.deliveryId), ...(verified.eventType ? { event: clip(verified.eventType) } : {}) },
    },
    endpoint: endpoint ? { existing: endpoint } : null,
    trigger: { triggerId: trigger.id, deliveryId: verified.deliveryId },
    failed: rendered.ok ? null : { code: 'template_error', message: rendered.message },
    now,
  });
  if (result.outcome === 'existing') return { status: 200, body: { received: true, duplicate: true, job_id: result.job.id, status: result.job.status } };
  if (rendered.ok) await startJob(env, result.job.id);
  else if (result.event) await dispatchEvent(env, result.event);
  return { status: 202, body: { received: true, duplicate: false, job_id: result.job.id, status: result.job.status } };
}
