import { enqueueDelivery } from '../background/messages';
import { edgeConfig, type EdgeConfig } from '../config';
import type { Env } from '../env';
import { EndpointStore, type EndpointRow } from './endpoints';
import { classifyResponse, honoursRetryAfter, isRetryable, parseRetryAfter, retryDelayMs, shouldDisable, type AttemptOutcome } from './schedule';
import { signingSecrets, signWebhook } from './signing';
import { SecretBoxError } from './secret-box';
import { checkWebhookUrl } from './ssrf';
import { decideDeliveryMessage, type DeliveryClaimView, type DeliveryStatus } from './state';

/**
 * The webhook sender: one queue message = at most one attempt of one
 * delivery. It claims the attempt with a conditional UPDATE (so duplicate
 * messages run it once), checks the URL again (SSRF guard), signs with the
 * endpoint's secrets, POSTs without following redirects, and records the
 * attempt and the delivery's next state in one batch; then queues the next
 * attempt on the schedule (functions/webhooks/schedule.ts). Endpoint health:
 * a success clears its failure streak; a 410 disables it; failing for
 * WEBHOOK_DISABLE_AFTER_S disables it.
 */
const SNIPPET_BYTES = 1024;
/** A claimed attempt holds for the timeout plus this long before another sender may take it over. */
const LEASE_SLACK_MS = 30_000;

interface DeliveryRow extends DeliveryClaimView {
  id: string;
  event_id: string;
  endpoint_id: string;
  payload: string;
}


export async function handleDeliveryMessage(env: Env, message: { delivery_id: string; attempt: number }, now = Date.now()): Promise<void> {
  const config = edgeConfig(env);
  const db = env.DB;
  const row = await db
    .prepare('SELECT d.id, d.event_id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.lease_until, ev.payload FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id WHERE d.id = ?')
    .bind(message.delivery_id)
    .first<DeliveryRow>();
  const decision = decideDeliveryMessage(row, message.attempt, now);
  switch (decision.action) {
    case 'ack':
      return;
    case 'wait':
    case 'reschedule':
      // Not due (or a recorded attempt's next message may be missing): a message for it comes back when it is.
      await enqueueDelivery(env, message.delivery_id, decision.attempt, decision.ms);
      return;
    case 'claim':
      break;
  }
  const attempt = decision.attempt;
  const leaseUntil = now + config.webhooks.timeoutMs + LEASE_SLACK_MS;
  const claim =
    decision.from === 'pending'
      ? db.prepare("UPDATE webhook_deliveries SET status = 'delivering', attempts = ?, lease_until = ?, updated_at = ? WHERE id = ? AND status = 'pending' AND attempts = ?").bind(attempt, leaseUntil, now, row!.id, attempt - 1)
      : db.prepare("UPDATE webhook_deliveries SET lease_until = ?, updated_at = ? WHERE id = ? AND status = 'delivering' AND attempts = ? AND lease_until <= ?").bind(leaseUntil, now, row!.id, attempt, now);
  if (!(await claim.run()).meta.changes) return; // another message claimed it first

  let endpoint: EndpointRow | null;
  let result: AttemptResult;
  try {
    endpoint = await new EndpointStore(db).byId(row!.endpoint_id);
    result = await attemptDelivery(config, row!, endpoint, attempt);
  } catch (err) {
    if (!(err instanceof SecretBoxError)) throw err;
    // Its secret does not open (WEBHOOK_SECRETS_KEY changed without WEBHOOK_SECRETS_KEY_PREVIOUS): nothing can be signed.
    // The delivery fails where the tenant sees it and can be replayed once the key is back; the endpoint's health is not touched.
    console.error(`[webhooks] delivery ${row!.id}: ${err.message}`);
    endpoint = null;
    result = { startedAt: Date.now(), latencyMs: 0, status: null, outcome: 'skipped', error: 'the endpoint signing secret could not be opened', snippet: null, retryAfterMs: null };
  }
  await record(env, config, row!, endpoint, attempt, result);
}

interface AttemptResult {
  startedAt: number;
  latencyMs: number;
  status: number | null;
  outcome: AttemptOutcome | 'skipped';
  error: string | null;
  snippet: string | null;
  retryAfterMs: number | null;
}

async function attemptDelivery(config: EdgeConfig, row: DeliveryRow, endpoint: EndpointRow | null, attempt: number): Promise<AttemptResult> {
  const startedAt = Date.now();
  const done = (fields: Partial<AttemptResult> & Pick<AttemptResult, 'outcome'>): AttemptResult => ({ startedAt, latencyMs: Date.now() - startedAt, status: null, error: null, snippet: null, retryAfterMs: null, ...fields });
  if (!endpoint || endpoint.deleted_at !== null) return done({ outcome: 'skipped', error: 'endpoint deleted' });
  if (!endpoint.enabled) return done({ outcome: 'skipped', error: `endpoint disabled (${endpoint.disabled_reason ?? 'unknown'})` });
  const url = checkWebhookUrl(endpoint.url, { allowHttpLoopback: config.webhooks.allowHttpLoopback });
  if (!url.ok) return done({ outcome: 'blocked', error: `URL refused: ${url.reason}` });
  const headers = signWebhook(row.event_id, new Date(startedAt), row.payload, signingSecrets(endpoint, startedAt));
  try {
    const response = await fetch(url.url.href, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'edgespec-webhooks/1', 'webhook-attempt': String(attempt), ...headers },
      body: row.payload,
      redirect: 'manual',
      signal: AbortSignal.timeout(config.webhooks.timeoutMs),
    });
    const snippet = await readSnippet(response);
    const outcome = classifyResponse(response.status);
    return done({
      status: response.status,
      outcome,
      snippet,
      error: outcome === 'redirect' ? `redirect to ${response.headers.get('location') ?? '(no location)'} not followed` : null,
      retryAfterMs: honoursRetryAfter(response.status) ? parseRetryAfter(response.headers.get('retry-after'), Date.now()) : null,
    });
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
    return done({ outcome: timedOut ? 'timeout' : 'network', error: timedOut ? `no answer within ${config.webhooks.timeoutMs} ms` : `connection failed: ${(err as Error).message ?? String(err)}`.slice(0, 300) });
  }
}

/** The first KiB of the answer, as text (never half a character), and the rest left unread. */
async function readSnippet(response: Response): Promise<string | null> {
  if (!response.body) return null;
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < SNIPPET_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } catch {
    /* a body cut short: keep what arrived */
  } finally {
    reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(Math.min(size, SNIPPET_BYTES));
  let offset = 0;
  for (const chunk of chunks) {
    if (offset >= bytes.length) break;
    const part = chunk.subarray(0, bytes.length - offset);
    bytes.set(part, offset);
    offset += part.length;
  }
  return new TextDecoder().decode(bytes, { stream: true });
}

async function record(env: Env, config: EdgeConfig, row: DeliveryRow, endpoint: EndpointRow | null, attempt: number, result: AttemptResult): Promise<void> {
  const db = env.DB;
  const now = Date.now();
  let status: DeliveryStatus;
  let nextAt: number | null = null;
  if (result.outcome === 'success') status = 'succeeded';
  else if (isRetryable(result.outcome as AttemptOutcome)) {
    const delay = retryDelayMs(attempt, { scale: config.webhooks.retryScale, random: Math.random }, result.retryAfterMs);
    status = delay === null ? 'failed' : 'pending';
    if (delay !== null) nextAt = now + delay;
  } else status = 'failed';

  const disables = endpoint && endpoint.enabled && result.outcome !== 'skipped' && result.outcome !== 'blocked';
  const lastError = result.outcome === 'success' ? null : (result.error ?? (result.status !== null ? `HTTP ${result.status}` : result.outcome));
  const statements = [
    db
      .prepare('INSERT OR IGNORE INTO webhook_attempts (delivery_id, attempt, started_at, latency_ms, status_code, outcome, error, response_snippet) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .bind(row.id, attempt, result.startedAt, result.latencyMs, result.status, result.outcome, result.error, result.snippet),
    db
      .prepare("UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, lease_until = NULL, last_status = ?, last_error = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status = 'delivering' AND attempts = ?")
      .bind(status, nextAt, result.status, lastError, now, status === 'pending' ? null : now, row.id, attempt),
  ];
  if (disables && result.outcome === 'success') {
    statements.push(db.prepare('UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ?').bind(endpoint.id));
  } else if (disables && result.outcome === 'gone') {
    statements.push(db.prepare("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = 'gone', disabled_at = ?, updated_at = ? WHERE id = ? AND enabled = 1").bind(now, now, endpoint.id));
  } else if (disables) {
    const since = endpoint.failing_since ?? now;
    statements.push(db.prepare('UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, ?) WHERE id = ?').bind(now, endpoint.id));
    if (shouldDisable(since, now, config.webhooks.disableAfterMs)) {
      statements.push(
        db
          .prepare("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = 'failing', disabled_at = ?, updated_at = ? WHERE id = ? AND enabled = 1 AND failing_since IS NOT NULL AND failing_since <= ?")
          .bind(now, now, endpoint.id, now - config.webhooks.disableAfterMs),
      );
      // The endpoint is off now: this delivery gets no further attempt.
      if (status === 'pending') {
        status = 'failed';
        statements[1] = db
          .prepare("UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, last_status = ?, last_error = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status = 'delivering' AND attempts = ?")
          .bind(result.status, `${lastError}; endpoint disabled after failing since ${new Date(since).toISOString()}`, now, now, row.id, attempt);
      }
    }
  }
  const [, updated] = await db.batch(statements);
  if (status === 'pending' && updated.meta.changes && nextAt !== null) await enqueueDelivery(env, row.id, attempt + 1, nextAt - now);
}
