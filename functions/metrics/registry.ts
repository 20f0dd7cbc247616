import { Registry } from '../../shared/metrics';

/**
 * The edge's metric names (prefix `edgespec_`), defined once per registry.
 * `isolateMetrics` is this isolate's delta since its last flush to the
 * `Metrics` Durable Object (functions/metrics/flush.ts); the /metrics route
 * renders the object's totals through a fresh `edgeMetrics()`, so a metric
 * nothing has touched yet still shows its HELP and TYPE lines.
 *
 * Every label value comes from a fixed set (routes, status codes, error
 * codes the code base defines, generation outcomes): nothing a caller sends
 * becomes a label, so no caller can grow the series without bound.
 */
const MS_BUCKETS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000];
const RATIO_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
/** Target passes per generated token: 1 is plain decoding; speculation lowers it, discarded pipelined blocks raise it. */
const PASSES_PER_TOKEN_BUCKETS = [0.1, 0.2, 0.25, 0.33, 0.5, 0.75, 1, 1.5, 2];

export function edgeMetrics(registry = new Registry()) {
  return {
    registry,
    requests: registry.counter('edgespec_requests_total', 'HTTP requests answered, by route and status.', ['route', 'status']),
    errors: registry.counter('edgespec_errors_total', 'Error responses (4xx/5xx) by route, status and the OpenAI error code ("none" without one).', ['route', 'status', 'code']),
    rateLimited: registry.counter('edgespec_rate_limit_rejections_total', "Requests refused by a tenant's rate limits or quota (429), by error code.", ['code']),
    requestMs: registry.histogram('edgespec_request_duration_ms', 'Time until the response started (for a stream: its first round), ms.', MS_BUCKETS, ['route']),
    generations: registry.counter('edgespec_generations_total', 'Generations finished, by outcome (completed, or cut short by the client, an error or a cancel), mode and whether the draft answered alone.', ['outcome', 'mode', 'fallback']),
    promptTokens: registry.counter('edgespec_prompt_tokens_total', 'Prompt tokens of finished generations.'),
    completionTokens: registry.counter('edgespec_completion_tokens_total', 'Tokens generated (what the tenant is charged for).'),
    draftedTokens: registry.counter('edgespec_drafted_tokens_total', 'Draft tokens sent for verification.'),
    acceptedTokens: registry.counter('edgespec_accepted_tokens_total', 'Draft tokens the target accepted.'),
    targetPasses: registry.counter('edgespec_target_passes_total', 'Target forward passes (verify rounds, discarded pipelined blocks, origin-decoded tokens).'),
    acceptanceRate: registry.histogram('edgespec_acceptance_rate', 'Accepted / drafted tokens per generation that drafted any.', RATIO_BUCKETS),
    passesPerToken: registry.histogram('edgespec_target_passes_per_token', 'Target forward passes per generated token, per generation (hardware-independent: ARCHITECTURE.md: Benchmarking honestly).', PASSES_PER_TOKEN_BUCKETS),
    draftMs: registry.histogram('edgespec_draft_ms', 'Time the draft spent proposing, per generation, ms.', MS_BUCKETS),
    originLatencyMs: registry.histogram('edgespec_origin_latency_ms', "The edge's wait on the origin per target pass (verify_ms / target passes), per generation, ms.", MS_BUCKETS),
    verifyMs: registry.counter('edgespec_verify_ms_total', 'Time waiting on origins (verify calls and origin streams), ms.'),
    originForwardMs: registry.counter('edgespec_origin_forward_ms_total', 'Target forward time the origins reported, ms (the rest of verify time is link and queue).'),
  };
}

export type EdgeMetrics = ReturnType<typeof edgeMetrics>;

/** This isolate's counts since its last flush. */
export const isolateMetrics = edgeMetrics();
