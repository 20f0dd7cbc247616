import { Hono } from 'hono';
import { requestId } from 'hono/request-id';
import { ApiError } from '../shared/errors';
import type { EdgeEnv } from './context';
import { adminAuth } from './middleware/admin-auth';
import { apiKeyAuth } from './middleware/api-key-auth';
import { memoryAdmission } from './middleware/admission';
import { boundedBody } from './middleware/body-limit';
import { withConfig } from './middleware/config';
import { withDraftEngine } from './middleware/draft-engine';
import { metricsRoute, observeRequests } from './metrics';
import { isCancellation, publicError } from './openai/public-error';
import { admin } from './routes/admin';
import { chatCompletions } from './routes/chat-completions';
import { completions } from './routes/completions';
import { health } from './routes/health';
import { jobs } from './routes/jobs';
import { models } from './routes/models';
import { triggerEvents, triggers } from './routes/triggers';
import { webhookEndpoints } from './routes/webhook-endpoints';

/**
 * The edge Worker's app: OpenAI-compatible generation for API-key holders,
 * the operator's admin API, liveness. Every cross-cutting concern is one
 * middleware (functions/middleware) that sets a typed variable; routes read
 * like their purpose. `extend` mounts more routes (the test Worker's, in
 * functions/testing) behind the same middleware.
 */
export function createApp(extend?: (app: Hono<EdgeEnv>) => void): Hono<EdgeEnv> {
  const app = new Hono<EdgeEnv>();

  app.onError((err, c) => {
    // The client left: nobody reads this answer; it only closes the books.
    if (isCancellation(err) && c.req.raw.signal.aborted) return new Response(null, { status: 499 });
    const error = publicError(err, c.get('requestId') ?? 'unknown');
    return c.json(error.toBody(), error.status, error.headers);
  });
  app.notFound((c) => c.json(new ApiError(404, `No route for ${c.req.method} ${c.req.path}. Try POST /v1/completions.`).toBody(), 404));

  app.use('*', requestId());
  // Every response is counted, whichever middleware answered it (functions/metrics).
  app.use('*', observeRequests);
  app.use('*', withConfig);
  app.route('/', health);

  // Inbound trigger events carry no API key: their signature authenticates them (functions/triggers), so they come first.
  app.route('/', triggerEvents);

  // Authenticate before anything reads the body; bound the body before anything parses it.
  app.use('/v1/*', apiKeyAuth, boundedBody);
  app.use('/v1/*', memoryAdmission); // refuses a generation the isolate's memory budget cannot take (503 isolate_busy)
  app.use('/v1/completions', withDraftEngine);
  app.use('/v1/chat/completions', withDraftEngine);
  app.route('/', models);
  app.route('/', completions);
  app.route('/', chatCompletions);

  // Background jobs, webhook endpoints, triggers (functions/jobs, functions/webhooks, functions/triggers).
  app.route('/', jobs);
  app.route('/', webhookEndpoints);
  app.route('/', triggers);

  app.use('/admin/*', adminAuth, boundedBody);
  app.route('/', admin);
  app.route('/', metricsRoute); // GET /metrics, behind the same admin secret

  extend?.(app);
  return app;
}
