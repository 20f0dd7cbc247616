import { Hono } from 'hono';
import { beforeEach, describe, expect, it } from 'vitest';
import { ApiError } from '../../shared/errors';
import type { EdgeEnv } from '../../functions/context';
import type { Env } from '../../functions/env';
import { recordGeneration } from '../../functions/metrics/generations';
import { observeRequests, routeLabel } from '../../functions/metrics/middleware';
import { edgeMetrics, isolateMetrics } from '../../functions/metrics/registry';
import { publicError } from '../../functions/openai/public-error';
import { newStats, statsToJson, type SpeculationStats } from '../../functions/speculation/stats';
import { parseExposition, sampleSum, sampleValue } from './prometheus-text';

/**
 * The edge's request and generation metrics in Node, without workerd: the
 * middleware on a small app shaped like functions/app.ts (same error
 * handler), with no METRICS binding, so the isolate's registry keeps its
 * totals. The real stack's /metrics is test/edge/metrics.test.ts.
 */
const env = {} as Env;
const render = () => parseExposition(isolateMetrics.registry.render());

function app() {
  const app = new Hono<EdgeEnv>();
  app.onError((err, c) => {
    const error = publicError(err, 'test');
    return c.json(error.toBody(), error.status, error.headers);
  });
  app.notFound((c) => c.json(new ApiError(404, 'no route').toBody(), 404));
  app.use('*', observeRequests);
  app.get('/v1/models', (c) => c.json({ object: 'list', data: [] }));
  app.post('/v1/completions', () => {
    throw new ApiError(400, 'bad prompt', 'prompt', 'invalid_value');
  });
  app.post('/v1/chat/completions', () => {
    throw new ApiError(429, 'slow down', null, 'rate_limit_exceeded');
  });
  // An error answered by the route itself (not thrown), as functions/background/http.ts does.
  app.post('/v1/jobs', (c) => c.json({ error: { message: 'conflict', type: 'invalid_request_error', param: null, code: 'idempotency_key_reused' } }, 409));
  app.get('/admin/boom', () => {
    throw new Error('an internal detail');
  });
  return app;
}

beforeEach(() => isolateMetrics.registry.reset());

describe('edge request metrics (functions/metrics/middleware.ts)', () => {
  it('counts requests by route and status, errors by their OpenAI code, and 429s as rate-limit rejections', async () => {
    const a = app();
    expect((await a.request('/v1/models', {}, env)).status).toBe(200);
    expect((await a.request('/v1/completions', { method: 'POST' }, env)).status).toBe(400);
    expect((await a.request('/v1/chat/completions', { method: 'POST' }, env)).status).toBe(429);
    expect((await a.request('/v1/jobs', { method: 'POST' }, env)).status).toBe(409);
    expect((await a.request('/admin/boom', {}, env)).status).toBe(500);
    const notFound = await a.request('/no/such/path', {}, env);
    expect(notFound.status).toBe(404);
    // The answer the client gets is untouched by the middleware reading it.
    expect(((await notFound.json()) as { error: { message: string } }).error.message).toBe('no route');

    const m = render();
    expect(sampleValue(m, 'edgespec_requests_total', { route: 'models', status: '200' })).toBe(1);
    expect(sampleValue(m, 'edgespec_errors_total', { route: 'completions', status: '400', code: 'invalid_value' })).toBe(1);
    expect(sampleValue(m, 'edgespec_errors_total', { route: 'chat_completions', status: '429', code: 'rate_limit_exceeded' })).toBe(1);
    expect(sampleValue(m, 'edgespec_rate_limit_rejections_total', { code: 'rate_limit_exceeded' })).toBe(1);
    expect(sampleValue(m, 'edgespec_errors_total', { route: 'jobs', status: '409', code: 'idempotency_key_reused' })).toBe(1);
    // A 5xx counts under the code the client saw (publicError's), never the exception text.
    expect(sampleValue(m, 'edgespec_errors_total', { route: 'admin', status: '500', code: 'internal_error' })).toBe(1);
    expect(sampleValue(m, 'edgespec_errors_total', { route: 'other', status: '404', code: 'none' })).toBe(1);
    expect(sampleSum(m, 'edgespec_requests_total')).toBe(6);
    expect(sampleValue(m, 'edgespec_request_duration_ms_count', { route: 'models' })).toBe(1);
    expect(isolateMetrics.registry.render()).not.toContain('an internal detail');
  });

  it('labels routes from a fixed set: whatever path a caller sends, it adds no new label value', async () => {
    expect(routeLabel('/v1/completions')).toBe('completions');
    expect(routeLabel('/v1/chat/completions')).toBe('chat_completions');
    expect(routeLabel('/v1/jobs/job_123/deliveries')).toBe('jobs');
    expect(routeLabel('/v1/triggers/trg_1/events')).toBe('trigger_events');
    expect(routeLabel('/v1/triggers/trg_1')).toBe('triggers');
    expect(routeLabel('/admin/tenants')).toBe('admin');
    expect(routeLabel('/metrics')).toBe('metrics');
    expect(routeLabel('/v1/completions/x')).toBe('other');
    expect(routeLabel('/administrator')).toBe('other');

    const a = app();
    for (let i = 0; i < 50; i++) await a.request(`/random-${i}-${'"'.repeat(i % 3)}`, {}, env);
    const series = render().samples.filter((s) => s.name === 'edgespec_requests_total');
    expect(series).toEqual([{ name: 'edgespec_requests_total', labels: { route: 'other', status: '404' }, value: 50 }]);
  });
});

describe('edge generation metrics (functions/metrics/generations.ts)', () => {
  /** A generation's `speculation` object as the pipeline makes it (statsToJson). */
  const speculation = (strategy: 'lockstep' | 'origin', counts: Partial<SpeculationStats>, completionTokens: number) =>
    statsToJson(Object.assign(newStats(strategy, strategy === 'origin' ? 0 : 4, 'token'), counts), completionTokens);
  const waitUntil = () => {};

  it('counts tokens, drafted/accepted, target passes and observes acceptance, passes per token, draft and origin time', () => {
    const speculative = speculation('lockstep', { rounds: 4, drafted: 16, accepted: 12, draftMs: 40, verifyMs: 80, originForwardMs: 30 }, 16);
    expect(speculative).toMatchObject({ mode: 'speculative', target_passes: 4, drafted: 16, accepted: 12, draft_ms: 40, verify_ms: 80, origin_forward_ms: 30 });
    recordGeneration({ promptTokens: 10, completionTokens: 16, speculation: speculative, draftOnly: false }, true, { env, waitUntil });
    const originOnly = speculation('origin', { rounds: 8, originTokens: 8, verifyMs: 160, originForwardMs: 60 }, 8);
    recordGeneration({ promptTokens: 10, completionTokens: 8, speculation: originOnly, draftOnly: false }, false, { env, waitUntil });
    const m = render();
    expect(sampleValue(m, 'edgespec_generations_total', { outcome: 'completed', mode: 'speculative', fallback: 'none' })).toBe(1);
    expect(sampleValue(m, 'edgespec_generations_total', { outcome: 'cut_short', mode: 'origin', fallback: 'none' })).toBe(1);
    expect(sampleValue(m, 'edgespec_prompt_tokens_total')).toBe(20);
    expect(sampleValue(m, 'edgespec_completion_tokens_total')).toBe(24);
    expect(sampleValue(m, 'edgespec_drafted_tokens_total')).toBe(16);
    expect(sampleValue(m, 'edgespec_accepted_tokens_total')).toBe(12);
    expect(sampleValue(m, 'edgespec_target_passes_total')).toBe(12);
    // Acceptance only for generations that drafted: 12/16 = 0.75.
    expect(sampleValue(m, 'edgespec_acceptance_rate_count')).toBe(1);
    expect(sampleValue(m, 'edgespec_acceptance_rate_sum')).toBe(0.75);
    expect(sampleValue(m, 'edgespec_acceptance_rate_bucket', { le: '0.7' })).toBe(0);
    expect(sampleValue(m, 'edgespec_acceptance_rate_bucket', { le: '0.8' })).toBe(1);
    // Passes per token: 4/16 and 8/8.
    expect(sampleValue(m, 'edgespec_target_passes_per_token_sum')).toBe(1.25);
    expect(sampleValue(m, 'edgespec_target_passes_per_token_bucket', { le: '0.25' })).toBe(1);
    // Draft time only where there was a draft; origin latency per target pass: 80/4 and 160/8.
    expect(sampleValue(m, 'edgespec_draft_ms_count')).toBe(1);
    expect(sampleValue(m, 'edgespec_origin_latency_ms_sum')).toBe(40);
    expect(sampleValue(m, 'edgespec_verify_ms_total')).toBe(240);
    expect(sampleValue(m, 'edgespec_origin_forward_ms_total')).toBe(90);
  });

  it('labels a draft-only answer, and survives a speculation object missing fields', () => {
    const partial = { mode: 'speculative' } as unknown as ReturnType<typeof statsToJson>;
    recordGeneration({ promptTokens: 5, completionTokens: 3, speculation: partial, draftOnly: true }, true, { env, waitUntil });
    const m = render();
    expect(sampleValue(m, 'edgespec_generations_total', { outcome: 'completed', mode: 'speculative', fallback: 'draft' })).toBe(1);
    expect(sampleValue(m, 'edgespec_target_passes_total')).toBe(0);
    expect(sampleValue(m, 'edgespec_completion_tokens_total')).toBe(3);
  });

  it('renders every edge metric with HELP and TYPE before anything moved', () => {
    const text = parseExposition(edgeMetrics().registry.render());
    for (const name of ['edgespec_requests_total', 'edgespec_errors_total', 'edgespec_rate_limit_rejections_total', 'edgespec_acceptance_rate', 'edgespec_target_passes_per_token', 'edgespec_draft_ms', 'edgespec_origin_latency_ms']) {
      expect(text.types.has(name), name).toBe(true);
      expect(text.help.get(name), name).toMatch(/\w/);
    }
  });
});
