import type { Context, MiddlewareHandler } from 'hono';
import type { EdgeEnv } from '../context';
import { writeRequestPoint } from './analytics';
import { flushSoon } from './flush';
import { isolateMetrics } from './registry';

/**
 * Counts every response: by route (a fixed set, `routeLabel`), status, and
 * for 4xx/5xx the OpenAI error `code` the client saw (read back from the JSON
 * body: one place is right for thrown errors, the routes' own error answers
 * and 5xx codes `publicError` rewrote). Mounted right after the request id,
 * so refusals by any later middleware (auth, body limit, admission) count
 * too. A stream's errors after its headers are not statuses; they show as
 * generations cut short (`edgespec_generations_total{outcome="cut_short"}`).
 */
export const observeRequests: MiddlewareHandler<EdgeEnv> = async (c, next) => {
  const started = performance.now();
  await next();
  const durationMs = performance.now() - started;
  const route = routeLabel(c.req.path);
  const status = c.res.status;
  const statusLabel = status >= 100 && status <= 599 ? String(status) : 'other';
  const code = status >= 400 ? await errorCode(c.res) : null;

  const m = isolateMetrics;
  m.requests.inc({ route, status: statusLabel });
  m.requestMs.observe({ route }, durationMs);
  if (code !== null) m.errors.inc({ route, status: statusLabel, code });
  if (status === 429) m.rateLimited.inc({ code: code ?? 'none' });
  writeRequestPoint(c.env, { route, status, code, durationMs });
  const waitUntil = executionWaitUntil(c);
  if (waitUntil) flushSoon(c.env, waitUntil);
};

/** The route label of a path: the app's routes, by prefix where they take ids; anything else is "other". */
const ROUTES: ReadonlyArray<readonly [RegExp, string]> = [
  [/^\/v1\/completions$/, 'completions'],
  [/^\/v1\/chat\/completions$/, 'chat_completions'],
  [/^\/v1\/models$/, 'models'],
  [/^\/v1\/jobs(\/|$)/, 'jobs'],
  [/^\/v1\/webhook_endpoints(\/|$)/, 'webhook_endpoints'],
  [/^\/v1\/triggers\/[^/]+\/events$/, 'trigger_events'],
  [/^\/v1\/triggers(\/|$)/, 'triggers'],
  [/^\/admin(\/|$)/, 'admin'],
  [/^\/health$/, 'health'],
  [/^\/metrics$/, 'metrics'],
  [/^\/internal(\/|$)/, 'internal'],
];

export function routeLabel(path: string): string {
  return ROUTES.find(([pattern]) => pattern.test(path))?.[1] ?? 'other';
}

/** Error codes are the code base's own snake_case constants; anything else (or none) is "none". */
const ERROR_CODE = /^[a-z0-9_]{1,64}$/;

async function errorCode(response: Response): Promise<string> {
  if (!response.body || !response.headers.get('content-type')?.includes('application/json')) return 'none';
  try {
    const body = (await response.clone().json()) as { error?: { code?: unknown } } | null;
    const code = body?.error?.code;
    return typeof code === 'string' && ERROR_CODE.test(code) ? code : 'none';
  } catch {
    return 'none';
  }
}

/** `c.executionCtx` throws where there is none (an app driven by `app.request` in a unit test). */
function executionWaitUntil(c: Context<EdgeEnv>): ((promise: Promise<unknown>) => void) | null {
  try {
    const ctx = c.executionCtx;
    return (promise) => ctx.waitUntil(promise);
  } catch {
    return null;
  }
}
