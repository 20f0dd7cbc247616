import { createApp } from '../app';
import { worker } from '../background/worker';
import { apiKeyAuth } from '../middleware/api-key-auth';
import { boundedBody } from '../middleware/body-limit';
import { withDraftEngine } from '../middleware/draft-engine';
import { benchRoutes } from './bench-routes';
import { isolateRoutes } from './isolate-routes';
import { prefixCacheRoutes } from './prefix-cache-routes';

/**
 * The test Worker (`wrangler dev --env test`): the production app plus the
 * /internal/* routes tests and benchmarks use. Only this entry imports them,
 * so the production bundle (functions/index.ts) does not contain them at all.
 * They sit behind the same API-key auth as /v1/*: the prefix-cache hooks act
 * on the caller's own tenant.
 */
export default worker(createApp((app) => {
  app.route('/', isolateRoutes); // before the draft engine middleware: reading the isolate's state must not load the engine
  app.use('/internal/*', apiKeyAuth, boundedBody, withDraftEngine);
  app.route('/', prefixCacheRoutes);
  app.route('/', benchRoutes);
}));

export { Sweeper } from '../background/sweeper';
export { Metrics } from '../metrics/durable-object';
export { PrefixCache } from '../prefix-cache/durable-object';
export { RateLimiter } from '../rate-limit/durable-object';
export { SuffixHistory } from '../suffix-history/durable-object';
