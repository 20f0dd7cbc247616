import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, type EdgeService, type Service } from '../../scripts/stack';
import { complete, originGreedy, originUrl } from '../support/edge-client';
import { TARGET_DIR } from '../support/models';
import { startPoolEdge, streamUntilTokens } from '../support/pool-edge';
import { heldOutPrompts } from '../support/prompts';

/**
 * Origin sessions through the real edge (workerd): a generation's verify
 * rounds travel over one WebSocket (ORIGIN_SESSION "websocket", the default),
 * the output is the target's own, and a session whose origin dies mid-stream
 * fails over to HTTP on the other origin without a token lost or repeated.
 * Ports 20861-20862 are this file's own.
 */
const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const prompts = heldOutPrompts(12, 240);

describe('origin sessions through the edge', () => {
  it('greedy output over the session is the target’s own, and the stats say websocket', async () => {
    for (const speculation of [{ mode: 'lockstep', draft_length: 4 }, { mode: 'pipelined', draft_length: 3, depth: 2 }]) {
      for (const prompt of prompts.slice(0, 3)) {
        const { status, json } = await complete({ prompt, max_tokens: 32, temperature: 0, return_token_ids: true, speculation });
        expect(status).toBe(200);
        const choice = json.choices[0];
        expect(choice.token_ids).toEqual(await originGreedy(choice.prompt_token_ids, 32, eosIds));
        expect(json.speculation).toMatchObject({ transport: 'websocket', session_fallbacks: 0, origin_queue_ms: expect.any(Number) });
      }
    }
  });

  it('origin-only decoding opens no session', async () => {
    const { json } = await complete({ prompt: prompts[0], max_tokens: 4, temperature: 0, speculation: { draft_length: 0 } });
    expect(json.speculation).toMatchObject({ transport: 'http', session_fallbacks: 0 });
  });
});

describe('a session whose origin dies mid-stream', () => {
  const ports = { origin: Number(process.env.TEST_SESSION_ORIGIN_PORT ?? 20861), edge: Number(process.env.TEST_SESSION_EDGE_PORT ?? 20862) };
  const secret = randomBytes(32).toString('hex');
  const maxTokens = 96;
  let doomed: Service | null = null;
  let edge: EdgeService;
  /** The prompt the first test streamed, and its target-only output. */
  let home: { prompt: string; reference: number[] };
  // The shared stack's origin (unsigned: it takes signed calls too) survives; this file's own, signed, is killed.
  const startDoomed = (args: string[] = []) => startOrigin({ port: ports.origin, id: 'session-doomed', targetDir: TARGET_DIR, secret, args }).then((s) => (doomed = s));

  /** The shared origin's own id: verdicts name the origin that answered by the id it reports. */
  let survivor: string;

  beforeAll(async () => {
    survivor = ((await (await fetch(`${originUrl()}/health`)).json()) as { id: string }).id;
    await startDoomed();
    edge = await startPoolEdge({
      port: ports.edge,
      secret,
      origins: [
        { id: survivor, url: originUrl() },
        { id: 'session-doomed', url: doomed!.url },
      ],
    });
  });
  afterAll(async () => {
    await edge?.stop();
    await doomed?.stop();
  });

  const post = (body: Record<string, unknown>) => fetch(`${edge.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` }, body: JSON.stringify(body) });

  /** A prompt whose prefix lives on the doomed origin and that generates maxTokens tokens, with the target-only reference. */
  async function promptOnDoomed() {
    for (const prompt of prompts) {
      const json = (await (await post({ prompt, max_tokens: 2, temperature: 0, return_token_ids: true })).json()) as any;
      if (json.speculation.origin !== 'session-doomed') continue;
      const reference = await originGreedy(json.choices[0].prompt_token_ids, maxTokens, eosIds);
      if (reference.length === maxTokens && !reference.some((t) => eosIds.includes(t))) return { prompt, reference };
    }
    throw new Error('no held-out prompt lives on the doomed origin and generates the whole length');
  }

  const stream = (body: Record<string, unknown>, onFirstTokens: () => void) => streamUntilTokens(edge, body, onFirstTokens);

  it('the session carries the rounds while its origin lives; killed mid-stream, the rest fails over to HTTP on the other origin, tokens identical', async () => {
    home = await promptOnDoomed();
    const { prompt, reference } = home;
    const body = { prompt, max_tokens: maxTokens, temperature: 0, speculation: { mode: 'lockstep', draft_length: 4 } };
    const healthy = (await (await post({ ...body, return_token_ids: true })).json()) as any;
    expect(healthy.choices[0].token_ids).toEqual(reference);
    expect(healthy.speculation).toMatchObject({ origin: 'session-doomed', transport: 'websocket', session_fallbacks: 0 });

    const result = await stream(body, () => {
      doomed!.process.kill('SIGKILL');
      doomed = null;
    });
    expect(result.error).toBeNull();
    expect(result.ids).toEqual(reference);
    const spec = result.last.speculation;
    expect(spec.origin).toContain('session-doomed');
    expect(spec.origin).toContain(survivor);
    expect(spec.transport).toBe('websocket');
    expect(spec.session_fallbacks).toBeGreaterThan(0);
  });

  it('an origin without sessions (--max-sessions 0, as an older build): every round over HTTP, counted, same tokens', async () => {
    await startDoomed(['--max-sessions', '0']);
    const health = (await (await fetch(`${doomed!.url}/health`)).json()) as any;
    expect(health.session).toBeUndefined();
    // Its breaker opened when it died: wait until its prefixes come back to it (the half-open trial passes).
    const { prompt, reference } = home;
    const deadline = Date.now() + 20_000;
    while (((await (await post({ prompt, max_tokens: 1, temperature: 0 })).json()) as any).speculation.origin !== 'session-doomed') {
      if (Date.now() > deadline) throw new Error('the restarted origin did not get its prefix back within 20 s');
      await new Promise((r) => setTimeout(r, 300));
    }
    const json = (await (await post({ prompt, max_tokens: maxTokens, temperature: 0, return_token_ids: true, speculation: { mode: 'lockstep', draft_length: 4 } })).json()) as any;
    expect(json.choices[0].token_ids).toEqual(reference);
    expect(json.speculation).toMatchObject({ origin: 'session-doomed', transport: 'http' });
    expect(json.speculation.session_fallbacks).toBe(json.speculation.rounds);
  });
});
