import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DraftModelProposer } from '../../functions/proposers/draft-model';
import { LinkEstimator } from '../../functions/speculation/controller';
import { decode, type GenerationInput, type SpeculationPlan } from '../../functions/speculation/loop';
import { newStats, type SpeculationStats } from '../../functions/speculation/stats';
import { HttpOriginClient, type OriginClient } from '../../functions/upstream/client';
import { OriginPool } from '../../functions/upstream/pool';
import { SessionOriginClient } from '../../functions/upstream/session';
import { generateTokens } from '../../origin/generate';
import { TargetModel } from '../../origin/target';
import type { LoadedModel } from '../../shared/model';
import { DRAFT_DIR, loadFolderTokenizer, loadNodeModel, TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';
import { listenOrigin, type ListeningOrigin } from '../support/session-peer';

/**
 * The edge's session client (functions/upstream/session.ts) running the real
 * speculation loop in Node against a real origin over a socket: the output
 * is the target's whether the session serves every round, cannot open (an
 * origin without sessions), or drops mid-generation; discarded pipelined
 * rounds do not end the session.
 */
const secret = 'upstream-session-secret-0123456789';
let target: TargetModel;
let draft: LoadedModel;
let signed: ListeningOrigin;
let sessionless: ListeningOrigin;
let prompt: number[];
const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0 };
const maxTokens = 40;

beforeAll(async () => {
  const [t, d] = await Promise.all([loadNodeModel(TARGET_DIR), loadNodeModel(DRAFT_DIR, 'quantized')]);
  target = new TargetModel(t.lm);
  draft = d;
  signed = await listenOrigin({ id: 'with-sessions', modelName: 'edgespec-target', target, keys: new Map([['default', secret]]) });
  // An origin as an older build serves it: HTTP only, no upgrade handler.
  sessionless = await listenOrigin({ id: 'without-sessions', modelName: 'edgespec-target', target, keys: new Map([['default', secret]]) }, false);
  prompt = (await loadFolderTokenizer(TARGET_DIR)).encode(heldOutPrompts(1, 300)[0]);
});
afterAll(async () => {
  await signed?.close();
  await sessionless?.close();
});

/** The pool's HTTP client for one origin, and this generation's transport over it. */
function transport(origin: ListeningOrigin, stats: SpeculationStats, session = true) {
  const http = new HttpOriginClient(origin.url, 10_000, { name: 'origin-under-test', secret });
  const pool = new OriginPool([{ id: 'origin-under-test', url: origin.url, kind: 'reference', weight: 1, client: http }]);
  const poolSession = pool.session(null);
  return new SessionOriginClient(poolSession, session ? poolSession.sessionRoute() : null, { secret, timeoutMs: 10_000, cacheSalt: 'salt', vocabSize: target.config.vocabSize }, stats);
}

/** Tags every request with the tenant's salt, as functions/prefix-cache/tenant.ts does above the transport. */
const salted = (client: OriginClient, onVerdict: () => void = () => {}): OriginClient => ({
  health: () => client.health(),
  generate: (request, signal) => client.generate(request, signal),
  async verify(request, signal) {
    const verdict = await client.verify({ ...request, cache_salt: 'salt' }, signal);
    onVerdict();
    return verdict;
  },
});

async function run(client: OriginClient, plan: SpeculationPlan, stats: SpeculationStats) {
  const input: GenerationInput = { prompt, maxTokens, sampling: greedy, stopTokenIds: new Set(), maxPositions: target.config.maxPositions };
  const tokens: number[] = [];
  for await (const piece of decode(input, plan, () => new DraftModelProposer(draft.lm, 32), client, stats, undefined, new LinkEstimator())) tokens.push(...piece);
  return tokens;
}

const lockstep: SpeculationPlan = { mode: 'lockstep', method: 'token', draftLength: 4, depth: 1, minConfidence: 0 };
const pipelined: SpeculationPlan = { mode: 'pipelined', method: 'token', draftLength: 3, depth: 3, minConfidence: 0 };

async function targetOnly(): Promise<number[]> {
  const tokens: number[] = [];
  for await (const event of generateTokens(target, { context: prompt, max_tokens: maxTokens, sampling: { ...greedy, offset: 0 }, stop_token_ids: [] })) if (event.type === 'token') tokens.push(event.token);
  return tokens;
}

describe('the edge session client', () => {
  it('serves every round over the session, lockstep and pipelined (discarded blocks keep it open): the target’s tokens', async () => {
    const reference = await targetOnly();
    for (const plan of [lockstep, pipelined]) {
      const stats = newStats(plan.mode, plan.draftLength, plan.method);
      const client = transport(signed, stats);
      expect(await run(salted(client), plan, stats)).toEqual(reference);
      client.close();
      expect(stats).toMatchObject({ transport: 'websocket', sessionFallbacks: 0 });
      if (plan === pipelined) expect(stats.discardedRounds).toBeGreaterThan(0);
    }
  });

  it('an origin without sessions: every round over HTTP, counted as fallbacks, same tokens', async () => {
    const stats = newStats('lockstep', 4, 'token');
    const client = transport(sessionless, stats);
    expect(await run(salted(client), lockstep, stats)).toEqual(await targetOnly());
    client.close();
    expect(stats.transport).toBe('http');
    expect(stats.sessionFallbacks).toBe(stats.rounds);
  });

  it('ORIGIN_SESSION http: no session, no fallbacks counted, queue time still summed', async () => {
    const stats = newStats('lockstep', 4, 'token');
    const client = transport(signed, stats, false);
    expect(await run(salted(client), lockstep, stats)).toEqual(await targetOnly());
    expect(stats).toMatchObject({ transport: 'http', sessionFallbacks: 0 });
    expect(stats.originQueueMs).toBeGreaterThanOrEqual(0);
  });

  it('the session drops mid-generation: the rest goes over HTTP, no token lost or repeated', async () => {
    for (const plan of [lockstep, pipelined]) {
      const stats = newStats(plan.mode, plan.draftLength, plan.method);
      const client = transport(signed, stats);
      let verdicts = 0;
      // The origin closes every session (as on a restart) after the third verdict, with rounds possibly in flight.
      const tokens = await run(salted(client, () => ++verdicts === 3 && signed.sessions.closeAll()), plan, stats);
      client.close();
      expect(tokens).toEqual(await targetOnly());
      expect(stats.transport).toBe('websocket');
      expect(stats.sessionFallbacks).toBeGreaterThan(0);
      expect(stats.sessionFallbacks).toBeLessThan(stats.rounds + stats.discardedRounds);
    }
  });

  it('an aborted round is forgotten, not fatal: the next round still goes over the session', async () => {
    const stats = newStats('lockstep', 4, 'token');
    const client = transport(signed, stats);
    const sampling = { ...greedy, offset: 0 };
    const discard = new AbortController();
    const abandoned = client.verify({ context: prompt, draft: [{ token: 1 }], sampling, method: 'token', cache_salt: 'salt' }, discard.signal);
    discard.abort(new DOMException('discarded', 'AbortError'));
    await expect(abandoned).rejects.toThrow(/discarded/);
    const verdict = await client.verify({ context: [...prompt, 1], draft: [{ token: 2 }], sampling: { ...sampling, offset: 1 }, method: 'token', cache_salt: 'salt' });
    expect(verdict.tokens.length).toBeGreaterThanOrEqual(1);
    expect(stats).toMatchObject({ transport: 'websocket', sessionFallbacks: 0 });
    client.close();
    // After close, a (late) round goes over HTTP.
    await client.verify({ context: prompt, draft: [], sampling, method: 'token', cache_salt: 'salt' });
    expect(stats.sessionFallbacks).toBe(1);
  });
});
