import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { ApiError, isApiError } from '../shared/errors';
import { checkSignature, DEFAULT_MAX_AGE_MS, type KeyRing } from '../shared/origin-auth';
import type { VerifyRequest, VerifyResponse } from '../shared/protocol';
import {
  CLOSE_GOING_AWAY,
  CLOSE_NORMAL,
  CLOSE_POLICY,
  closeReason,
  SESSION_OPEN_METHOD,
  SESSION_PATH,
  sessionClientMessageSchema,
  sessionParamsSchema,
  type SessionError,
  type SessionOpen,
  type SessionParams,
  type SessionVerdict,
  type SessionVerify,
} from '../shared/session-protocol';
import { parseRequest } from '../shared/validation';
import type { SeenSignatures } from './replay';
import type { HeldSequence } from './target-kv-cache';

/**
 * The origin's end of the session protocol (shared/session-protocol.ts):
 * WebSocket sessions on /v1/session, attached to the Node HTTP server's
 * `upgrade` event. Every verify message runs through the same `verifyRound`
 * as POST /v1/verify (one forward-pass queue, cost model and set of metrics),
 * its context rebuilt from what the session already holds. Nothing a peer
 * sends can throw out of here: a bad message is an error message, a bad open
 * a close with 1008 and a reason.
 */
export interface SessionServerOptions {
  keys: KeyRing;
  /** The replay cache signed HTTP requests use: an open's signature is as unique as a request's. */
  seenSignatures: SeenSignatures;
  limits: { vocabSize: number; maxPositions: number };
  /** Largest message read (the socket closes with 1009 beyond): the body limit of POST /v1/verify. */
  maxMessageBytes: number;
  verifyRound(request: VerifyRequest, signal: AbortSignal): Promise<VerifyResponse>;
  /** Keeps a session's live sequence warm (origin/target-kv-cache.ts). */
  holdSequence?(cacheSalt: string): HeldSequence;
  /** Sessions open at once; an upgrade beyond is refused with 503 + Retry-After (the edge then uses HTTP). */
  maxSessions?: number;
  /** A session with no message and no pass in flight for this long is closed. */
  idleTimeoutMs?: number;
  /** The open message must arrive this soon after the upgrade. */
  openTimeoutMs?: number;
  onSessionCount?(open: number): void;
}

export const DEFAULT_MAX_SESSIONS = 256;
export const DEFAULT_SESSION_IDLE_MS = 60_000;
const DEFAULT_OPEN_TIMEOUT_MS = 10_000;
/** Rounds one session may have queued or running: pipelined edges keep at most 8 (PIPELINE_DEPTH). */
const MAX_ROUNDS_IN_FLIGHT = 32;
/** Replies the edge has not read, in bytes, before the session is closed: a peer that stops reading must not fill memory. */
const MAX_UNREAD_BYTES = 4 << 20;

export class OriginSessions {
  private readonly wss: WebSocketServer;
  private readonly sessions = new Set<Session>();
  private servers = 0;

  constructor(private readonly options: SessionServerOptions) {
    // No compression: messages are a few hundred bytes, and deflate would cost more than it saves.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: options.maxMessageBytes, perMessageDeflate: false });
  }

  /** True once attached to a listening server: /health then says `session: true`. */
  get attached(): boolean {
    return this.servers > 0;
  }

  get open(): number {
    return this.sessions.size;
  }

  /** Serve /v1/session on `server`; every other upgrade is refused (404). */
  attach(server: Server): void {
    this.servers++;
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(request, socket, head));
    server.on('close', () => this.closeAll(CLOSE_GOING_AWAY, 'origin shutting down'));
  }

  closeAll(code = CLOSE_GOING_AWAY, reason = 'origin shutting down'): void {
    for (const session of this.sessions) session.close(code, reason);
  }

  private upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    // A reset socket must never become an uncaught 'error'.
    socket.on('error', () => {});
    let path: string;
    try {
      path = new URL(request.url ?? '/', 'http://origin').pathname;
    } catch {
      return refuseUpgrade(socket, 400, 'Bad Request');
    }
    if (path !== SESSION_PATH) return refuseUpgrade(socket, 404, 'Not Found');
    if (request.headers.upgrade?.toLowerCase() !== 'websocket') return refuseUpgrade(socket, 400, 'Bad Request');
    const max = this.options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    if (this.sessions.size >= max) return refuseUpgrade(socket, 503, 'Service Unavailable', { 'retry-after': '1' });
    // ws answers a malformed handshake (bad key, version) with 400 itself.
    this.wss.handleUpgrade(request, socket, head, (ws) => {
      const session = new Session(ws, this.options, () => {
        this.sessions.delete(session);
        this.options.onSessionCount?.(this.sessions.size);
      });
      this.sessions.add(session);
      this.options.onSessionCount?.(this.sessions.size);
    });
  }
}

function refuseUpgrade(socket: Duplex, status: number, text: string, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const lines = [`HTTP/1.1 ${status} ${text}`, 'connection: close', 'content-length: 0', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.end(lines.join('\r\n') + '\r\n\r\n');
}

/** One session: awaiting its open, then open until either side closes or it idles out. */
class Session {
  private state: 'awaiting-open' | 'open' | 'closed' = 'awaiting-open';
  private params: SessionParams = {};
  /** Context + draft tokens of the last verify message accepted (shared/session-protocol.ts: known). */
  private known: number[] = [];
  private readonly inflight = new Map<number, AbortController>();
  /** Messages are handled in arrival order; only the open's signature check waits on anything. */
  private chain: Promise<void> = Promise.resolve();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private held: HeldSequence | null = null;

  constructor(
    private readonly ws: WebSocket,
    private readonly options: SessionServerOptions,
    private readonly onClosed: () => void,
  ) {
    ws.on('message', (data, isBinary) => {
      this.chain = this.chain.then(() => this.handle(data, isBinary)).catch((err) => {
        // handle() answers every failure itself; reaching here is a bug, which must not take the process down.
        console.error('[origin] session message handler failed', err);
        this.close(1011, 'internal error');
      });
    });
    // ws reports protocol violations (a frame over maxPayload: 1009, bad UTF-8: 1007) and then closes the socket itself.
    ws.on('error', () => {});
    ws.on('close', () => this.closed());
    this.arm(options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS, 'no open message in time');
  }

  close(code: number, reason: string): void {
    if (this.state === 'closed') return;
    this.ws.close(code, closeReason(reason));
    this.closed();
  }

  private closed(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.timer) clearTimeout(this.timer);
    // The edge is gone: its queued passes are dropped (ForwardQueue), as for an HTTP client that left.
    for (const controller of this.inflight.values()) controller.abort(new DOMException('the session closed', 'AbortError'));
    this.inflight.clear();
    this.held?.release();
    this.onClosed();
  }

  /** Closes the session after `ms` without a message (and, once open, without a pass in flight). */
  private arm(ms: number, why: string): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.state === 'open' && this.inflight.size > 0) return this.arm(ms, why);
      this.close(this.state === 'open' ? CLOSE_NORMAL : CLOSE_POLICY, why);
    }, ms);
    this.timer.unref?.();
  }

  private async handle(data: RawData, isBinary: boolean): Promise<void> {
    if (this.state === 'closed') return;
    const idleMs = this.options.idleTimeoutMs ?? DEFAULT_SESSION_IDLE_MS;
    const text = isBinary ? null : data.toString();
    const parsed = text === null ? null : parseMessage(text);
    if (this.state === 'awaiting-open') {
      // Authentication is the first message (WebSocket clients cannot all set headers): anything else ends the session.
      if (!parsed?.ok || parsed.message.type !== 'open') {
        return this.close(CLOSE_POLICY, parsed?.ok === false ? `expected an open message: ${parsed.error.message}` : 'expected an open message first');
      }
      const refusal = await this.authenticate(parsed.message);
      if (refusal) return this.close(CLOSE_POLICY, refusal);
      // The socket may have closed while the signature was checked.
      if (this.ws.readyState !== this.ws.OPEN) return;
      this.state = 'open';
      this.held = this.options.holdSequence?.(this.params.cache_salt ?? '') ?? null;
      return this.arm(idleMs, `session idle for ${Math.round(idleMs / 1000)} s`);
    }
    this.arm(idleMs, `session idle for ${Math.round(idleMs / 1000)} s`);
    if (text === null) return this.refuse(undefined, new ApiError(400, 'Session messages are JSON text frames, not binary.', null, 'invalid_json'));
    if (!parsed!.ok) return this.refuse(parsed!.id, parsed!.error);
    const message = parsed!.message;
    if (message.type === 'open') return this.refuse(undefined, new ApiError(400, 'This session is already open.', 'type', 'session_already_open'));
    if (message.type === 'cancel') return void this.inflight.get(message.id)?.abort(new DOMException('the edge discarded this round', 'AbortError'));
    this.verify(message);
  }

  /** Null when the open is acceptable (its params then set); else the close reason. */
  private async authenticate(open: SessionOpen): Promise<string | null> {
    const { keys, seenSignatures } = this.options;
    if (keys.size > 0) {
      const auth = open.auth;
      const check = await checkSignature(
        keys,
        { method: SESSION_OPEN_METHOD, path: SESSION_PATH, body: open.params, keyId: auth?.key_id, timestamp: auth?.timestamp, nonce: auth?.nonce, signature: auth?.signature },
        Date.now(),
        DEFAULT_MAX_AGE_MS,
      );
      // The code first: it is what the edge logs and tests read; the message explains it, cut to fit a close reason.
      if (!check.ok) return `${check.code}: ${check.message}`;
      if (!seenSignatures.recordOnce(check.signature, check.expiresAtMs)) return 'signature_replayed: this open message was already used';
    }
    let params: unknown;
    try {
      params = JSON.parse(open.params);
    } catch {
      return 'invalid_json: open params are not JSON';
    }
    const result = sessionParamsSchema.safeParse(params);
    if (!result.success) return `invalid_value: open params ${result.error.issues[0]?.path.join('.') || ''} ${result.error.issues[0]?.message ?? ''}`.trim();
    this.params = result.data;
    return null;
  }

  /** One verify message: rebuild the context, update `known`, and queue the round (not awaited: later messages queue behind it). */
  private verify(message: SessionVerify): void {
    const { vocabSize, maxPositions } = this.options.limits;
    const { id, keep, append, draft } = message;
    const bad = (status: 400 | 413, text: string, param: string, code: string) => this.refuse(id, new ApiError(status, text, param, code));
    if (this.inflight.has(id)) return bad(400, `round ${id} is still in flight in this session`, 'id', 'session_round_in_flight');
    if (this.inflight.size >= MAX_ROUNDS_IN_FLIGHT) return bad(400, `this session already has ${MAX_ROUNDS_IN_FLIGHT} rounds in flight`, 'id', 'session_too_many_rounds');
    if (keep > this.known.length) return bad(400, `keep ${keep} exceeds the ${this.known.length} tokens this session holds`, 'keep', 'session_keep_out_of_range');
    const length = keep + append.length;
    if (length < 1) return bad(400, 'the context is empty: keep + append must be at least 1 token', 'append', 'invalid_value');
    if (length + draft.length > maxPositions) return bad(413, `context of ${length + draft.length} tokens exceeds the target context of ${maxPositions}`, 'append', 'context_length_exceeded');
    const outside = append.find((t) => t >= vocabSize) ?? draft.find((d) => d.token >= vocabSize)?.token;
    if (outside !== undefined) return bad(400, `token id ${outside} is outside the target vocabulary (${vocabSize})`, 'append', 'invalid_token');

    // A copy: the next message rebuilds `known` while this round may still wait in the queue.
    const context = keep === 0 ? append.slice() : this.known.slice(0, keep).concat(append);
    const ran = context.concat(draft.map((d) => d.token));
    this.known = ran;
    const request: VerifyRequest = {
      ...(this.params.model !== undefined ? { model: this.params.model } : {}),
      context,
      draft,
      ...(message.branches?.length ? { branches: message.branches } : {}),
      sampling: message.sampling,
      method: message.method,
      ...(this.params.cache_salt !== undefined ? { cache_salt: this.params.cache_salt } : {}),
      ...(message.logprobs !== undefined ? { logprobs: message.logprobs } : {}),
    };
    const controller = new AbortController();
    this.inflight.set(id, controller);
    this.options
      .verifyRound(request, controller.signal)
      .then((reply) => {
        if (this.held) this.held.tokens = ran;
        this.send({ type: 'verdict', id, ...reply } satisfies SessionVerdict);
      })
      .catch((err: unknown) => {
        // Cancelled (by the edge, or the session closed) before its pass: nobody waits for an answer.
        if (controller.signal.aborted && (err as Error)?.name === 'AbortError') return;
        const apiError = isApiError(err) ? err : new ApiError(500, `origin failure: ${(err as Error)?.message ?? String(err)}`);
        if (!isApiError(err)) console.error('[origin] session round failed', err);
        this.send(errorMessage(id, apiError, false));
      })
      .finally(() => {
        if (this.inflight.get(id) === controller) this.inflight.delete(id);
      });
  }

  /** A message refused before its context was rebuilt: the origin's known is empty now (the edge resends everything). */
  private refuse(id: number | undefined, error: ApiError): void {
    this.known = [];
    this.send(errorMessage(id, error, true));
  }

  private send(message: SessionVerdict | SessionError): void {
    if (this.state === 'closed' || this.ws.readyState !== this.ws.OPEN) return;
    if (this.ws.bufferedAmount > MAX_UNREAD_BYTES) return this.close(CLOSE_POLICY, 'the edge is not reading its replies');
    this.ws.send(JSON.stringify(message));
  }
}

function errorMessage(id: number | undefined, error: ApiError, reset: boolean): SessionError {
  return { type: 'error', ...(id !== undefined ? { id } : {}), status: error.status, error: error.toBody().error, ...(reset ? { reset: true } : {}) };
}

type Parsed = { ok: true; message: ReturnType<typeof sessionClientMessageSchema.parse> } | { ok: false; id?: number; error: ApiError };

/** A client message, or the 400 POST /v1/verify would give for its body (with the round id when one can be read). */
function parseMessage(text: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, error: new ApiError(400, 'Session message is not valid JSON.', null, 'invalid_json') };
  }
  const id = typeof value === 'object' && value !== null && Number.isSafeInteger((value as { id?: unknown }).id) && (value as { id: number }).id >= 0 ? (value as { id: number }).id : undefined;
  try {
    return { ok: true, message: parseRequest(sessionClientMessageSchema, value) };
  } catch (err) {
    return { ok: false, id, error: err as ApiError };
  }
}
