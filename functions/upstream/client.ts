import type { z } from 'zod';
import { ApiError, type ApiErrorStatus } from '../../shared/errors';
import { signRequest } from '../../shared/origin-auth';
import {
  generateEventProblem,
  generateEventSchema,
  originHealthSchema,
  verifyReplyProblem,
  verifyResponseSchema,
  type GenerateEvent,
  type GenerateRequest,
  type OriginHealth,
  type VerifyRequest,
  type VerifyResponse,
} from '../../shared/protocol';

/**
 * How the edge talks to an origin. The speculation loop only sees this
 * interface, so transport concerns (timeouts, retries, failover, engine
 * adapters) can change below it without touching the loop.
 */
export interface OriginClient {
  health(): Promise<OriginHealth>;
  /** `signal`: the caller gave up (client gone). An aborted call is not retried and counts against no origin. */
  verify(request: VerifyRequest, signal?: AbortSignal): Promise<VerifyResponse>;
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent>;
}

export interface HttpOriginOptions {
  /** Shared secret: sign verify/generate (shared/origin-auth.ts). */
  secret?: string;
  /** Key id of `secret` on the origins (ORIGIN_SECRET_ID); "default" = their ORIGIN_SECRET. */
  keyId?: string;
  /** Name used in error messages (the pool's member id). The URL never goes into messages, only into console.error logs. */
  name?: string;
  /**
   * The target vocabulary size every token of a reply must be below (the draft's, which must equal the
   * target's). Unset: the vocab_size of this origin's last /health reply once one arrived, and no
   * check before that.
   */
  vocabSize?: number;
  /** Timeout of GET /health, shorter than calls: a probe must not hang a request. */
  healthTimeoutMs?: number;
}

/** Upper bounds on what the edge reads of one reply: a garbage origin must not fill the isolate's memory. */
const MAX_REPLY_BYTES = 1 << 20;
const MAX_ERROR_BYTES = 16 << 10;
const MAX_STREAM_LINE_CHARS = 64 << 10;

/** The reference origin (origin/) over HTTP: POST /v1/verify, POST /v1/generate (NDJSON), GET /health. */
export class HttpOriginClient implements OriginClient {
  private readonly name: string;
  /** What reply tokens are checked against: configured, else learned from /health, else unknown. */
  private vocabSize: number | undefined;

  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs: number,
    private readonly options: HttpOriginOptions = {},
  ) {
    // The id only: messages reach breaker state, logs and (4xx) clients; URLs stay in console.error lines.
    this.name = options.name ?? 'unnamed';
    this.vocabSize = options.vocabSize;
  }

  async health(): Promise<OriginHealth> {
    let response: Response;
    try {
      response = await originFetch(this.name, this.baseUrl + '/health', { method: 'GET' }, this.options.healthTimeoutMs ?? this.timeoutMs);
    } catch (err) {
      // A probe carries no client input: any refusal is about the origin (a wrong URL, another service).
      if (err instanceof ApiError && err.status < 500) throw new ApiError(502, `origin ${this.name} answered ${err.status} to /health`, null, 'origin_error');
      throw err;
    }
    const health = await readReply(this.name, response, '/health', originHealthSchema);
    if (this.options.vocabSize !== undefined && health.vocab_size !== this.options.vocabSize) {
      throw badReply(this.name, '/health', `vocab_size ${health.vocab_size} is not the expected ${this.options.vocabSize}`);
    }
    this.vocabSize = health.vocab_size;
    return health;
  }

  async verify(request: VerifyRequest, signal?: AbortSignal): Promise<VerifyResponse> {
    const response = await this.post('/v1/verify', request, signal);
    const reply = await readReply(this.name, response, '/v1/verify', verifyResponseSchema, signal);
    const problem = verifyReplyProblem(request, reply, this.vocabSize);
    if (problem) throw badReply(this.name, '/v1/verify', problem);
    return reply;
  }

  /**
   * The origin's NDJSON stream, every line parsed and checked: a line that is not JSON, not a
   * generate event, out of the vocabulary, past max_tokens or longer than any real line is a
   * malformed reply (an origin failure: the pool resumes the stream on another origin).
   */
  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const path = '/v1/generate';
    const response = await this.post(path, request, signal);
    if (!response.body) throw badReply(this.name, path, 'the reply has no body');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    let lines = 0;
    let tokens = 0;
    const parse = (line: string): GenerateEvent => {
      lines++;
      const event = parseWith(this.name, path, line, generateEventSchema, `line ${lines}`);
      const problem = generateEventProblem(event, this.vocabSize, request.logprobs) ?? (event.type === 'token' && ++tokens > request.max_tokens ? `more tokens than max_tokens (${request.max_tokens})` : null);
      if (problem) throw badReply(this.name, path, `line ${lines}: ${problem}`);
      return event;
    };
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<string>;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw readFailure(this.name, path, err, signal);
        }
        if (chunk.done) break;
        buffered += chunk.value;
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line) yield parse(line);
        }
        if (buffered.length > MAX_STREAM_LINE_CHARS) throw badReply(this.name, path, `line ${lines + 1} is longer than ${MAX_STREAM_LINE_CHARS} characters`);
      }
      // A last line without its newline is still a line.
      const rest = buffered.trim();
      if (rest) yield parse(rest);
    } finally {
      // A consumer that stops early (stop string, failover) must not leave the origin decoding.
      reader.cancel().catch(() => {});
    }
  }

  private async post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    const text = JSON.stringify(body);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.options.secret) Object.assign(headers, await signRequest(this.options.secret, 'POST', path, text, Date.now(), this.options.keyId ?? 'default'));
    return originFetch(this.name, this.baseUrl + path, { method: 'POST', headers, body: text }, this.timeoutMs, signal);
  }
}

/** The malformed-reply failure: names the origin (id) and what is wrong, never quotes the reply. */
export function badReply(name: string, path: string, problem: string): ApiError {
  console.error(`[edge] origin ${name}: malformed ${path} reply: ${problem}`);
  return new ApiError(502, `origin ${name} sent a malformed ${path} reply: ${problem}`, null, 'origin_bad_reply');
}

/** The body of a successful reply as JSON (bounded), or an origin_bad_reply / timeout / read failure. */
export async function readJsonReply(name: string, response: Response, path: string, signal?: AbortSignal): Promise<unknown> {
  let text: string | null;
  try {
    text = await readCapped(response, MAX_REPLY_BYTES);
  } catch (err) {
    throw readFailure(name, path, err, signal);
  }
  if (text === null) throw badReply(name, path, `the reply is larger than ${MAX_REPLY_BYTES} bytes`);
  try {
    return JSON.parse(text);
  } catch {
    throw badReply(name, path, 'the reply is not JSON');
  }
}

async function readReply<T>(name: string, response: Response, path: string, schema: z.ZodType<T>, signal?: AbortSignal): Promise<T> {
  const body = await readJsonReply(name, response, path, signal);
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw badReply(name, path, describeIssue(parsed.error));
  return parsed.data;
}

function parseWith<T>(name: string, path: string, text: string, schema: z.ZodType<T>, where: string): T {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw badReply(name, path, `${where} is not JSON`);
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw badReply(name, path, `${where}: ${describeIssue(parsed.error)}`);
  return parsed.data;
}

/** The first schema violation as path + kind, from the schema's own vocabulary: no value of the reply is quoted. */
function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'it does not match the protocol';
  const where = issue.path.length ? issue.path.map(String).join('.') : 'the reply';
  const expected = issue.code === 'invalid_type' ? ` (expected ${issue.expected})` : '';
  return `${where}: ${issue.code}${expected}`;
}

/** Reading a reply's body failed: the caller's abort passes through; a timeout is a 504; anything else broke the reply. */
function readFailure(name: string, path: string, err: unknown, signal?: AbortSignal): unknown {
  if (signal?.aborted) return signal.reason ?? err;
  if (err instanceof ApiError) return err;
  console.error(`[edge] origin ${name}: reading the ${path} reply failed:`, err);
  if (err instanceof Error && err.name === 'TimeoutError') return new ApiError(504, `origin ${name} did not finish its ${path} reply in time`, null, 'origin_timeout');
  return new ApiError(502, `origin ${name}: the ${path} reply broke off`, null, 'origin_error');
}

/** At most maxBytes of the body as text, or null when there is more. */
async function readCapped(response: Response, maxBytes: number): Promise<string | null> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) return null;
      chunks.push(value);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

/**
 * fetch with a timeout, turning every failure into an OpenAI-shaped ApiError
 * whose status and code say whether another origin could do better
 * (see isRetryableOriginError). Messages name the origin by `name`, never by
 * URL, and never quote the origin's text except a refused request's
 * OpenAI-shaped error message (see refusal).
 */
export async function originFetch(name: string, url: string, init: RequestInit, timeoutMs: number, signal?: AbortSignal): Promise<Response> {
  const timeout = AbortSignal.timeout(timeoutMs);
  let response: Response;
  try {
    response = await fetch(url, { ...init, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (err) {
    // The caller gave up (client disconnected): not the origin's fault, nothing to retry.
    if (signal?.aborted) throw signal.reason ?? err;
    if (timeout.aborted) throw new ApiError(504, `origin ${name} did not answer within ${timeoutMs} ms`, null, 'origin_timeout');
    console.error(`[edge] origin ${name} (${url}) is unreachable:`, err);
    throw new ApiError(503, `origin ${name} is unreachable (${publicText((err as Error)?.message ?? String(err), 120)}); is it running?`, null, 'origin_unreachable');
  }
  if (!response.ok) throw await refusal(name, url, response, signal);
  return response;
}

/** Statuses by which an origin says the request itself is wrong: every origin would answer the same. */
const REQUEST_ERROR_STATUSES = new Map<number, ApiErrorStatus>([
  [400, 400],
  // Not 404: the protocol has no "not found" that is the client's fault, so a 404 means a misconfigured origin URL.
  [413, 413],
  [422, 400],
]);
/** An error code or param that is an identifier, not prose: safe to pass on. */
const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

/** The ApiError for an origin's non-2xx answer (the classification table is at isRetryableOriginError). */
async function refusal(name: string, url: string, response: Response, signal?: AbortSignal): Promise<ApiError> {
  const status = response.status;
  const path = new URL(url).pathname;
  const detail = (await readCapped(response, MAX_ERROR_BYTES).catch(() => '')) ?? '';
  if (signal?.aborted) throw signal.reason;
  console.error(`[edge] origin ${name} (${url}) answered ${status}: ${detail.slice(0, 500)}`);
  const body = openAIErrorOf(detail);
  const code = body?.code && IDENTIFIER.test(body.code) ? body.code : null;
  const requestError = REQUEST_ERROR_STATUSES.get(status);
  if (requestError) {
    // The client's mistake: a 4xx for the client, with the origin's explanation when it gave one, minus any URL.
    const why = body?.message ? `: ${publicText(body.message, 300)}` : ` (HTTP ${status})`;
    return new ApiError(requestError, `the origin refused the request as invalid${why}`, null, code ?? 'origin_refused_request');
  }
  const what = code ? `HTTP ${status} ${code}` : `HTTP ${status}`;
  if (status === 401 || status === 403) return new ApiError(502, `origin ${name} refused the edge's credentials on ${path} (${what})`, null, 'origin_auth_failed');
  if (status === 429 || status === 503) return new ApiError(503, `origin ${name} is overloaded (${what} on ${path})`, null, 'origin_overloaded');
  return new ApiError(502, `origin ${name} failed on ${path} (${what})`, null, 'origin_error');
}

/** {message, code} of an OpenAI-shaped error body, or null. */
function openAIErrorOf(text: string): { message: string | null; code: string | null } | null {
  try {
    const error = (JSON.parse(text) as { error?: { message?: unknown; code?: unknown } }).error;
    if (!error || typeof error !== 'object') return null;
    return { message: typeof error.message === 'string' ? error.message : null, code: typeof error.code === 'string' ? error.code : null };
  } catch {
    return null;
  }
}

/** Origin-supplied text made fit for an error message: URLs (anything with a scheme) removed, one line, truncated. */
export function publicText(text: string, maxChars = 300): string {
  const cleaned = text
    .replace(/[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]*/gi, '<url>')
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .trim();
  return cleaned.length > maxChars ? `${cleaned.slice(0, maxChars)}…` : cleaned;
}

/**
 * Whether a failed call says something about the origin (try another, count it
 * against the origin's breaker) rather than about the request or the client:
 *
 * | what happened                              | error (status, code)                  | retried elsewhere | breaker  |
 * |--------------------------------------------|---------------------------------------|-------------------|----------|
 * | origin answers 400 / 404 / 413 / 422       | same 4xx (422 → 400), the origin's    | no                | no       |
 * |   (the request is invalid)                 |   code or origin_refused_request      |                   |          |
 * | connection refused / reset, DNS            | 503 origin_unreachable                | yes               | failure  |
 * | no answer within the timeout               | 504 origin_timeout                    | yes               | failure  |
 * | 5xx (except 503)                           | 502 origin_error                      | yes               | failure  |
 * | 401 / 403 (misconfigured credentials)      | 502 origin_auth_failed                | yes               | failure  |
 * | 429 / 503 (overloaded)                     | 503 origin_overloaded                 | yes               | failure  |
 * | any other non-2xx (405, 408, 3xx, ...)     | 502 origin_error                      | yes               | failure  |
 * | reply not JSON / wrong shape / contradicts | 502 origin_bad_reply                  | yes (a broken     | failure  |
 * |   the request (accepted, tokens, vocab)    |                                       |   stream resumes) |          |
 * | a probe (GET /health) answers any non-2xx  | 502 origin_error                      | n/a               | failure  |
 * | the caller aborted (client went away)      | the abort reason                      | no                | nothing  |
 */
export function isRetryableOriginError(err: unknown): boolean {
  if (err instanceof ApiError) return err.status >= 500;
  return !(err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError'));
}
