import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdge, startOrigin, type Service } from '../../scripts/stack';
import { GARBAGE_MARKER, GENERATE_KINDS, GENERATE_KINDS_BEFORE_FIRST_TOKEN, LEAK_URL, VERIFY_KINDS } from '../support/broken-origin';
import { DRAFT_DIR, TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * The edge validates every origin reply (real workerd). A real reference
 * origin ("good") and a broken one (test/support/broken-origin.ts: a correct
 * /health, garbage of many kinds on /v1/verify and /v1/generate) sit behind
 * one edge, the broken one with a far higher weight so it is asked first.
 * Every garbage reply must count as that origin's failure and fail over: the
 * output stays token-for-token the target's greedy output, and nothing of the
 * garbage (text, URLs) reaches the client. Behind an edge with only the broken
 * origin, the client gets a clean OpenAI-shaped 5xx, streamed or not.
 *
 * Ports 20831-20835 (this file's own; origin-pool.test.ts uses 2081x).
 */
const ports = { good: 20831, broken: 20832, edgeBoth: 20833, edgeBroken: 20834 };
const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const maxTokens = 20;
/** Breakers that never open on the broken origin (its /health probes succeed, and reset the count), so every request meets it first. */
const poolVars = { ORIGIN_BREAKER_FAILURES: '100', ORIGIN_BREAKER_COOLDOWN_MS: '100', ORIGIN_HEALTH_INTERVAL_MS: '500', ORIGIN_RETRIES: '2', ORIGIN_TIMEOUT_MS: '15000' };

let good: Service;
let broken: Service;
let edgeBoth: Service;
let edgeBroken: Service;

/** The broken origin as a child process, up once its /health answers. */
async function startBrokenOrigin(upstream: string): Promise<Service> {
  const url = `http://127.0.0.1:${ports.broken}`;
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/broken-origin.ts'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BROKEN_ORIGIN_PORT: String(ports.broken), BROKEN_ORIGIN_UPSTREAM: upstream, BROKEN_ORIGIN_ID: 'broken' },
  });
  const output: string[] = [];
  child.stdout.on('data', (d) => output.push(String(d)));
  child.stderr.on('data', (d) => output.push(String(d)));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`broken origin exited (${child.exitCode}):\n${output.join('')}`);
    const ok = await fetch(`${url}/health`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`broken origin did not come up:\n${output.join('')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    process: child,
    output: () => output.join(''),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

beforeAll(async () => {
  good = await startOrigin({ port: ports.good, id: 'good', targetDir: TARGET_DIR });
  broken = await startBrokenOrigin(good.url);
  const edge = (port: number, origins: unknown[]) =>
    startEdge({ port, originUrl: 'http://127.0.0.1:9', persistTo: `.wrangler/test-state-${port}`, draftDir: DRAFT_DIR, vars: { ORIGINS: JSON.stringify(origins), ...poolVars } });
  [edgeBoth, edgeBroken] = await Promise.all([
    edge(ports.edgeBoth, [
      { id: 'broken', url: broken.url, weight: 1000 },
      { id: 'good', url: good.url, weight: 1 },
    ]),
    edge(ports.edgeBroken, [{ id: 'broken', url: broken.url }]),
  ]);
});
afterAll(async () => {
  await Promise.all([edgeBoth?.stop(), edgeBroken?.stop()]);
  await Promise.all([broken?.stop(), good?.stop()]);
});

/** Works before and after startEdge returns the tenant key it creates. */
const authorization = (edge: Service) => `Bearer ${(edge as any).apiKey ?? 'none'}`;

async function post(edge: Service, body: Record<string, unknown>) {
  const response = await fetch(`${edge.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: authorization(edge) },
    body: JSON.stringify(body),
  });
  return { status: response.status, contentType: response.headers.get('content-type') ?? '', text: await response.text() };
}

/** A completion's token ids and text, streamed (SSE) or not. Fails the test on any error. */
async function completion(edge: Service, body: Record<string, unknown>) {
  const { status, contentType, text } = await post(edge, { ...body, return_token_ids: true });
  expectClean(text);
  expect(status, text).toBe(200);
  if (!body.stream) {
    const json = JSON.parse(text);
    return { promptIds: json.choices[0].prompt_token_ids as number[], ids: json.choices[0].token_ids as number[], origin: json.speculation.origin as string };
  }
  expect(contentType).toMatch(/text\/event-stream/);
  const chunks = sseData(text);
  expect(chunks.at(-1)).toBe('[DONE]');
  const parsed = chunks.slice(0, -1).map((d) => JSON.parse(d));
  const error = parsed.find((c) => c.error);
  if (error) expectClean(JSON.stringify(error), { error: true });
  expect(error, JSON.stringify(error)).toBeUndefined();
  const last = parsed.filter((c) => c.choices?.length).at(-1);
  return {
    promptIds: parsed.find((c) => c.choices?.[0]?.prompt_token_ids)?.choices[0].prompt_token_ids as number[] | undefined,
    ids: parsed.flatMap((c) => c.choices?.[0]?.token_ids ?? []) as number[],
    origin: last?.speculation?.origin as string,
  };
}

function sseData(text: string): string[] {
  return text
    .split('\n\n')
    .map((event) => event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n'))
    .filter(Boolean);
}

/**
 * Nothing of the broken origin's replies and no origin URL in what the client received; for an
 * error no URL at all (a completion's generated text may legitimately hold one).
 */
function expectClean(text: string, { error = false } = {}) {
  expect(text).not.toContain(GARBAGE_MARKER);
  expect(text).not.toContain(LEAK_URL);
  expect(text).not.toContain(`127.0.0.1:${ports.broken}`);
  expect(text).not.toContain(`127.0.0.1:${ports.good}`);
  if (error) expect(text).not.toMatch(/[a-z]+:\/\//i);
}

/** The target's own greedy decoding of `context`, straight from the good origin: the reference output. */
async function originGreedy(context: number[], max: number): Promise<number[]> {
  const response = await fetch(`${good.url}/v1/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ context, max_tokens: max, sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 }, stop_token_ids: eosIds }),
  });
  expect(response.status).toBe(200);
  return (await response.text())
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .flatMap((e) => (e.type === 'token' ? [e.token as number] : []));
}

const control = (modes: { verify?: string; generate?: string }) =>
  fetch(`${broken.url}/__control`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(modes) }).then((r) => r.json());
const served = async () => ((await (await fetch(`${broken.url}/__stats`)).json()) as { served: { verify: Record<string, number>; generate: Record<string, number> } }).served;

const prompts = heldOutPrompts(4, 200);
/** Reference outputs by prompt, from the good origin. */
const references = new Map<string, number[]>();
async function reference(prompt: string, promptIds: number[]): Promise<number[]> {
  if (!references.has(prompt)) references.set(prompt, await originGreedy(promptIds, maxTokens));
  return references.get(prompt)!;
}

describe('an origin pool whose preferred origin answers garbage', () => {
  it('speculative greedy output is the target greedy output for every kind of malformed verify reply, streamed or not', async () => {
    for (const [i, kind] of VERIFY_KINDS.entries()) {
      await control({ verify: kind });
      const prompt = prompts[i % prompts.length];
      for (const stream of [false, true]) {
        const body = { prompt, max_tokens: maxTokens, temperature: 0, stream, speculation: { mode: 'lockstep', draft_length: 4 } };
        const { promptIds, ids, origin } = await completion(edgeBoth, body);
        const expected = await reference(prompt, promptIds ?? (await completion(edgeBoth, { ...body, stream: false })).promptIds!);
        expect(ids, `verify garbage "${kind}", stream ${stream}`).toEqual(expected);
        expect(origin).toBe('good');
      }
    }
    const { verify } = await served();
    for (const kind of VERIFY_KINDS) expect(verify[kind], `the broken origin served "${kind}"`).toBeGreaterThanOrEqual(2);
  });

  it('origin-only output is the target greedy output for every kind of malformed generate stream, also when it breaks mid-stream', async () => {
    for (const [i, kind] of GENERATE_KINDS.entries()) {
      await control({ generate: kind });
      const prompt = prompts[i % prompts.length];
      for (const stream of [false, true]) {
        const body = { prompt, max_tokens: maxTokens, temperature: 0, stream, speculation: { draft_length: 0 } };
        const { promptIds, ids, origin } = await completion(edgeBoth, body);
        const expected = await reference(prompt, promptIds ?? (await completion(edgeBoth, { ...body, stream: false })).promptIds!);
        expect(ids, `generate garbage "${kind}", stream ${stream}`).toEqual(expected);
        // A stream that broke after relaying real tokens was served by both, in that order.
        expect(origin).toBe(kind.startsWith('proxy-') && expected.length > 2 ? 'broken,good' : 'good');
      }
    }
    const { generate } = await served();
    for (const kind of GENERATE_KINDS) expect(generate[kind], `the broken origin served "${kind}"`).toBeGreaterThanOrEqual(2);
  });
});

describe('an edge whose only origin answers garbage', () => {
  /** A clean OpenAI-shaped 5xx in JSON: no garbage, no URL. */
  async function expectCleanServerError(body: Record<string, unknown>, what: string) {
    const { status, contentType, text } = await post(edgeBroken, body);
    expectClean(text, { error: true });
    expect(status, `${what}: ${text}`).toBeGreaterThanOrEqual(500);
    expect(status).toBeLessThan(600);
    expect(contentType, what).toMatch(/application\/json/);
    const json = JSON.parse(text);
    expect(json, what).toMatchObject({ error: { message: expect.any(String), type: expect.any(String) } });
    expect(Object.keys(json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  }

  it('speculative decoding: every kind of malformed verify reply is a clean 5xx, streamed or not', async () => {
    for (const kind of VERIFY_KINDS) {
      await control({ verify: kind });
      for (const stream of [false, true]) {
        await expectCleanServerError({ prompt: prompts[0], max_tokens: 8, temperature: 0, stream, speculation: { mode: 'lockstep', draft_length: 4 } }, `verify "${kind}", stream ${stream}`);
      }
    }
  });

  it('origin-only decoding: every stream that fails before its first token is a clean 5xx, streamed or not', async () => {
    for (const kind of GENERATE_KINDS_BEFORE_FIRST_TOKEN) {
      await control({ generate: kind });
      for (const stream of [false, true]) {
        await expectCleanServerError({ prompt: prompts[1], max_tokens: 8, temperature: 0, stream, speculation: { draft_length: 0 } }, `generate "${kind}", stream ${stream}`);
      }
    }
  });

  it('origin-only decoding: a stream that relays real tokens and then breaks is resumed (on the same origin) and stays exact, never leaking the garbage', async () => {
    await control({ generate: 'proxy-then-error-event' });
    const body = { prompt: prompts[2], max_tokens: maxTokens, temperature: 0, speculation: { draft_length: 0 } };
    const { promptIds, ids } = await completion(edgeBroken, body);
    expect(ids).toEqual(await reference(prompts[2], promptIds!));
    const streamed = await completion(edgeBroken, { ...body, stream: true });
    expect(streamed.ids).toEqual(ids);
  });
});
