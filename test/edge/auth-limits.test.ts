import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { KEY_CACHE_MS } from '../../functions/middleware/api-key-auth';
import { admin, apiKey, createTenantKey, edgeUrl, originUrl } from '../support/edge-client';
import { DRAFT_DIR } from '../support/models';
import { startIsolatePair, type IsolatePair } from '../support/second-isolate';

/**
 * API keys, tenants and rate limits against the real thing: the test Worker
 * in workerd (`wrangler dev`), its local D1 database, the RateLimiter Durable
 * Objects, a real origin process, and the `npm run keys` CLI as a real
 * process. The last block starts two more `wrangler dev` processes (two
 * isolates sharing one RateLimiter namespace through wrangler's dev registry,
 * test/support/second-isolate.ts) and checks that a tenant's limits hold
 * across them.
 *
 * Buckets refill continuously (limit/60 per second), so every expectation on
 * x-ratelimit-remaining-* and -reset-* allows exactly the refill that the
 * elapsed wall-clock time can explain, and no more.
 */

const PROMPT = 'let a = 1;';
const MINUTE_MS = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// The cross-isolate pair boots (seed, migrations, two wrangler dev) while the other tests run.
const pairPorts: [number, number] = [Number(process.env.TEST_ISOLATE_A_PORT ?? 21797), Number(process.env.TEST_ISOLATE_B_PORT ?? 21798)];
const pairStart: Promise<IsolatePair> = startIsolatePair({ ports: pairPorts, originUrl: originUrl(), persistTo: `.wrangler/test-state-isolates-${pairPorts[0]}`, draftDir: DRAFT_DIR });
pairStart.catch(() => {}); // reported by the test that needs it
afterAll(async () => {
  await (await pairStart.catch(() => null))?.stop();
});

interface Answer {
  status: number;
  headers: Headers;
  json: any;
  /** Client clock when the answer arrived. */
  at: number;
}

async function post(body: Record<string, unknown>, key: string, base = edgeUrl()): Promise<Answer> {
  const response = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, json: await response.json(), at: Date.now() };
}

const small = (extra: Record<string, unknown> = {}) => ({ prompt: PROMPT, max_tokens: 2, temperature: 0, ...extra });

/** OpenAI's reset durations as formatted by functions/rate-limit ("250ms", "1.5s", "1m0s") → ms. */
function durationMs(text: string | null): number {
  const match = text ? /^(?:(\d+)ms|(\d+(?:\.\d+)?)s|(\d+)m(\d+)s)$/.exec(text) : null;
  if (!match) throw new Error(`not a reset duration: ${JSON.stringify(text)}`);
  if (match[1] !== undefined) return Number(match[1]);
  if (match[2] !== undefined) return Number(match[2]) * 1000;
  return Number(match[3]) * MINUTE_MS + Number(match[4]) * 1000;
}

const header = (answer: Answer, name: string) => answer.headers.get(name);
const numberHeader = (answer: Answer, name: string) => {
  const value = answer.headers.get(name);
  if (value === null) throw new Error(`no ${name} header (status ${answer.status}: ${JSON.stringify(answer.json)})`);
  return Number(value);
};

/** Most a bucket of `capacity` per minute can have refilled in `ms`. */
const refillBound = (capacity: number, ms: number) => (capacity * ms) / MINUTE_MS;

/**
 * A request that asks for more tokens than the tenant's tokens_per_minute: it
 * is refused (request_too_large) without touching the buckets, and its
 * headers read the tokens bucket as it is now. The tokens meter of these tests.
 */
async function tokensLeft(key: string, base = edgeUrl()): Promise<number> {
  const answer = await post({ prompt: 'x', max_tokens: 4096 }, key, base);
  expect(answer.status, JSON.stringify(answer.json)).toBe(429);
  expect(answer.json.error.code).toBe('request_too_large');
  return numberHeader(answer, 'x-ratelimit-remaining-tokens');
}

describe('API keys', () => {
  it('no Authorization → 401 missing_api_key in OpenAI shape, saying how to get a key', async () => {
    for (const headers of [{}, { authorization: 'Basic dXNlcjpwYXNz' }, { authorization: 'Bearer' }] as Array<Record<string, string>>) {
      const response = await fetch(`${edgeUrl()}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(small()) });
      expect(response.status).toBe(401);
      const body = (await response.json()) as any;
      expect(body).toEqual({ error: { message: expect.any(String), type: 'authentication_error', param: null, code: 'missing_api_key' } });
      expect(body.error.message).toMatch(/Authorization: Bearer/);
      expect(body.error.message).toMatch(/npm run keys -- create --tenant/);
    }
    // /v1/models is behind the same auth.
    expect((await fetch(`${edgeUrl()}/v1/models`)).status).toBe(401);
  });

  it('a wrong key → 401 invalid_api_key; a valid key → 200', async () => {
    for (const wrong of [`esk_${randomBytes(32).toString('base64url')}`, 'not-a-key', inject('adminSecret')]) {
      const answer = await post(small(), wrong);
      expect(answer.status).toBe(401);
      expect(answer.json.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key', param: null });
      expect(answer.json.error.message).toMatch(/Incorrect or revoked API key/);
    }
    const ok = await post(small(), apiKey());
    expect(ok.status).toBe(200);
    expect(ok.json.object).toBe('text_completion');
  });

  it(`a revoked key is refused within KEY_CACHE_MS (${KEY_CACHE_MS} ms); another key of the same tenant keeps working`, async () => {
    const first = await createTenantKey();
    const second = await admin('POST', '/admin/keys', { tenant: first.tenantId, name: 'second' });
    expect(second.status).toBe(201);
    expect(second.json).toMatchObject({ tenant_id: first.tenantId, name: 'second', revoked_at: null, key: expect.stringMatching(/^esk_/) });
    // Both work, and both are now in this isolate's key cache.
    expect((await post(small(), first.key)).status).toBe(200);
    expect((await post(small(), second.json.key)).status).toBe(200);

    const revoke = await admin('POST', `/admin/keys/${first.keyId}/revoke`);
    expect(revoke).toEqual({ status: 200, json: { id: first.keyId, revoked: true } });
    const revokedAt = Date.now();
    let refusedAfter = -1;
    let last: Response | null = null;
    while (Date.now() - revokedAt < KEY_CACHE_MS + 3_000) {
      last = await fetch(`${edgeUrl()}/v1/models`, { headers: { authorization: `Bearer ${first.key}` } });
      if (last.status === 401) {
        refusedAfter = Date.now() - revokedAt;
        break;
      }
      expect(last.status).toBe(200);
      await sleep(200);
    }
    expect(refusedAfter, 'the revoked key was still accepted').toBeGreaterThanOrEqual(0);
    expect(refusedAfter).toBeLessThanOrEqual(KEY_CACHE_MS + 1_000);
    expect(((await last!.json()) as any).error.code).toBe('invalid_api_key');
    const refused = await post(small(), first.key);
    expect(refused.status).toBe(401);
    expect(refused.json.error.code).toBe('invalid_api_key');
    // The tenant's other key is untouched.
    expect((await post(small(), second.json.key)).status).toBe(200);

    const listed = await admin('GET', `/admin/keys?tenant=${first.tenantId}`);
    const byId = new Map((listed.json.data as any[]).map((k) => [k.id, k]));
    expect(byId.get(first.keyId).revoked_at).toEqual(expect.any(String));
    expect(byId.get(second.json.id).revoked_at).toBeNull();
    expect(JSON.stringify(listed.json)).not.toContain(first.key);
    // Revoking twice: no active key with that id.
    const again = await admin('POST', `/admin/keys/${first.keyId}/revoke`);
    expect(again.status).toBe(404);
    expect(again.json.error.code).toBe('key_not_found');
  });

  it('the admin API needs the admin secret: none, a wrong one or an API key → 401', async () => {
    for (const authorization of [undefined, `Bearer ${randomBytes(24).toString('hex')}`, `Bearer ${apiKey()}`]) {
      for (const [method, path] of [
        ['GET', '/admin/tenants'],
        ['POST', '/admin/keys'],
        ['GET', '/admin/keys'],
      ]) {
        const response = await fetch(`${edgeUrl()}${path}`, {
          method,
          headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
          body: method === 'POST' ? JSON.stringify({ tenant: 'anything' }) : undefined,
        });
        expect(response.status, `${method} ${path} with ${authorization ? 'a wrong secret' : 'no secret'}`).toBe(401);
        expect(((await response.json()) as any).error).toMatchObject({ type: 'authentication_error', code: 'admin_required' });
      }
    }
    expect((await admin('GET', '/admin/tenants')).status).toBe(200);
  });

  it('`npm run keys` (scripts/keys.ts) drives a real edge: create, list, limits, revoke', async () => {
    const tenant = `cli-${randomBytes(4).toString('hex')}`;
    const created = await keysCli(['create', '--tenant', tenant, '--rpm', '5']);
    expect(created.code, created.stderr).toBe(0);
    // The key alone on stdout (so `KEY=$(npm run -s keys -- create ...)` works), the story on stderr.
    expect(created.stdout).toMatch(/^esk_[A-Za-z0-9_-]{43}\n$/);
    const key = created.stdout.trim();
    const tenantId = /created tenant (\S+) \((ten_[0-9a-f]{20})\): requests_per_minute=5 tokens_per_minute=none tokens_per_day=none max_tokens=none max_draft_length=none max_depth=none/.exec(created.stderr);
    expect(tenantId, created.stderr).not.toBeNull();
    expect(tenantId![1]).toBe(tenant);
    const keyId = new RegExp(`created key (key_[0-9a-f]{20}) for tenant ${tenant}`).exec(created.stderr)?.[1];
    expect(keyId, created.stderr).toBeDefined();

    // The key works, under the tenant's limit.
    const used = await post(small(), key);
    expect(used.status).toBe(200);
    expect(header(used, 'x-ratelimit-limit-requests')).toBe('5');
    expect(header(used, 'x-ratelimit-remaining-requests')).toBe('4');

    const listed = await keysCli(['list']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(`${tenant} (${tenantId![2]}) requests_per_minute=5 tokens_per_minute=none`);
    expect(listed.stdout).toMatch(new RegExp(`^  ${keyId}  ${key.slice(0, 10)}…  default  created \\S+$`, 'm'));
    expect(listed.stdout).not.toContain(key);

    const limits = await keysCli(['limits', '--tenant', tenant, '--tpm', '100']);
    expect(limits.code, limits.stderr).toBe(0);
    expect(limits.stdout).toBe(`${tenant} (${tenantId![2]}) requests_per_minute=5 tokens_per_minute=100 tokens_per_day=none max_tokens=none max_draft_length=none max_depth=none\n`);
    const listedTenant = await keysCli(['list', '--tenant', tenant]);
    expect(listedTenant.code, listedTenant.stderr).toBe(0);
    expect(listedTenant.stdout.split('\n').filter(Boolean)).toEqual([
      `${tenant} (${tenantId![2]}) requests_per_minute=5 tokens_per_minute=100 tokens_per_day=none max_tokens=none max_draft_length=none max_depth=none`,
      expect.stringMatching(new RegExp(`^  ${keyId}  `)),
    ]);

    // A second key for the existing tenant (not in any key cache yet) sees the new limit, and shares the tenant's buckets.
    const createdAgain = await keysCli(['create', '--tenant', tenant, '--name', 'second']);
    expect(createdAgain.code, createdAgain.stderr).toBe(0);
    expect(createdAgain.stderr).not.toContain('created tenant');
    const key2 = createdAgain.stdout.trim();
    const viaSecond = await post(small(), key2);
    expect(viaSecond.status).toBe(200);
    expect(header(viaSecond, 'x-ratelimit-limit-tokens')).toBe('100');
    expect(header(viaSecond, 'x-ratelimit-limit-requests')).toBe('5');
    expect(header(viaSecond, 'x-ratelimit-remaining-requests')).toBe('3');

    const revoked = await keysCli(['revoke', keyId!]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toMatch(new RegExp(`^revoked ${keyId}\\b`));
    const revokedAt = Date.now();
    let status = 200;
    while (status !== 401 && Date.now() - revokedAt < KEY_CACHE_MS + 3_000) {
      status = (await fetch(`${edgeUrl()}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;
      if (status !== 401) await sleep(200);
    }
    expect(status).toBe(401);
    expect(Date.now() - revokedAt).toBeLessThanOrEqual(KEY_CACHE_MS + 1_500);
    expect((await fetch(`${edgeUrl()}/v1/models`, { headers: { authorization: `Bearer ${key2}` } })).status).toBe(200);
    const afterRevoke = await keysCli(['list', '--tenant', tenant]);
    expect(afterRevoke.stdout).toMatch(new RegExp(`^  ${keyId}  .*  REVOKED \\S+$`, 'm'));
    expect(afterRevoke.stdout).not.toMatch(/second {2}created \S+ {2}REVOKED/);

    // Failures: a wrong admin secret, a bad flag, an unknown key id.
    const [wrongSecret, badFlag, unknownKey] = await Promise.all([
      keysCli(['list'], { ADMIN_SECRET: randomBytes(24).toString('hex') }),
      keysCli(['limits', '--tenant', tenant, '--tpm', 'lots']),
      keysCli(['revoke', 'key_00000000000000000000']),
    ]);
    expect(wrongSecret.code).toBe(1);
    expect(wrongSecret.stderr).toMatch(/GET \/admin\/tenants: 401 /);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toContain('--tpm takes a whole number or "none", got "lots"');
    expect(unknownKey.code).toBe(1);
    expect(unknownKey.stderr).toMatch(/404 No active key with id 'key_00000000000000000000'/);
  });
});

/** `node --import tsx scripts/keys.ts ...` against the test edge, as an operator runs it. */
function keysCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/keys.ts', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, EDGESPEC_URL: edgeUrl(), ADMIN_SECRET: inject('adminSecret'), ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('requests per minute', () => {
  const N = 4;

  it(`N = ${N}: N + 1 quick requests → exactly one 429 with Retry-After and exact x-ratelimit-* headers; other tenants unaffected`, async () => {
    const TPM = 10_000;
    const tenant = await createTenantKey({ requests_per_minute: N, tokens_per_minute: TPM });
    const started = Date.now();
    const answers: Answer[] = [];
    for (let i = 0; i <= N; i++) answers.push(await post(small(), tenant.key));
    expect(answers.map((a) => a.status)).toEqual([...Array(N).fill(200), 429]);

    let charged = 0;
    answers.forEach((answer, i) => {
      const elapsed = answer.at - started;
      const admitted = answer.status === 200;
      const consumed = admitted ? i + 1 : N;
      // Requests: the bucket holds N - consumed plus what refilled (N/min); reset = time to refill to N.
      expect(numberHeader(answer, 'x-ratelimit-limit-requests')).toBe(N);
      expect(numberHeader(answer, 'x-ratelimit-remaining-requests')).toBe(N - consumed);
      const resetRequests = durationMs(header(answer, 'x-ratelimit-reset-requests'));
      expect(resetRequests).toBeLessThanOrEqual((consumed * MINUTE_MS) / N);
      expect(resetRequests).toBeGreaterThanOrEqual((consumed * MINUTE_MS) / N - elapsed - 1);
      // Tokens: every admitted request reserved prompt + max_tokens, and the earlier ones were settled to what they used.
      const reserved = admitted ? answer.json.usage.prompt_tokens + 2 : 0;
      const remaining = numberHeader(answer, 'x-ratelimit-remaining-tokens');
      const expected = TPM - charged - reserved;
      expect(numberHeader(answer, 'x-ratelimit-limit-tokens')).toBe(TPM);
      expect(remaining).toBeGreaterThanOrEqual(expected);
      expect(remaining).toBeLessThanOrEqual(Math.min(TPM, Math.floor(expected + refillBound(TPM, elapsed))));
      const resetTokens = durationMs(header(answer, 'x-ratelimit-reset-tokens'));
      expect(resetTokens).toBeLessThanOrEqual(Math.ceil(((TPM - remaining) * MINUTE_MS) / TPM));
      expect(resetTokens).toBeGreaterThanOrEqual(Math.floor(((TPM - remaining - 1) * MINUTE_MS) / TPM));
      if (admitted) charged += answer.json.usage.total_tokens;
    });

    const refused = answers[N];
    expect(refused.json.error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null });
    expect(refused.json.error.message).toBe(`Rate limit reached: ${N} requests per minute.`);
    // One request comes back after 60/N s minus what refilled since the first.
    const retryAfter = numberHeader(refused, 'retry-after');
    expect(retryAfter).toBeLessThanOrEqual(MINUTE_MS / N / 1000);
    expect(retryAfter).toBeGreaterThanOrEqual(Math.ceil((MINUTE_MS / N - (refused.at - started)) / 1000));

    // Limits are the tenant's: its other key is refused too; another tenant with the same limit and the
    // unlimited tenant of the tests are not.
    const sameTenant = await admin('POST', '/admin/keys', { tenant: tenant.tenantId, name: 'other' });
    expect((await post(small(), sameTenant.json.key)).status).toBe(429);
    const other = await createTenantKey({ requests_per_minute: N });
    const otherAnswer = await post(small(), other.key);
    expect(otherAnswer.status).toBe(200);
    expect(header(otherAnswer, 'x-ratelimit-remaining-requests')).toBe(String(N - 1));
    expect(header(otherAnswer, 'x-ratelimit-limit-tokens')).toBeNull();
    const unlimited = await post(small(), apiKey());
    expect(unlimited.status).toBe(200);
    expect(header(unlimited, 'x-ratelimit-limit-requests')).toBeNull();
  });

  it(`N = ${N}: N + 1 requests fired at once → exactly one 429, and each admitted one saw a distinct remaining count`, async () => {
    const tenant = await createTenantKey({ requests_per_minute: N });
    const answers = await Promise.all(Array.from({ length: N + 1 }, () => post(small(), tenant.key)));
    const outcomes = answers.map((a) => `${a.status}${a.status === 200 ? '' : `:${a.json?.error?.code}:${a.json?.error?.message}`}`).join('\n');
    expect(answers.filter((a) => a.status === 429), outcomes).toHaveLength(1);
    const admitted = answers.filter((a) => a.status === 200);
    expect(admitted).toHaveLength(N);
    expect(admitted.map((a) => numberHeader(a, 'x-ratelimit-remaining-requests')).sort()).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(answers.find((a) => a.status === 429)!.json.error.code).toBe('rate_limit_exceeded');
  });
});

describe('tokens: reserved up front, charged for what was generated', () => {
  it('a request reserves prompt + max_tokens; once done, it costs prompt + completion tokens', async () => {
    const TPM = 240;
    const tenant = await createTenantKey({ tokens_per_minute: TPM });
    const started = Date.now();
    expect(await tokensLeft(tenant.key)).toBe(TPM);
    // A stop string ends it long before max_tokens.
    const maxTokens = 64;
    const answer = await post({ prompt: PROMPT, max_tokens: maxTokens, temperature: 0, stop: ['\n'] }, tenant.key);
    expect(answer.status).toBe(200);
    const { prompt_tokens: prompt, completion_tokens: completion } = answer.json.usage;
    expect(completion, 'precondition: the stop string ends generation early').toBeLessThan(maxTokens / 2);
    const reservedLeft = TPM - prompt - maxTokens;
    const duringRequest = numberHeader(answer, 'x-ratelimit-remaining-tokens');
    expect(duringRequest).toBeGreaterThanOrEqual(reservedLeft);
    expect(duringRequest).toBeLessThanOrEqual(Math.floor(reservedLeft + refillBound(TPM, answer.at - started)));

    const chargedLeft = TPM - prompt - completion;
    const after = await tokensLeft(tenant.key);
    expect(after, `charged ${TPM - after} tokens; prompt ${prompt} + generated ${completion} = ${prompt + completion}`).toBeGreaterThanOrEqual(chargedLeft);
    expect(after).toBeLessThanOrEqual(Math.floor(chargedLeft + refillBound(TPM, Date.now() - started)));
  });

  it('prompt + max_tokens above tokens_per_minute → 429 request_too_large without Retry-After, nothing charged', async () => {
    const TPM = 50;
    const tenant = await createTenantKey({ tokens_per_minute: TPM });
    const answer = await post({ prompt: PROMPT, max_tokens: TPM, temperature: 0 }, tenant.key);
    expect(answer.status).toBe(429);
    expect(answer.json.error).toMatchObject({ type: 'rate_limit_error', code: 'request_too_large', param: null });
    expect(answer.json.error.message).toMatch(new RegExp(`more than the limit of ${TPM} tokens per minute`));
    expect(header(answer, 'retry-after')).toBeNull();
    expect(header(answer, 'x-ratelimit-limit-tokens')).toBe(String(TPM));
    expect(header(answer, 'x-ratelimit-remaining-tokens')).toBe(String(TPM));
    // The message counts prompt + max_tokens; exactly the limit fits.
    const prompt = Number(/it may use (\d+) tokens/.exec(answer.json.error.message)![1]) - TPM;
    expect(prompt).toBeGreaterThan(0);
    const fits = await post({ prompt: PROMPT, max_tokens: TPM - prompt, temperature: 0, stop: ['\n'] }, tenant.key);
    expect(fits.status, JSON.stringify(fits.json)).toBe(200);
  });

  it('a stream cut short is charged for the tokens generated, not max_tokens', async () => {
    const TPM = 600;
    const maxTokens = 400;
    const tenant = await createTenantKey({ tokens_per_minute: TPM });
    const started = Date.now();
    const controller = new AbortController();
    const response = await fetch(`${edgeUrl()}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.key}` },
      // A prompt the shipped pair keeps going on (test/edge/cancellation.test.ts), with room for hundreds of tokens.
      body: JSON.stringify({ prompt: 'function parse(input) {\n  const tokens = [];\n', max_tokens: maxTokens, temperature: 0, stream: true, return_token_ids: true }),
      signal: controller.signal,
    });
    expect(response.status).toBe(200);
    const reservedLeft = Number(response.headers.get('x-ratelimit-remaining-tokens'));
    const prompt = TPM - maxTokens - reservedLeft; // the reservation, less a refill of under one token
    expect(prompt).toBeGreaterThan(5);
    expect(prompt).toBeLessThan(30);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    let received = 0;
    while (received < 4) {
      const { value, done } = await reader.read();
      expect(done).toBe(false);
      text += value;
      received = [...text.matchAll(/"token_ids":\[([\d,]*)\]/g)].reduce((n, m) => n + (m[1] ? m[1].split(',').length : 0), 0);
    }
    controller.abort();

    // The generation stops within a round or so of the disconnect (cancellation.test.ts); its settlement
    // gives back what it did not generate. Far fewer than max_tokens are generated: allow a quarter.
    const mostCharged = prompt + maxTokens / 4;
    let left = 0;
    const deadline = Date.now() + 4_000;
    do {
      await sleep(250);
      left = await tokensLeft(tenant.key);
    } while (left < TPM - mostCharged && Date.now() < deadline);
    const charged = TPM - left; // at most: refill only makes it look smaller
    expect(charged, `charged ${charged} tokens ${Date.now() - started} ms after a stream cut short after ${received} tokens (reservation ${prompt + maxTokens})`).toBeLessThanOrEqual(mostCharged);
    expect(left).toBeLessThanOrEqual(Math.floor(TPM - prompt - received + refillBound(TPM, Date.now() - started)));
  });

  it('tokens_per_day → 429 insufficient_quota (Retry-After: next UTC midnight); the day is charged what was generated', async () => {
    const TPD = 60;
    const tenant = await createTenantKey({ tokens_per_day: TPD });
    // Larger than the whole day's quota: never passes, so no Retry-After.
    const never = await post({ prompt: PROMPT, max_tokens: TPD, temperature: 0 }, tenant.key);
    expect(never.status).toBe(429);
    expect(never.json.error).toMatchObject({ type: 'rate_limit_error', code: 'request_too_large' });
    expect(never.json.error.message).toMatch(new RegExp(`more than the daily quota of ${TPD}`));
    expect(header(never, 'retry-after')).toBeNull();

    const first = await post({ prompt: PROMPT, max_tokens: 40, temperature: 0, stop: ['\n'] }, tenant.key);
    expect(first.status).toBe(200);
    const prompt = first.json.usage.prompt_tokens;
    const used = first.json.usage.total_tokens;
    expect(first.json.usage.completion_tokens, 'precondition: generation ends early').toBeLessThan(20);
    // One token more than the day has left (which counts what `first` generated, not its 40): refused.
    const over = await post({ prompt: PROMPT, max_tokens: TPD - used - prompt + 1, temperature: 0 }, tenant.key);
    expect(over.status).toBe(429);
    expect(over.json.error).toMatchObject({ type: 'rate_limit_error', code: 'insufficient_quota', param: null });
    expect(over.json.error.message).toBe(`Daily quota reached: ${TPD} tokens per day (UTC), ${used} used; this request may use ${TPD - used + 1}.`);
    const midnight = new Date();
    midnight.setUTCHours(24, 0, 0, 0);
    const untilMidnight = (midnight.getTime() - over.at) / 1000;
    expect(numberHeader(over, 'retry-after')).toBeGreaterThanOrEqual(Math.floor(untilMidnight));
    expect(numberHeader(over, 'retry-after')).toBeLessThanOrEqual(Math.ceil(untilMidnight) + 2);
    // Exactly what is left: admitted.
    const exact = await post({ prompt: PROMPT, max_tokens: TPD - used - prompt, temperature: 0, stop: ['\n'] }, tenant.key);
    expect(exact.status, JSON.stringify(exact.json)).toBe(200);
  });

  it('tenant caps: max_tokens, max_draft_length, max_depth → 400 naming the param; at the cap → 200', async () => {
    const tenant = await createTenantKey({ max_tokens: 8, max_draft_length: 2, max_depth: 1 });
    const refusals: Array<[Record<string, unknown>, string, number]> = [
      [{ max_tokens: 9 }, 'max_tokens', 8],
      [{ speculation: { draft_length: 3 } }, 'speculation.draft_length', 2],
      [{ speculation: { mode: 'pipelined', depth: 2 } }, 'speculation.depth', 1],
    ];
    for (const [extra, param, cap] of refusals) {
      const answer = await post(small(extra), tenant.key);
      expect(answer.status, param).toBe(400);
      expect(answer.json.error).toMatchObject({ type: 'invalid_request_error', param, code: 'limit_exceeded' });
      expect(answer.json.error.message).toContain(`'${param}': at most ${cap}`);
    }
    for (const extra of [{ max_tokens: 8 }, { speculation: { draft_length: 2 } }, { speculation: { mode: 'pipelined', depth: 1 } }]) {
      const answer = await post(small(extra), tenant.key);
      expect(answer.status, JSON.stringify(extra)).toBe(200);
    }
    // The deployment's default draft length (4) above the cap is lowered to it, quietly.
    const defaults = await post(small(), tenant.key);
    expect(defaults.status).toBe(200);
    expect(defaults.json.speculation.draft_length).toBe(2);
    // Without caps the same requests pass.
    expect((await post(small({ max_tokens: 9, speculation: { draft_length: 3 } }), apiKey())).status).toBe(200);
  });
});

describe('limits hold across isolates (two wrangler dev processes, one RateLimiter namespace)', () => {
  it('requests alternating between the two edges with one key: exactly N admitted in total; tokens settled on one are seen on the other', async () => {
    const pair = await pairStart;
    expect(pair.a.process.pid).not.toBe(pair.b.process.pid);
    const N = 4;
    const sequential = await pair.createTenantKey({ requests_per_minute: N });
    const answers: Array<Answer & { edge: 'a' | 'b' }> = [];
    for (let i = 0; i < 2 * N; i++) {
      const edge = i % 2 ? 'b' : 'a';
      answers.push({ ...(await post(small(), sequential.key, pair[edge].url)), edge });
    }
    expect(answers.map((a) => `${a.edge}:${a.status}`)).toEqual(answers.map((a, i) => `${a.edge}:${i < N ? 200 : 429}`));
    // One bucket: the remaining count goes down across both edges.
    expect(answers.slice(0, N).map((a) => header(a, 'x-ratelimit-remaining-requests'))).toEqual(Array.from({ length: N }, (_, i) => String(N - 1 - i)));

    // At once, half on each edge: still exactly N. The two workerd processes share the local D1
    // database as one SQLite file, which answers concurrent reads from both with SQLITE_BUSY (a 500
    // at key lookup; production D1 is a service, not a shared file). So each edge looks the key up
    // once first (GET /v1/models: auth only, no rate limit), and the burst runs on the key caches.
    const burst = await pair.createTenantKey({ requests_per_minute: N });
    for (const edge of [pair.a, pair.b]) expect((await fetch(`${edge.url}/v1/models`, { headers: { authorization: `Bearer ${burst.key}` } })).status).toBe(200);
    const fired = await Promise.all(Array.from({ length: N + 2 }, (_, i) => post(small(), burst.key, pair[i % 2 ? 'b' : 'a'].url)));
    const outcomes = fired.map((a, i) => `${i % 2 ? 'b' : 'a'}:${a.status}${a.status === 200 ? '' : `:${a.json?.error?.code}:${a.json?.error?.message}`}`);
    expect(fired.filter((a) => a.status === 200), outcomes.join('\n')).toHaveLength(N);
    expect(fired.filter((a) => a.status === 429), outcomes.join('\n')).toHaveLength(2);

    // Tokens: a request on A is settled in the object B's meter reads.
    const TPM = 240;
    const tokens = await pair.createTenantKey({ tokens_per_minute: TPM });
    const started = Date.now();
    const onA = await post({ prompt: PROMPT, max_tokens: 64, temperature: 0, stop: ['\n'] }, tokens.key, pair.a.url);
    expect(onA.status).toBe(200);
    const chargedLeft = TPM - onA.json.usage.total_tokens;
    const onB = await tokensLeft(tokens.key, pair.b.url);
    expect(onB).toBeGreaterThanOrEqual(chargedLeft);
    expect(onB).toBeLessThanOrEqual(Math.floor(chargedLeft + refillBound(TPM, Date.now() - started)));
  });
});
