import { heldOutPrompts } from '../test/support/prompts';
import { eventOf, startReceiver, type Received, type Receiver } from '../test/support/webhook-receiver';
import { round } from './measure';
import type { BenchRecord } from './records';
import type { BenchContext } from './run';

/**
 * Background jobs end to end (`npm run bench -- --only jobs [--quick]`):
 * `jobs` completions (200; 40 with --quick) submitted at once to POST
 * /v1/jobs, each sending its events to one registered webhook endpoint on a
 * local receiver process that verifies every request with the
 * `standardwebhooks` library (test/support/webhook-receiver.ts). The clock of
 * a job runs from just before its POST to the arrival of its first verified
 * `job.completed` at the receiver (both on this machine's clock).
 *
 * Reports jobs per minute (completed jobs over first submit → last verified
 * webhook), p50 / p95 / max of that latency, failed jobs and submissions,
 * failed delivery attempts (`GET /v1/jobs/{id}/deliveries`), duplicate
 * deliveries (the same webhook-id again) and duplicate `job.completed`
 * events (two webhook-ids for one job: must be 0), plus the generation's
 * tokens/s and speculation counters. The stack is the bench's test Worker:
 * local Queues and D1, and the webhook schedule, timeouts and leases of
 * wrangler.toml [env.test.vars]; the measured origin at RTT 0.
 */
export interface JobsOptions {
  jobs: number;
  maxTokens: number;
  /** Give up waiting for webhooks after this long (what arrived by then is reported, with `timed_out`). */
  timeoutMs: number;
}

const HOOK = 'bench-jobs';
/** After the last webhook: time for a duplicate to show up, if the sender made one. */
const DUPLICATE_WINDOW_MS = 3_000;

interface Submitted {
  id: string | null;
  submittedAt: number;
}

export async function jobsSuite(ctx: BenchContext, options: JobsOptions): Promise<BenchRecord[]> {
  ctx.proxy.upstream = ctx.origins.measured.url;
  ctx.proxy.rttMs = 0;
  const receiver = await startReceiver(0);
  try {
    return [await run(ctx, receiver, options)];
  } finally {
    await receiver.stop();
  }
}

async function run(ctx: BenchContext, receiver: Receiver, options: JobsOptions): Promise<BenchRecord> {
  const { log } = ctx;
  const tenant = await ctx.edge.createTenantKey({}, `bench-jobs-${Date.now()}`);
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${ctx.edge.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${tenant.key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, json: (await response.json().catch(() => null)) as any };
  };

  const endpoint = await call('POST', '/v1/webhook_endpoints', { url: receiver.hook(HOOK), event_types: ['job.completed', 'job.failed', 'job.cancelled'], description: 'bench/jobs.ts' });
  if (endpoint.status !== 201) throw new Error(`registering the webhook endpoint failed: ${endpoint.status} ${JSON.stringify(endpoint.json)}`);
  await receiver.configure(HOOK, { secrets: [endpoint.json.secret], mode: 'ok' });
  // The draft engine loads on the first generation of an isolate: not part of what is measured.
  const warm = await call('POST', '/v1/completions', { prompt: 'let a = 1;', max_tokens: 1, temperature: 0 });
  if (warm.status !== 200) throw new Error(`warm-up completion failed: ${warm.status} ${JSON.stringify(warm.json)}`);

  const prompts = heldOutPrompts(32, 300);
  log(`jobs: submitting ${options.jobs} jobs at once (${options.maxTokens} tokens each, greedy), webhooks to ${receiver.hook(HOOK)}`);
  const submitted: Submitted[] = await Promise.all(
    Array.from({ length: options.jobs }, async (_, i): Promise<Submitted> => {
      const submittedAt = Date.now();
      const created = await call('POST', '/v1/jobs', { prompt: prompts[i % prompts.length], max_tokens: options.maxTokens, temperature: 0, webhook: endpoint.json.id, metadata: { bench: String(i) } }).catch(() => null);
      return { id: created?.status === 202 ? (created.json.id as string) : null, submittedAt };
    }),
  );
  const firstSubmit = Math.min(...submitted.map((s) => s.submittedAt));
  const ids = submitted.flatMap((s) => (s.id ? [s.id] : []));
  log(`jobs: ${ids.length} of ${options.jobs} accepted in ${Date.now() - firstSubmit} ms`);

  // Until every accepted job's outcome has arrived, verified (or the time is up).
  const deadline = Date.now() + options.timeoutMs;
  let records: Received[] = [];
  let lastLog = Date.now();
  for (;;) {
    records = await receiver.received(HOOK);
    const finished = new Set(records.filter((r) => r.verified[0]).map((r) => eventOf(r).data.id as string));
    const missing = ids.filter((id) => !finished.has(id)).length;
    if (!missing || Date.now() > deadline) break;
    if (Date.now() - lastLog > 10_000) {
      log(`jobs: ${ids.length - missing} of ${ids.length} webhooks arrived`);
      lastLog = Date.now();
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  const timedOut = Date.now() > deadline;
  await new Promise((r) => setTimeout(r, DUPLICATE_WINDOW_MS));
  records = await receiver.received(HOOK);

  // What each job says of itself and of its deliveries (a few at a time: the edge serves the jobs' webhooks meanwhile).
  const jobs: any[] = [];
  const deliveries: any[] = [];
  for (let i = 0; i < ids.length; i += 10) {
    const batch = ids.slice(i, i + 10);
    const answers = await Promise.all(batch.flatMap((id) => [call('GET', `/v1/jobs/${id}`), call('GET', `/v1/jobs/${id}/deliveries`)]));
    for (let j = 0; j < answers.length; j += 2) {
      jobs.push(answers[j].json);
      deliveries.push(...((answers[j + 1].json?.data as any[]) ?? []));
    }
  }

  const byJob = new Map<string, Received[]>();
  for (const record of records) {
    const event = eventOf(record);
    if (event.type !== 'job.completed') continue;
    byJob.set(event.data.id, [...(byJob.get(event.data.id) ?? []), record]);
  }
  const submittedAt = new Map(submitted.flatMap((s) => (s.id ? [[s.id, s.submittedAt] as const] : [])));
  const latencies: number[] = [];
  let lastVerified = firstSubmit;
  let duplicateDeliveries = 0;
  let duplicateCompleted = 0;
  for (const [id, arrivals] of byJob) {
    const verified = arrivals.filter((r) => r.verified[0]);
    if (!verified.length) continue;
    const first = Math.min(...verified.map((r) => r.at));
    latencies.push(first - submittedAt.get(id)!);
    lastVerified = Math.max(lastVerified, first);
    duplicateDeliveries += arrivals.length - new Set(arrivals.map((r) => r.id)).size;
    duplicateCompleted += new Set(arrivals.map((r) => r.id)).size - 1;
  }
  latencies.sort((a, b) => a - b);
  const quantile = (q: number) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0);
  const attempts = deliveries.flatMap((d) => d.attempts as Array<{ outcome: string; error: string | null }>);
  const failedAttempts = attempts.filter((a) => a.outcome !== 'success');
  // What the failed attempts were (timeouts under load, dropped connections, …): outcome → count.
  const failedOutcomes: Record<string, number> = {};
  for (const a of failedAttempts) failedOutcomes[a.outcome] = (failedOutcomes[a.outcome] ?? 0) + 1;
  const failedErrors = [...new Set(failedAttempts.map((a) => a.error ?? a.outcome))].slice(0, 3);
  const completedJobs = jobs.filter((j) => j?.status === 'completed');
  const sum = (f: (job: any) => number) => completedJobs.reduce((total, job) => total + (f(job) || 0), 0);
  const tokens = sum((j) => j.usage.completion_tokens);
  const originTokens = sum((j) => j.speculation.origin_tokens ?? 0);
  const verifyRounds = sum((j) => j.speculation.rounds) - originTokens;
  const wallMs = Math.max(1, lastVerified - firstSubmit);

  const counts = {
    jobs: options.jobs,
    max_tokens: options.maxTokens,
    accepted: ids.length,
    failed_submissions: options.jobs - ids.length,
    completed: completedJobs.length,
    failed_jobs: jobs.filter((j) => j?.status === 'failed').length,
    verified_completed: latencies.length,
    unverified_arrivals: records.filter((r) => !r.verified[0]).length,
    failed_attempts: failedAttempts.length,
    failed_attempt_outcomes: failedOutcomes,
    failed_attempt_errors: failedErrors,
    failed_deliveries: deliveries.filter((d) => d.status === 'failed').length,
    duplicate_deliveries: duplicateDeliveries,
    duplicate_completed_events: duplicateCompleted,
    mean_job_attempts: round(jobs.reduce((total, j) => total + (j?.attempts ?? 0), 0) / Math.max(1, jobs.length)),
    timed_out: timedOut,
  };
  const jobsPerMin = round((latencies.length / wallMs) * 60_000);
  const [p50, p95, max] = [quantile(0.5), quantile(0.95), latencies.at(-1) ?? 0].map((ms) => round(ms / 1000));
  const record: BenchRecord = {
    suite: 'jobs',
    // The generic table of bench/report.ts shows the mode: the numbers that matter are in it.
    mode: `${latencies.length}/${options.jobs} jobs: ${jobsPerMin} jobs/min, submit→verified webhook p50 ${p50} s, p95 ${p95} s; ${counts.failed_jobs} failed, ${duplicateCompleted} duplicate completions`,
    rtt_ms: 0,
    tokens_per_s: round((tokens / wallMs) * 1000),
    ttft_ms: 0,
    target_passes_per_token: tokens ? round(sum((j) => j.speculation.target_passes ?? j.speculation.rounds) / tokens) : 0,
    mean_accepted: verifyRounds > 0 ? round((tokens - originTokens) / verifyRounds) : 1,
    draft_ms_per_token: sum((j) => j.speculation.drafted) ? round(sum((j) => j.speculation.draft_ms) / sum((j) => j.speculation.drafted)) : 0,
    origin_cost: 'measured',
    jobs_per_min: jobsPerMin,
    p50_s: p50,
    p95_s: p95,
    max_s: max,
    wall_s: round(wallMs / 1000),
    ...counts,
  };
  log(
    `jobs: ${counts.verified_completed}/${options.jobs} verified job.completed in ${record.wall_s} s: ${jobsPerMin} jobs/min, p50 ${p50} s, p95 ${p95} s, max ${max} s; ` +
      `${counts.failed_jobs} failed jobs, ${counts.failed_submissions} failed submissions, ${counts.failed_attempts} failed attempts ${JSON.stringify(failedOutcomes)}, ` +
      `${duplicateDeliveries} duplicate deliveries, ${duplicateCompleted} duplicate job.completed events${timedOut ? '; TIMED OUT' : ''}`,
  );
  if (failedErrors.length) log(`jobs: failed attempts said: ${failedErrors.join(' | ')}`);
  if (duplicateCompleted) log(`jobs: WARNING: ${duplicateCompleted} job(s) got a second job.completed event (a second webhook-id): exactly-once is broken`);
  return record;
}
