import { createApp } from './app';
import { worker } from './background/worker';

/** The production edge Worker (wrangler.toml `main`). Tests and benchmarks run functions/testing/entry.ts. */
export default worker(createApp());

// Durable Object classes must be exported by the Worker entry (wrangler.toml [[durable_objects.bindings]]).
export { Sweeper } from './background/sweeper';
export { Metrics } from './metrics/durable-object';
export { PrefixCache } from './prefix-cache/durable-object';
export { RateLimiter } from './rate-limit/durable-object';
export { SuffixHistory } from './suffix-history/durable-object';
