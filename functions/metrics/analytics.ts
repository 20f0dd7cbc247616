import type { Env } from '../env';

/**
 * Workers Analytics Engine (the ANALYTICS binding, production only): one
 * data point per answered request and one per finished generation, under the
 * Prometheus names, for per-request queries (SQL API) that /metrics'
 * aggregates cannot answer. `writeDataPoint` is fire-and-forget (no await, no
 * waitUntil); without the binding these do nothing. blob1 names the kind of
 * point by its counter, so one dataset holds both:
 *
 *   edgespec_requests_total     index1 route
 *     blob1 "edgespec_requests_total", blob2 route, blob3 status, blob4 error code ("" below 400)
 *     double1 1 (edgespec_requests_total), double2 edgespec_request_duration_ms,
 *     double3 edgespec_rate_limit_rejections_total (1 for a 429, else 0)
 *
 *   edgespec_generations_total  index1 mode
 *     blob1 "edgespec_generations_total", blob2 outcome, blob3 mode, blob4 fallback
 *     double1 1 (edgespec_generations_total), double2 edgespec_prompt_tokens_total,
 *     double3 edgespec_completion_tokens_total, double4 edgespec_drafted_tokens_total,
 *     double5 edgespec_accepted_tokens_total, double6 edgespec_target_passes_total,
 *     double7 edgespec_draft_ms, double8 edgespec_verify_ms_total, double9 edgespec_origin_forward_ms_total
 *
 * e.g. `SELECT blob2 AS route, SUM(_sample_interval * double1) FROM edgespec
 *       WHERE blob1 = 'edgespec_requests_total' GROUP BY route`.
 */
export interface RequestPoint {
  route: string;
  status: number;
  code: string | null;
  durationMs: number;
}

export interface GenerationPoint {
  outcome: string;
  mode: string;
  fallback: string;
  promptTokens: number;
  completionTokens: number;
  drafted: number;
  accepted: number;
  targetPasses: number;
  draftMs: number;
  verifyMs: number;
  originForwardMs: number;
}

export function writeRequestPoint(env: Env, p: RequestPoint): void {
  write(env, {
    indexes: [p.route],
    blobs: ['edgespec_requests_total', p.route, String(p.status), p.code ?? ''],
    doubles: [1, p.durationMs, p.status === 429 ? 1 : 0],
  });
}

export function writeGenerationPoint(env: Env, p: GenerationPoint): void {
  write(env, {
    indexes: [p.mode],
    blobs: ['edgespec_generations_total', p.outcome, p.mode, p.fallback],
    doubles: [1, p.promptTokens, p.completionTokens, p.drafted, p.accepted, p.targetPasses, p.draftMs, p.verifyMs, p.originForwardMs],
  });
}

function write(env: Env, point: AnalyticsEngineDataPoint): void {
  try {
    env.ANALYTICS?.writeDataPoint(point);
  } catch (err) {
    // Analytics is best effort: a refused point must never fail the request it describes.
    console.error('[metrics] Analytics Engine write failed', err);
  }
}
