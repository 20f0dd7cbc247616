/**
 * Metrics of the edge (README: Metrics): Prometheus counters and histograms
 * per isolate, added up across isolates by one `Metrics` Durable Object and
 * served at GET /metrics behind the admin secret; in production also one
 * Analytics Engine data point per request and per generation.
 *
 *   observeRequests   middleware: requests, statuses, error codes, rate-limit rejections, time to response
 *   recordGeneration  called once per generation (its `finish`): tokens, acceptance, target passes, draft and origin time
 *   metricsRoute      GET /metrics
 */
export { Metrics } from './durable-object';
export { recordGeneration } from './generations';
export { observeRequests, routeLabel } from './middleware';
export { metricsRoute } from './route';
