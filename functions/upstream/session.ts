import { ApiError } from '../../shared/errors';
import { signRequest } from '../../shared/origin-auth';
import { verifyReplyProblem, type GenerateEvent, type GenerateRequest, type OriginHealth, type VerifyRequest, type VerifyResponse } from '../../shared/protocol';
import {
  CLOSE_NORMAL,
  closeReason,
  MAX_SERVER_MESSAGE_CHARS,
  SESSION_OPEN_METHOD,
  SESSION_PATH,
  sessionServerMessageSchema,
  sharedPrefixLength,
  type SessionOpen,
  type SessionVerify,
} from '../../shared/session-protocol';
import type { SpeculationStats } from '../speculation/stats';
import type { OriginClient } from './client';
import type { SessionRound, SessionRoute } from './pool';
import { connectSessionSocket, SessionRefused } from './session-socket';

/**
 * One generation's verify rounds over one session with its origin
 * (shared/session-protocol.ts): the context crosses once, each round carries
 * its new context tokens, drafts and sampling, and the verdict comes back on
 * the same socket; no signing, no request per round. It is an OriginClient,
 * so the speculation loop does not know: `verify` sends the round's diff
 * against what the session holds and answers with a VerifyResponse checked
 * exactly as HttpOriginClient checks a reply.
 *
 * Any trouble ends the session, never the generation: when it cannot open
 * (no route, an origin without sessions, a refused upgrade or signature) or
 * drops (the socket closes or errs, a malformed message, no verdict in
 * time), every round still waiting and every later one goes to `http`, the
 * pool's client, which fails over between origins as before. No token is lost
 * or repeated: a verify call is idempotent given its full request, which the
 * fallback sends. A round whose signal aborts (a discarded pipelined block)
 * is only forgotten: the origin is told to drop it (`cancel`), its answer is
 * ignored, and the session goes on.
 */
export type TransportStats = Pick<SpeculationStats, 'transport' | 'sessionFallbacks' | 'originQueueMs'>;

export interface SessionClientOptions {
  /** Session-wide fields of every verify request, sent once in the open message. */
  cacheSalt?: string;
  model?: string;
  /** Signs the open message (ORIGIN_SECRET and its key id), as HTTP requests are signed. */
  secret?: string;
  keyId?: string;
  /** A round without its verdict this long ends the session (ORIGIN_TIMEOUT_MS, as for an HTTP call). */
  timeoutMs: number;
  /** Every token of a verdict must be below it (the draft's vocabulary, which equals the target's). */
  vocabSize?: number;
}

/** The upgrade must complete this fast, or the rounds go over HTTP: a slow handshake must not hold the first round. */
const CONNECT_TIMEOUT_MS = 3000;
/** An origin that refused the upgrade itself (no session endpoint: an older build) is not asked again for this long, per isolate. */
const REFUSED_MEMORY_MS = 60_000;
const refusedUntil = new Map<string, number>();

interface Pending {
  request: VerifyRequest;
  signal?: AbortSignal;
  resolve(reply: VerifyResponse | Promise<VerifyResponse>): void;
  reject(err: unknown): void;
  timer: ReturnType<typeof setTimeout>;
  onAbort(): void;
  /** Its count as in flight on the session's origin (bounded-load routing, breaker). */
  round: SessionRound;
}

export class SessionOriginClient implements OriginClient {
  private state: 'connecting' | 'open' | 'closed';
  private socket: WebSocket | null = null;
  private route: SessionRoute | null = null;
  /** Resolves once the open message is on the wire (true), or the session will not be (false). */
  private readonly ready: Promise<boolean>;
  /** What the origin holds: context + draft tokens of the last verify message sent (shared/session-protocol.ts). */
  private known: readonly number[] = [];
  private nextId = 0;
  private readonly pending = new Map<number, Pending>();
  /** A session was meant to carry the rounds: those that go over HTTP are fallbacks. */
  private readonly sessionMeant: boolean;

  /**
   * `route`: where the session goes (PoolSession.sessionRoute), or null for
   * HTTP only (ORIGIN_SESSION = "http"). The socket starts opening now, so the
   * handshake overlaps the generation's setup and first draft.
   */
  constructor(
    private readonly http: OriginClient,
    route: Promise<SessionRoute | null> | null,
    private readonly options: SessionClientOptions,
    private readonly stats: TransportStats,
  ) {
    this.state = route ? 'connecting' : 'closed';
    this.sessionMeant = route !== null;
    this.ready = route
      ? this.start(route).catch((err: unknown) => {
          this.fail(`could not open (${describe(err)})`);
          return false;
        })
      : Promise.resolve(false);
  }

  health(): Promise<OriginHealth> {
    return this.http.health();
  }

  /** The origin's own stream (origin-only decoding, an adaptive hand-over): no more verify rounds follow, so the session ends. */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    this.close();
    return this.http.generate(request, signal);
  }

  async verify(request: VerifyRequest, signal?: AbortSignal): Promise<VerifyResponse> {
    signal?.throwIfAborted();
    // Every call awaits the same promise first, so rounds reach the socket in call order (their diffs chain).
    if (this.state !== 'closed' && (await this.ready) && this.state === 'open') {
      signal?.throwIfAborted();
      if (request.cache_salt === this.options.cacheSalt && request.model === this.options.model) return this.send(request, signal);
    }
    return this.viaHttp(request, signal);
  }

  /** Ends the session (the generation finished): the socket closes, a round still waiting is aborted. */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.socket?.close(CLOSE_NORMAL, 'generation finished');
    for (const [id, round] of this.pending) {
      this.settle(id, round);
      round.reject(new DOMException('the generation finished', 'AbortError'));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }

  private async start(routing: Promise<SessionRoute | null>): Promise<boolean> {
    const route = await routing;
    if (!route) throw new Error('no reference origin to open a session with');
    if ((refusedUntil.get(route.url) ?? 0) > Date.now()) throw new Error(`origin ${route.id} refused sessions recently`);
    this.route = route;
    const [socket, open] = await Promise.all([
      connectSessionSocket(route.url, CONNECT_TIMEOUT_MS).catch((err: unknown) => {
        // 404 / 426: this origin has no session endpoint (an older build). Busy (503) or unreachable is worth a retry next time.
        if (err instanceof SessionRefused && (err.status === 404 || err.status === 426 || err.status === 400)) refusedUntil.set(route.url, Date.now() + REFUSED_MEMORY_MS);
        throw err;
      }),
      this.openMessage(),
    ]);
    if (this.state === 'closed') {
      socket.close(CLOSE_NORMAL, 'generation finished');
      return false;
    }
    this.socket = socket;
    socket.addEventListener('message', (event) => this.receive(event.data));
    socket.addEventListener('close', (event) => this.fail(`closed by the origin (${event.code}${event.reason ? `: ${event.reason}` : ''})`));
    socket.addEventListener('error', () => this.fail('the socket failed'));
    socket.send(JSON.stringify(open));
    this.state = 'open';
    return true;
  }

  private async openMessage(): Promise<SessionOpen> {
    const { cacheSalt, model, secret, keyId } = this.options;
    const params = JSON.stringify({ ...(model !== undefined ? { model } : {}), ...(cacheSalt !== undefined ? { cache_salt: cacheSalt } : {}) });
    if (!secret) return { type: 'open', params };
    const headers = await signRequest(secret, SESSION_OPEN_METHOD, SESSION_PATH, params, Date.now(), keyId);
    return {
      type: 'open',
      params,
      auth: { key_id: headers['x-edgespec-key-id'], timestamp: headers['x-edgespec-timestamp'], nonce: headers['x-edgespec-nonce'], signature: headers['x-edgespec-signature'] },
    };
  }

  /** One round on the socket: the diff against `known`, sent synchronously so rounds chain in call order. */
  private send(request: VerifyRequest, signal?: AbortSignal): Promise<VerifyResponse> {
    const keep = sharedPrefixLength(this.known, request.context);
    const id = this.nextId++;
    const message: SessionVerify = {
      type: 'verify',
      id,
      keep,
      append: request.context.slice(keep),
      draft: request.draft,
      ...(request.branches?.length ? { branches: request.branches } : {}),
      sampling: request.sampling,
      method: request.method,
      ...(request.logprobs !== undefined ? { logprobs: request.logprobs } : {}),
    };
    try {
      this.socket!.send(JSON.stringify(message));
    } catch (err) {
      this.fail(`a send failed (${describe(err)})`);
      return this.viaHttp(request, signal);
    }
    this.known = request.context.concat(request.draft.map((d) => d.token));
    return new Promise<VerifyResponse>((resolve, reject) => {
      const round: Pending = {
        request,
        signal,
        resolve,
        reject,
        round: this.route!.begin(),
        timer: setTimeout(() => this.fail(`no verdict for round ${id} within ${this.options.timeoutMs} ms`, `session round timed out after ${this.options.timeoutMs} ms`), this.options.timeoutMs),
        onAbort: () => {
          // Discarded by the loop (or the client left): forget it, ask the origin to drop it if it has not run, keep the session.
          if (!this.pending.has(id)) return;
          this.settle(id, round);
          if (this.state === 'open') this.trySend(JSON.stringify({ type: 'cancel', id }));
          reject(signal!.reason);
        },
      };
      this.pending.set(id, round);
      signal?.addEventListener('abort', round.onAbort, { once: true });
    });
  }

  private receive(data: unknown): void {
    if (this.state !== 'open') return;
    if (typeof data !== 'string' || data.length > MAX_SERVER_MESSAGE_CHARS) return this.fail('sent a message that is not a bounded text frame', 'malformed session message');
    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch {
      return this.fail('sent a message that is not JSON', 'malformed session message');
    }
    const parsed = sessionServerMessageSchema.safeParse(value);
    if (!parsed.success) return this.fail(`sent a malformed message (${parsed.error.issues[0]?.path.join('.') || 'the message'}: ${parsed.error.issues[0]?.code})`, 'malformed session message');
    const message = parsed.data;
    if (message.type === 'error') {
      // The origin's known is empty now: the next round resends its whole context.
      if (message.reset) this.known = [];
      if (message.id === undefined) return this.fail(`reported ${message.error.code ?? message.status} for a message`);
      const round = this.pending.get(message.id);
      if (!round) return;
      this.settle(message.id, round);
      // The origin refused or failed this round: HTTP answers it, as it would have (a request error repeats with the
      // usual 4xx; an overloaded or failing origin is retried elsewhere). Its own text is logged only.
      console.error(`[edge] origin ${this.route?.id}: session round ${message.id} failed with ${message.status} ${message.error.code ?? ''}: ${message.error.message.slice(0, 300)}`);
      return round.resolve(this.viaHttp(round.request, round.signal));
    }
    const { type: _type, id, ...reply } = message;
    const round = this.pending.get(id);
    if (!round) {
      // A verdict of a round that was discarded is expected; of one never sent, not.
      if (id >= this.nextId) this.fail(`sent a verdict for round ${id}, which was never sent`, 'malformed session message');
      return;
    }
    const problem = verifyReplyProblem(round.request, reply, this.options.vocabSize);
    if (problem) return this.fail(`sent a malformed verdict: ${problem}`, 'malformed session verdict');
    this.settle(id, round, { served: true });
    this.stats.transport = 'websocket';
    this.stats.originQueueMs += reply.origin.queue_ms ?? 0;
    round.resolve(reply);
  }

  /** A round leaves `pending`: its timer, abort listener and in-flight count end; `served` = by a verdict, else dropped (a `failure` counts against the origin). */
  private settle(id: number, pending: Pending, outcome: { served: true } | { served: false; failure?: string } = { served: false }): void {
    this.pending.delete(id);
    clearTimeout(pending.timer);
    pending.signal?.removeEventListener('abort', pending.onAbort);
    if (outcome.served) pending.round.served();
    else pending.round.dropped(outcome.failure);
  }

  /**
   * The session is over: log why once, close the socket, and send every
   * round still waiting over HTTP. `failure`: the origin misbehaved (a
   * malformed message, a timeout), which counts against its breaker like a
   * malformed HTTP reply; a closed socket does not (the HTTP call that follows
   * finds out whether the origin is really gone).
   */
  private fail(why: string, failure?: string): void {
    if (this.state === 'closed') return;
    const wasOpen = this.state === 'open';
    this.state = 'closed';
    console.error(`[edge] origin ${this.route?.id ?? '(none)'}: session ${why}; verify rounds continue over HTTP`);
    if (wasOpen) {
      try {
        // 1000 with a reason: a WebSocket client may only close with 1000 or 3000-4999 (WHATWG WebSockets).
        this.socket?.close(CLOSE_NORMAL, closeReason(failure ?? 'session ended'));
      } catch {
        /* already closed */
      }
    }
    let first = true;
    for (const [id, round] of this.pending) {
      this.settle(id, round, { served: false, failure: first ? failure : undefined });
      first = false;
      round.resolve(this.viaHttp(round.request, round.signal));
    }
  }

  private trySend(text: string): void {
    try {
      this.socket?.send(text);
    } catch {
      /* the close event follows */
    }
  }

  /** A round over the pool's HTTP client: counted as a fallback when a session was meant to carry it. */
  private async viaHttp(request: VerifyRequest, signal?: AbortSignal): Promise<VerifyResponse> {
    if (this.sessionMeant) this.stats.sessionFallbacks++;
    const reply = await this.http.verify(request, signal);
    this.stats.originQueueMs += reply.origin.queue_ms ?? 0;
    return reply;
  }
}

function describe(err: unknown): string {
  if (err instanceof ApiError || err instanceof Error) return err.message;
  return String(err);
}
