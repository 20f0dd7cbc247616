import { createApp } from './app';

/** The production edge Worker (wrangler.toml `main`). Tests and benchmarks run functions/testing/entry.ts. */
export default createApp();

// Durable Object classes must be exported by the Worker entry (wrangler.toml [[durable_objects.bindings]]).
export { PrefixCache } from './prefix-cache/durable-object';
export { RateLimiter } from './rate-limit/durable-object';
