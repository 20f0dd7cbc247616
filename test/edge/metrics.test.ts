import { describe, expect, inject, it } from 'vitest';
import { complete, createTenantKey, edgeUrl } from '../support/edge-client';
import { parseExposition, sampleSum, sampleValue, type Exposition } from '../metrics/prometheus-text';

/**
 * GET /metrics on the real stack (workerd, the Metrics Durable Object): who
 * may read it, and that its counters move as requests are made. Every
 * assertion is on the difference between two scrapes, so requests other
 * tests made before do not matter. The first scrape after a request sees it
 * at once (the scrape sends its isolate's pending delta along); polling only
 * covers a flush of the same isolate still on the wire.
 */
const adminSecret = () => inject('adminSecret');

async function scrape(): Promise<Exposition> {
  const response = await fetch(`${edgeUrl()}/metrics`, { headers: { authorization: `Bearer ${adminSecret()}` } });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(await response.text());
}

const requests = (m: Exposition, route: string, status: string) => sampleValue(m, 'edgespec_requests_total', { route, status });
const errors = (m: Exposition, route: string, status: string, code: string) => sampleValue(m, 'edgespec_errors_total', { route, status, code });

describe('GET /metrics', () => {
  it('refuses without the admin secret (401 in OpenAI shape) and says nothing about the metrics', async () => {
    for (const headers of [{}, { authorization: 'Bearer not-the-admin-secret' }, { authorization: adminSecret() }] as Array<Record<string, string>>) {
      const response = await fetch(`${edgeUrl()}/metrics`, { headers });
      expect(response.status).toBe(401);
      expect(response.headers.get('content-type')).toMatch(/application\/json/);
      const text = await response.text();
      expect(JSON.parse(text)).toMatchObject({ error: { type: 'authentication_error', code: 'admin_required' } });
      expect(text).not.toMatch(/edgespec_|# (HELP|TYPE)/);
    }
    // The edge's API keys are not admin secrets.
    expect((await fetch(`${edgeUrl()}/metrics`, { headers: { authorization: `Bearer ${inject('apiKey')}` } })).status).toBe(401);
  });

  it('shows every edgespec_ metric with HELP and TYPE, in the Prometheus text format', async () => {
    const m = await scrape();
    for (const [name, type] of [
      ['edgespec_requests_total', 'counter'],
      ['edgespec_errors_total', 'counter'],
      ['edgespec_rate_limit_rejections_total', 'counter'],
      ['edgespec_completion_tokens_total', 'counter'],
      ['edgespec_acceptance_rate', 'histogram'],
      ['edgespec_target_passes_per_token', 'histogram'],
      ['edgespec_draft_ms', 'histogram'],
      ['edgespec_origin_latency_ms', 'histogram'],
    ]) {
      expect(m.types.get(name), name).toBe(type);
      expect(m.help.get(name), name).toMatch(/\w/);
    }
  });

  it('metrics counters move as requests are made: a 200, a 400 by code, a 401, a 429 rate-limit rejection', async () => {
    const before = await scrape();

    expect((await complete({ prompt: 'x = 1', max_tokens: 2, temperature: 0 })).status).toBe(200);
    const bad = await complete({ prompt: '', max_tokens: 2 });
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('invalid_value');
    const unauthorized = await complete({ prompt: 'x = 1', max_tokens: 2 }, 'esk_not-a-key');
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.json.error.code).toBe('invalid_api_key');
    const tenant = await createTenantKey({ requests_per_minute: 1 });
    expect((await complete({ prompt: 'x = 1', max_tokens: 2, temperature: 0 }, tenant.key)).status).toBe(200);
    const limited = await complete({ prompt: 'x = 1', max_tokens: 2, temperature: 0 }, tenant.key);
    expect(limited.status).toBe(429);
    expect(limited.json.error.code).toBe('rate_limit_exceeded');
    // A refused scrape counts too.
    expect((await fetch(`${edgeUrl()}/metrics`)).status).toBe(401);

    const moved = (after: Exposition) => ({
      ok: requests(after, 'completions', '200') - requests(before, 'completions', '200'),
      badRequest: errors(after, 'completions', '400', 'invalid_value') - errors(before, 'completions', '400', 'invalid_value'),
      badRequestStatus: requests(after, 'completions', '400') - requests(before, 'completions', '400'),
      unauthorized: errors(after, 'completions', '401', 'invalid_api_key') - errors(before, 'completions', '401', 'invalid_api_key'),
      rateLimitedError: errors(after, 'completions', '429', 'rate_limit_exceeded') - errors(before, 'completions', '429', 'rate_limit_exceeded'),
      rateLimited:
        sampleValue(after, 'edgespec_rate_limit_rejections_total', { code: 'rate_limit_exceeded' }) - sampleValue(before, 'edgespec_rate_limit_rejections_total', { code: 'rate_limit_exceeded' }),
      refusedScrape: errors(after, 'metrics', '401', 'admin_required') - errors(before, 'metrics', '401', 'admin_required'),
      // The admin API calls that made the tenant and its key.
      admin: sampleSum(after, 'edgespec_requests_total', { route: 'admin', status: '201' }) - sampleSum(before, 'edgespec_requests_total', { route: 'admin', status: '201' }),
      timed: sampleValue(after, 'edgespec_request_duration_ms_count', { route: 'completions' }) - sampleValue(before, 'edgespec_request_duration_ms_count', { route: 'completions' }),
    });
    await expect.poll(async () => moved(await scrape()), { timeout: 10_000 }).toEqual({
      ok: 2,
      badRequest: 1,
      badRequestStatus: 1,
      unauthorized: 1,
      rateLimitedError: 1,
      rateLimited: 1,
      refusedScrape: 1,
      admin: 2,
      timed: 5,
    });
    // Successful scrapes are counted as well (this test made at least two before its last).
    const last = await scrape();
    expect(requests(last, 'metrics', '200') - requests(before, 'metrics', '200')).toBeGreaterThanOrEqual(2);
  });

  it('a completion moves the token, acceptance and target-pass metrics by what its usage and speculation say', async () => {
    const before = await scrape();
    const answer = await complete({ prompt: 'function add(a, b) {\n  return', max_tokens: 12, temperature: 0, speculation: { draft_length: 4 } });
    expect(answer.status).toBe(200);
    const { usage, speculation } = answer.json;
    expect(speculation.drafted).toBeGreaterThan(0);

    const diff = (after: Exposition, name: string, labels: Record<string, string> = {}) => sampleValue(after, name, labels) - sampleValue(before, name, labels);
    const moved = (after: Exposition) => ({
      generations: diff(after, 'edgespec_generations_total', { outcome: 'completed', mode: 'speculative', fallback: 'none' }),
      prompt: diff(after, 'edgespec_prompt_tokens_total'),
      completion: diff(after, 'edgespec_completion_tokens_total'),
      drafted: diff(after, 'edgespec_drafted_tokens_total'),
      accepted: diff(after, 'edgespec_accepted_tokens_total'),
      passes: diff(after, 'edgespec_target_passes_total'),
      acceptanceObserved: diff(after, 'edgespec_acceptance_rate_count'),
      passesPerTokenObserved: diff(after, 'edgespec_target_passes_per_token_count'),
      draftObserved: diff(after, 'edgespec_draft_ms_count'),
      originLatencyObserved: diff(after, 'edgespec_origin_latency_ms_count'),
    });
    await expect.poll(async () => moved(await scrape()), { timeout: 10_000 }).toEqual({
      generations: 1,
      prompt: usage.prompt_tokens,
      completion: usage.completion_tokens,
      drafted: speculation.drafted,
      accepted: speculation.accepted,
      passes: speculation.target_passes,
      acceptanceObserved: 1,
      passesPerTokenObserved: 1,
      draftObserved: 1,
      originLatencyObserved: 1,
    });
    const after = await scrape();
    // The acceptance histogram's sum moved by this generation's rate; the draft time by its draft_ms (rounded in the response).
    expect(diff(after, 'edgespec_acceptance_rate_sum')).toBeCloseTo(speculation.accepted / speculation.drafted, 6);
    expect(diff(after, 'edgespec_draft_ms_sum')).toBeCloseTo(speculation.draft_ms, 1);
    expect(diff(after, 'edgespec_target_passes_per_token_sum')).toBeCloseTo(speculation.target_passes / usage.completion_tokens, 6);
  });
});
