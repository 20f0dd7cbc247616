import type { Hono } from 'hono';
import type { EdgeEnv } from '../context';
import type { Env } from '../env';
import { handleDeadJob, handleJobMessage } from '../jobs/consumer';
import { handleDeliveryMessage } from '../webhooks/deliver';
import type { BackgroundMessage } from './messages';

/**
 * The Worker's handlers, one definition for both entries (functions/index.ts
 * and functions/testing/entry.ts): the app's fetch, and the consumer of the
 * job and webhook queues and of their dead-letter queues (names ending in
 * "-dlq", wrangler.toml). Messages of one batch run concurrently; each is
 * acked or retried on its own, so one failure never redelivers the others.
 */
export function worker(app: Hono<EdgeEnv>): ExportedHandler<Env, BackgroundMessage> {
  return {
    fetch: app.fetch,
    queue: (batch, env, ctx) => consume(batch, env, ctx),
  };
}

async function consume(batch: MessageBatch<BackgroundMessage>, env: Env, ctx: ExecutionContext): Promise<void> {
  const dead = batch.queue.endsWith('-dlq');
  await Promise.all(
    batch.messages.map(async (message) => {
      const body = message.body;
      try {
        if (body?.kind === 'job') {
          if (dead) {
            await handleDeadJob(env, body.job_id);
            message.ack();
          } else await handleJobMessage(env, ctx, body.job_id, message);
        } else if (body?.kind === 'delivery') {
          if (dead) await failDeadDelivery(env, body.delivery_id);
          else await handleDeliveryMessage(env, body);
          message.ack();
        } else {
          console.error(`[background] unknown message on ${batch.queue}`, body);
          message.ack();
        }
      } catch (err) {
        // The handler itself failed (D1 unreachable, a bug): the queue tries again, then dead-letters it.
        console.error(`[background] message ${message.id} on ${batch.queue} failed (delivery ${message.attempts})`, err);
        message.retry({ delaySeconds: Math.min(300, 2 ** message.attempts) });
      }
    }),
  );
}

/** A delivery whose sender kept crashing: it ends failed, visible in GET /v1/jobs/{id}/deliveries and replayable. */
async function failDeadDelivery(env: Env, deliveryId: string): Promise<void> {
  const now = Date.now();
  await env.DB.prepare(
    `UPDATE webhook_deliveries SET status = 'failed', last_error = 'the sender failed repeatedly (dead-letter queue)', lease_until = NULL, updated_at = ?, finished_at = ?
     WHERE id = ? AND (status = 'pending' OR (status = 'delivering' AND lease_until <= ?))`,
  )
    .bind(now, now, deliveryId, now)
    .run();
}
