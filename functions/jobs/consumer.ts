import { ApiError } from '../../shared/errors';
import { parseRequest } from '../../shared/validation';
import { cacheSaltFor, TenantStore, type Caller, type Tenant } from '../auth/tenants';
import { enqueueJob } from '../background/messages';
import { edgeConfig } from '../config';
import { draftEngine } from '../draft/engine';
import type { Env } from '../env';
import { startGeneration, type GenerationDeps } from '../generation';
import { textRounds } from '../generation/text';
import { admitRequest, busyRetryAfterMs, isIsolateBusy, type AdmissionTicket } from '../middleware/admission';
import { promptTokens } from '../openai/prompt';
import { completionRequestSchema, predictionTokens } from '../openai/request';
import { utcDay } from '../rate-limit/buckets';
import { dispatchEvent, redispatchJobDeliveries } from '../webhooks/events';
import { classifyJobError, decideJobMessage, transientDelayMs } from './state';
import { JobStore, type JobCharge, type JobRow } from './store';

/**
 * The job consumer: a queue message names a job; this runs it through the
 * one generation pipeline (startGeneration + textRounds, as /v1/completions
 * does), on behalf of the job's tenant, with its limits and cache salt.
 *
 * At least once, completed once: the run claims the job with a conditional
 * UPDATE that bumps `attempt`; between rounds it renews its lease (which is
 * also where it sees a cancel) and stops if it lost the claim; the terminal
 * UPDATE holds only for its own attempt, and the terminal event is UNIQUE.
 * A run that dies leaves its lease to expire; the retried message (or the
 * sweeper) claims the job again, refunds the dead run's reservation, and
 * starts over. Before any of that, the job is admitted to the isolate's
 * memory budget like an HTTP generation (functions/middleware/admission.ts).
 */
const SETTLE_WAIT_MS = 10_000;
/** A job is a completion: its request is admitted as a POST to this route would be. */
const JOB_GENERATION_PATH = '/v1/completions';

export interface QueueControl {
  ack(): void;
  retry(options?: { delaySeconds?: number }): void;
  /** Deliveries of this message so far (1 on the first). */
  attempts: number;
}

export async function handleJobMessage(env: Env, ctx: ExecutionContext, jobId: string, message: QueueControl): Promise<void> {
  const config = edgeConfig(env);
  const store = new JobStore(env.DB);
  const now = Date.now();
  const job = await store.byId(jobId);
  const decision = decideJobMessage(job, now);
  switch (decision.action) {
    case 'ack':
      // A finished job whose delivery was recorded but never queued (a crash in between) gets it queued now.
      if (job) await redispatchJobDeliveries(env, job.id, now);
      return message.ack();
    case 'wait':
      // A fresh message, so waiting never uses up the queue's retries (which are for failures).
      await enqueueJob(env, jobId, decision.ms);
      return message.ack();
    case 'cancel': {
      const ended = await store.end(job!, 'queued', 'cancelled', {}, now);
      if (ended) await dispatchEvent(env, ended.event);
      return message.ack();
    }
    case 'claim':
      break;
  }
  // Memory first, with the check the HTTP path makes (functions/middleware/admission.ts). A job this isolate
  // cannot hold now is not claimed: it uses no attempt, reserves no tokens and sends no job.started. A fresh
  // message brings it back after the Retry-After, mostly to another isolate; message.retry would count against
  // the queue's max_retries and dead-letter (fail) a job that was only waiting.
  let ticket: AdmissionTicket | null;
  try {
    ticket = await admitRequest(env, config, JOB_GENERATION_PATH, job!.request);
  } catch (err) {
    if (!isIsolateBusy(err)) throw err;
    console.warn(`[jobs] ${jobId} waits: this isolate is at its memory budget`);
    await enqueueJob(env, jobId, busyRetryAfterMs(err));
    return message.ack();
  }
  try {
    // Now, not `now`: loading the draft engine for the admission may have taken a while (a cold isolate).
    await claimAndRun(env, ctx, store, job!, message, Date.now());
  } finally {
    ticket?.release();
  }
}

async function claimAndRun(env: Env, ctx: ExecutionContext, store: JobStore, job: JobRow, message: QueueControl, now: number): Promise<void> {
  const config = edgeConfig(env);
  const claimed = await store.claim(job, now, config.jobs.leaseMs);
  if (!claimed) return message.ack(); // someone else claimed it first (or it was cancelled just now)
  if (claimed.event) await dispatchEvent(env, claimed.event);
  const run = claimed.job;

  if (run.attempt > config.jobs.maxAttempts) {
    const reason = run.last_error ? (JSON.parse(run.last_error) as { code: string; message: string }) : null;
    const error = { code: 'too_many_attempts', message: `The job was started ${run.attempt - 1} times without finishing${reason ? `; last: ${reason.message}` : ''}.` };
    const ended = await store.end(run, 'in_progress', 'failed', { error: JSON.stringify(error) }, Date.now(), run.attempt);
    if (ended) await dispatchEvent(env, ended.event);
    return message.ack();
  }

  const tenant = await new TenantStore(env.DB).tenant(run.tenant_id);
  // A run that died never settled its reservation: give it back before this run reserves again (never charged twice).
  if (tenant) await refundDeadRun(env, tenant, job).catch((err) => console.error(`[jobs] refunding the dead run of ${run.id} failed`, err));

  const pending: Promise<unknown>[] = [];
  const progress: RunProgress = { charged: null };
  try {
    if (!tenant) throw new ApiError(404, 'The tenant of this job no longer exists.', null, 'tenant_not_found');
    const caller: Caller = { tenant, apiKeyId: run.api_key_id ?? `trigger:${run.trigger_id}`, cacheSalt: await cacheSaltFor(tenant.id) };
    const outcome = await runGeneration(env, ctx, store, run, caller, pending, progress);
    await settled(pending);
    if (outcome.kind === 'lost') return message.ack(); // another run owns the job now
    const ended = await store.end(run, 'in_progress', outcome.kind, outcome.fields, Date.now(), run.attempt);
    if (ended) await dispatchEvent(env, ended.event);
    return message.ack();
  } catch (err) {
    await settled(pending);
    // A run that failed after its admission settled at its prompt tokens (finish with 0 generated): give those back too,
    // so only the run that ends the job is paid for.
    if (tenant && progress.charged) await refund(env, tenant, progress.charged.tokens, progress.charged.day).catch((e) => console.error(`[jobs] refunding failed run of ${run.id}`, e));
    const failure = classifyJobError(err);
    const at = Date.now();
    if (failure.kind === 'permanent') {
      const ended = await store.end(run, 'in_progress', 'failed', { error: JSON.stringify({ code: failure.code, message: failure.message }), charge: null }, at, run.attempt);
      if (ended) await dispatchEvent(env, ended.event);
      return message.ack();
    }
    if (failure.kind !== 'rate_limited') console.error(`[jobs] run ${run.attempt} of ${run.id} failed (${failure.code}); retrying`, err);
    const delay = failure.kind === 'rate_limited' ? failure.retryAfterMs : transientDelayMs(message.attempts, config.jobs.retryBaseMs);
    const requeued = await store.requeue(run.id, run.attempt, at + delay, { code: failure.code, message: failure.message }, at);
    if (!requeued) return message.ack();
    if (failure.kind === 'rate_limited') {
      // Waiting for the tenant's limit is not a failure of the message.
      await enqueueJob(env, run.id, delay);
      return message.ack();
    }
    // The queue counts these; after max_retries the message goes to the dead-letter queue, which fails the job.
    return message.retry({ delaySeconds: Math.min(43_200, Math.ceil(delay / 1000)) });
  }
}

/** Filled in by a run once its generation is admitted: the prompt tokens its settlement charged if it fails. */
interface RunProgress {
  charged: { tokens: number; day: string } | null;
}

type RunOutcome =
  | { kind: 'lost' }
  | { kind: 'completed' | 'cancelled'; fields: Partial<Pick<JobRow, 'result_text' | 'token_ids' | 'finish_reason' | 'usage' | 'speculation' | 'charge'>> };

async function runGeneration(env: Env, ctx: ExecutionContext, store: JobStore, run: JobRow, caller: Caller, pending: Promise<unknown>[], progress: RunProgress): Promise<RunOutcome> {
  const config = edgeConfig(env);
  const request = parseRequest(completionRequestSchema, JSON.parse(run.request));
  if (request.model && request.model !== config.modelId) {
    throw new ApiError(404, `The model '${request.model}' does not exist; this deployment serves '${config.modelId}'.`, 'model', 'model_not_found');
  }
  const engine = await draftEngine(env.MODELS, config.draftModel).catch((err: Error) => {
    console.error(`[jobs] draft model "${config.draftModel}" failed to load`, err);
    throw new ApiError(503, 'The draft model is not available right now.', null, 'draft_unavailable');
  });
  const prompt = promptTokens(request.prompt, engine);
  // Loading the engine may have taken a while (a cold isolate): renew the claim before the first round.
  if (!(await store.renew(run.id, run.attempt, Date.now(), config.jobs.leaseMs))) return { kind: 'lost' };
  const deps: GenerationDeps = {
    env,
    config,
    caller,
    engine,
    // Nobody is waiting on a connection: the run stops when it loses its claim or is cancelled (Generation.cancel).
    signal: new AbortController().signal,
    waitUntil(promise) {
      const safe = promise.catch((err) => console.error('[jobs] background task failed', err));
      pending.push(safe);
      ctx.waitUntil(safe);
    },
  };
  const charge: JobCharge = { attempt: run.attempt, tokens: prompt.length + request.max_tokens, day: utcDay(Date.now()), state: 'reserved' };
  await store.setCharge(run.id, run.attempt, charge);
  const generation = await startGeneration(deps, {
    prompt,
    maxTokens: request.max_tokens,
    sampling: { temperature: request.temperature, top_p: request.top_p, top_k: request.top_k, seed: request.seed },
    speculation: request.speculation,
    fallback: request.fallback,
    prediction: predictionTokens(request.prediction, engine),
  });
  progress.charged = { tokens: prompt.length, day: charge.day };
  const generatedIds: number[] = [];
  let text = '';
  let completed = false;
  let ended = false;
  let stop: 'lost' | 'cancelled' | null = null;
  let finishReason: string | null = null;
  try {
    const pieces = textRounds(generation, engine.tokenizer, request.stop, generatedIds);
    let step = await pieces.next();
    for (; !step.done; step = await pieces.next()) {
      text += step.value.text;
      // Between rounds: renew the claim; a cancel or a lost claim stops the run before the next round.
      const lease = await store.renew(run.id, run.attempt, Date.now(), config.jobs.leaseMs);
      if (!lease) stop = 'lost';
      else if (lease.cancelRequested) stop = 'cancelled';
      if (stop) {
        generation.cancel(stop === 'lost' ? 'job claimed by another run' : 'job cancelled');
        break;
      }
    }
    if (step.done) {
      completed = true;
      finishReason = step.value;
    }
    ended = true;
  } finally {
    // Charged for what it generated when it ends the job (completed or cancelled); a run that broke is retried from
    // scratch and pays nothing (its prompt is refunded by the caller); a run that lost its claim keeps its whole
    // reservation, which the run that took over gives back (refundDeadRun).
    const charged = stop === 'lost' ? request.max_tokens : ended ? generatedIds.length : 0;
    generation.finish({ completionTokens: charged, completed });
  }
  progress.charged = null;
  if (stop === 'lost') return { kind: 'lost' };
  const summary = generation.summary(generatedIds.length);
  return {
    kind: stop === 'cancelled' ? 'cancelled' : 'completed',
    fields: {
      result_text: text,
      token_ids: request.return_token_ids ? JSON.stringify(generatedIds) : null,
      finish_reason: finishReason,
      usage: JSON.stringify(summary.usage),
      speculation: JSON.stringify(summary.fallback ? { ...summary.speculation, fallback: summary.fallback } : summary.speculation),
      charge: JSON.stringify({ ...charge, state: 'settled' } satisfies JobCharge),
    },
  };
}

/** What startGeneration registered with waitUntil (the settlement of the reservation first of all) is done, or has had its time. */
async function settled(pending: Promise<unknown>[]): Promise<void> {
  if (!pending.length) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([Promise.allSettled(pending), new Promise((resolve) => (timer = setTimeout(resolve, SETTLE_WAIT_MS)))]);
  clearTimeout(timer);
}

/**
 * The job row before this claim: if a run reserved tokens and never settled
 * (it died), its whole reservation goes back, so the tenant pays only for
 * the run that finishes.
 */
async function refundDeadRun(env: Env, tenant: Tenant, before: JobRow): Promise<void> {
  const charge = before.charge ? (JSON.parse(before.charge) as JobCharge) : null;
  if (!charge || charge.state !== 'reserved') return;
  await refund(env, tenant, charge.tokens, charge.day);
  console.log(`[jobs] refunded ${charge.tokens} tokens reserved by the dead run ${charge.attempt} of ${before.id}`);
}

/** Give `tokens` charged on `day` back to the tenant's limits (the RateLimiter's settle of a reservation that used none). */
async function refund(env: Env, tenant: Tenant, tokens: number, day: string): Promise<void> {
  const { requestsPerMinute, tokensPerMinute, tokensPerDay } = tenant.limits;
  if (requestsPerMinute === null && tokensPerMinute === null && tokensPerDay === null) return;
  const limiter = env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(tenant.id));
  await limiter.settle({ requestsPerMinute, tokensPerMinute, tokensPerDay }, tokens, 0, day);
}

/** The dead-letter queue: the message failed max_retries times; the job fails with the last reason. */
export async function handleDeadJob(env: Env, jobId: string): Promise<void> {
  const store = new JobStore(env.DB);
  const job = await store.byId(jobId);
  if (!job || job.status === 'completed' || job.status === 'failed' || job.status === 'cancelled') return;
  const reason = job.last_error ? (JSON.parse(job.last_error) as { code: string; message: string }) : { code: 'internal_error', message: 'The job could not be run.' };
  const error = { code: reason.code, message: `Gave up after ${job.attempt} run(s): ${reason.message}` };
  // Only an open job nobody holds: a run with a live lease finishes (or its lease expires and the sweeper retries it).
  const ended = await store.end(job, 'open', 'failed', { error: JSON.stringify(error), charge: null }, Date.now());
  if (ended) await dispatchEvent(env, ended.event);
}
