import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { protocolBodyLimit } from '../../origin/body-limit';
import { ForwardQueue } from '../../origin/queue';
import { TargetModel } from '../../origin/target';
import { signRequest } from '../../shared/origin-auth';
import type { VerifyRequest, VerifyResponse, WireSampling } from '../../shared/protocol';
import { sharedPrefixLength } from '../../shared/session-protocol';
import { loadFolderTokenizer, loadNodeModel, TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';
import { connectPeer, listenOrigin, openMessage, type ListeningOrigin, type Peer } from '../support/session-peer';

/**
 * The origin's session endpoint (origin/session.ts) over a real socket:
 * authentication in the open message (signed, replay-protected, 1008 on
 * refusal), context rebuilt from keep/append giving exactly POST /v1/verify's
 * verdicts, bad messages answered with errors on a socket that stays usable,
 * bounds (size, context, vocabulary, session cap, idle timeout).
 */
const secret = 'session-secret-0123456789abcdef';
const greedy: WireSampling = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
let target: TargetModel;
let origin: ListeningOrigin;
let queue: ForwardQueue;
let prompts: number[][];
let vocab: number;
let maxPositions: number;

beforeAll(async () => {
  const model = await loadNodeModel(TARGET_DIR);
  target = new TargetModel(model.lm);
  vocab = model.config.vocabSize;
  maxPositions = model.config.maxPositions;
  queue = new ForwardQueue(1, 64);
  origin = await listenOrigin({ id: 'session-origin', modelName: 'edgespec-target', target, keys: new Map([['default', secret]]), queue });
  const tokenizer = await loadFolderTokenizer(TARGET_DIR);
  prompts = heldOutPrompts(2, 600).map((p) => tokenizer.encode(p));
});
afterAll(() => origin?.close());

async function httpVerify(request: VerifyRequest): Promise<VerifyResponse> {
  const body = JSON.stringify(request);
  const headers = await signRequest(secret, 'POST', '/v1/verify', body);
  const response = await fetch(origin.url + '/v1/verify', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  expect(response.status).toBe(200);
  return (await response.json()) as VerifyResponse;
}

async function openSession(params: Record<string, unknown> = { cache_salt: 'tenant-a' }): Promise<Peer> {
  const peer = await connectPeer(origin.url);
  peer.send(await openMessage(params, secret));
  return peer;
}

/** The edge's side of the diff rule: keep what `known` shares with the context, append the rest; known = context + draft after sending. */
function differ() {
  let known: number[] = [];
  return (id: number, request: Omit<VerifyRequest, 'cache_salt' | 'model'>) => {
    const keep = sharedPrefixLength(known, request.context);
    known = [...request.context, ...request.draft.map((d) => d.token)];
    return { type: 'verify', id, keep, append: request.context.slice(keep), draft: request.draft, sampling: request.sampling, method: request.method, ...(request.logprobs !== undefined ? { logprobs: request.logprobs } : {}) };
  };
}

/** The HTTP answer to a WebSocket upgrade request that is refused (a 101 would be an 'upgrade' event instead). */
function upgradeAnswer(url: string): Promise<{ status: number; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode!, ...(res.headers['retry-after'] ? { retryAfter: String(res.headers['retry-after']) } : {}) });
    });
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      reject(new Error('the upgrade was accepted'));
    });
    req.on('error', reject);
    req.end();
  });
}

const verdictOf = (message: any): Pick<VerifyResponse, 'accepted' | 'tokens' | 'logprobs'> => ({ accepted: message.accepted, tokens: message.tokens, ...(message.logprobs ? { logprobs: message.logprobs } : {}) });

describe('origin sessions (/v1/session)', () => {
  it('/health advertises sessions', async () => {
    expect(await (await fetch(origin.url + '/health')).json()).toMatchObject({ session: true });
  });

  it('a signed open is accepted; rounds rebuilt from keep/append give exactly the verdicts of POST /v1/verify, and the prefix is not re-run', async () => {
    const peer = await openSession();
    const toMessage = differ();
    for (const [sampling, logprobs] of [[greedy, undefined], [{ temperature: 0.8, top_p: 0.95, top_k: 0, seed: 7, offset: 0 }, 2]] as const) {
      const text = prompts[0];
      let context = text.slice(0, 60);
      for (let round = 0; round < 6; round++) {
        // The text's own next tokens as the draft: some accepted, some not.
        const draft = text.slice(context.length, context.length + 4).map((token) => ({ token }));
        const request = { context, draft, sampling: { ...sampling, offset: context.length - 60 }, method: 'token' as const, ...(logprobs !== undefined ? { logprobs } : {}) };
        const id = round + (logprobs === undefined ? 0 : 100);
        peer.send(toMessage(id, request));
        const verdict = await peer.next();
        expect(verdict).toMatchObject({ type: 'verdict', id, origin: { id: 'session-origin', queue_ms: expect.any(Number) } });
        // After the first round the session's sequence is held: only the new tokens run.
        if (round > 0) expect(verdict.origin.cached_tokens).toBeGreaterThanOrEqual(context.length - 1);
        const http = await httpVerify({ ...request, cache_salt: 'tenant-a' });
        expect(verdictOf(verdict).tokens).toEqual(http.tokens);
        expect(verdict.accepted).toBe(http.accepted);
        if (logprobs !== undefined) verdict.logprobs.forEach((lp: any, i: number) => expect(lp.logprob).toBeCloseTo(http.logprobs![i].logprob, 4));
        context = [...context, ...verdict.tokens];
      }
    }
    peer.socket.close();
  });

  it('pipelined rounds: the next diff is computed before the verdict, assuming the drafts accepted', async () => {
    const peer = await openSession();
    const toMessage = differ();
    const text = prompts[1];
    const first = { context: text.slice(0, 50), draft: text.slice(50, 53).map((token) => ({ token })), sampling: greedy, method: 'token' as const };
    const second = { context: text.slice(0, 53), draft: text.slice(53, 56).map((token) => ({ token })), sampling: { ...greedy, offset: 3 }, method: 'token' as const };
    const m1 = toMessage(1, first);
    const m2 = toMessage(2, second);
    expect(m2).toMatchObject({ keep: 53, append: [] });
    peer.send(m1);
    peer.send(m2);
    const verdicts = [await peer.next(), await peer.next()].sort((a, b) => a.id - b.id);
    expect(verdictOf(verdicts[0])).toEqual(verdictOf(await httpVerify(first)));
    expect(verdictOf(verdicts[1])).toEqual(verdictOf(await httpVerify(second)));
    peer.socket.close();
  });

  it('refuses an open with a bad signature, without one, replayed or late, and a first message that is not an open: 1008 with a reason', async () => {
    const params = { cache_salt: 'x' };
    const cases: Array<[unknown, RegExp]> = [
      [await openMessage(params, 'another-secret-0123456789'), /^signature_invalid/],
      [await openMessage(params), /^signature_missing/],
      [await openMessage(params, secret, Date.now() - 120_000), /^signature_expired/],
      [{ ...(await openMessage(params, secret)), params: JSON.stringify({ cache_salt: 'y' }) }, /^signature_invalid/],
      [{ type: 'verify', id: 0, keep: 0, append: [1], draft: [], sampling: greedy, method: 'token' }, /expected an open message/],
      ['not json', /expected an open message/],
    ];
    for (const [message, reason] of cases) {
      const peer = await connectPeer(origin.url);
      peer.send(message);
      const closed = await peer.closed;
      expect(closed.code).toBe(1008);
      expect(closed.reason).toMatch(reason);
    }
    // The same signed open twice: the first opens a session, the copy is a replay.
    const open = await openMessage(params, secret);
    const first = await connectPeer(origin.url);
    first.send(open);
    first.send({ type: 'verify', id: 0, keep: 0, append: [1, 2, 3], draft: [], sampling: greedy, method: 'token' });
    expect(await first.next()).toMatchObject({ type: 'verdict', id: 0 });
    const replay = await connectPeer(origin.url);
    replay.send(open);
    expect(await replay.closed).toMatchObject({ code: 1008, reason: expect.stringMatching(/^signature_replayed/) });
    first.socket.close();
  });

  it('answers bad messages with errors in the OpenAI shape and stays usable', async () => {
    const peer = await openSession();
    const ok = { type: 'verify', keep: 0, append: [10, 20, 30], draft: [{ token: 5 }], sampling: greedy, method: 'token' };
    peer.send({ ...ok, id: 1 });
    expect(await peer.next()).toMatchObject({ type: 'verdict', id: 1 });
    const bad: Array<[unknown, Record<string, unknown>]> = [
      ['{not json', { status: 400, error: { code: 'invalid_json', type: 'invalid_request_error' }, reset: true }],
      [{ ...ok, id: 2, sampling: { ...greedy, temperature: 9 } }, { id: 2, status: 400, error: { param: 'sampling.temperature' }, reset: true }],
      [{ ...ok, id: 3, keep: 99 }, { id: 3, status: 400, error: { code: 'session_keep_out_of_range' } }],
      [{ ...ok, id: 4, append: [vocab] }, { id: 4, status: 400, error: { code: 'invalid_token' } }],
      [{ ...ok, id: 5, draft: [{ token: vocab + 1 }] }, { id: 5, status: 400, error: { code: 'invalid_token' } }],
      [{ ...ok, id: 6, append: new Array(maxPositions).fill(1) }, { id: 6, status: 413, error: { code: 'context_length_exceeded' } }],
      [{ ...ok, id: 7, keep: 0, append: [] }, { id: 7, status: 400 }],
      [{ ...ok, id: 8, extra: true }, { id: 8, status: 400, error: { code: 'unknown_parameter' } }],
      [await openMessage({}, secret), { status: 400, error: { code: 'session_already_open' } }],
      [{ type: 'cancel', id: 'x' }, { status: 400 }],
    ];
    for (const [message, expected] of bad) {
      peer.send(message);
      expect(await peer.next()).toMatchObject({ type: 'error', ...expected });
    }
    // Binary frames are refused the same way.
    peer.socket.send(new Uint8Array([1, 2, 3]));
    expect(await peer.next()).toMatchObject({ type: 'error', status: 400, reset: true });
    // After a refusal the origin's known is empty: keep 0 works, keep > 0 would not.
    peer.send({ ...ok, id: 9, keep: 1 });
    expect(await peer.next()).toMatchObject({ type: 'error', id: 9, error: { code: 'session_keep_out_of_range' } });
    peer.send({ ...ok, id: 10 });
    const verdict = await peer.next();
    expect(verdict).toMatchObject({ type: 'verdict', id: 10 });
    // ...and the diff continues from there.
    peer.send({ ...ok, id: 11, keep: 3, append: verdict.tokens });
    expect(await peer.next()).toMatchObject({ type: 'verdict', id: 11, origin: { cached_tokens: expect.any(Number) } });
    peer.socket.close();
  });

  it('closes with 1009 on a message larger than the body limit', async () => {
    const peer = await openSession();
    peer.send('x'.repeat(protocolBodyLimit(maxPositions) + 1));
    expect((await peer.closed).code).toBe(1009);
  });

  it('drops a cancelled round that has not started, and answers the rest', async () => {
    const peer = await openSession();
    const served = queue.stats();
    const round = (id: number) => ({ type: 'verify', id, keep: 0, append: prompts[0].slice(0, 200 + id), draft: [], sampling: greedy, method: 'token' });
    // Three rounds queue behind each other; the last is cancelled while it waits.
    peer.send(round(1));
    peer.send(round(2));
    peer.send(round(3));
    peer.send({ type: 'cancel', id: 3 });
    const answers = [await peer.next(), await peer.next()];
    expect(answers.map((a) => a.id).sort()).toEqual([1, 2]);
    await expect(peer.next(500)).rejects.toThrow(/no session message/);
    expect(queue.stats().dropped).toBe(served.dropped + 1);
    peer.socket.close();
  });

  it('caps open sessions (503 on the upgrade) and closes idle ones', async () => {
    const small = await listenOrigin({ id: 'small', modelName: 'edgespec-target', target, sessions: { maxSessions: 1, idleTimeoutMs: 300 } });
    try {
      const peer = await connectPeer(small.url);
      peer.send(await openMessage({}));
      expect(await upgradeAnswer(small.url + '/v1/session')).toEqual({ status: 503, retryAfter: '1' });
      expect(await upgradeAnswer(small.url + '/v1/other')).toMatchObject({ status: 404 });
      expect(await peer.closed).toMatchObject({ code: 1000, reason: expect.stringMatching(/idle/) });
      expect(small.sessions.open).toBe(0);
      const again = await connectPeer(small.url);
      again.socket.close();
    } finally {
      await small.close();
    }
  });
});
