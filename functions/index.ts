import { Hono } from 'hono';
import { ApiError, isApiError } from '../shared/errors';
import type { Env } from './env';
import { bench } from './routes/bench';
import { completions } from './routes/completions';
import { health } from './routes/health';
import { models } from './routes/models';
import { prefixCacheInternal, testTenant } from './routes/prefix-cache-internal';

/** The edge Worker: OpenAI-compatible completions served by a WASM draft verified at the origin. */
const app = new Hono<{ Bindings: Env }>();

app.onError((err, c) => {
  if (isApiError(err)) return c.json(err.toBody(), err.status, err.headers);
  // Anything else is a bug or a platform failure; say so in OpenAI's shape and keep the isolate alive.
  console.error('[edge] unexpected error', err);
  const body = new ApiError(502, `edge failure: ${err.message}`, null, 'edge_error').toBody();
  return c.json(body, 502);
});
app.notFound((c) => c.json(new ApiError(404, `No route for ${c.req.method} ${c.req.path}. Try POST /v1/completions.`).toBody(), 404));

app.use('/v1/*', testTenant);
app.use('/internal/*', testTenant);
app.route('/', health);
app.route('/', models);
app.route('/', completions);
app.route('/', bench);
app.route('/', prefixCacheInternal);

export default app;
// Durable Object classes must be exported by the Worker entry (wrangler.toml [[durable_objects.bindings]]).
export { PrefixCache } from './prefix-cache/durable-object';
