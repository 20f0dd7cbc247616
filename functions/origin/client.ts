import { ApiError } from '../../shared/errors';
import { signRequest } from '../../shared/origin-auth';
import type { GenerateEvent, GenerateRequest, OriginHealth, VerifyRequest, VerifyResponse } from '../../shared/protocol';

/**
 * How the edge talks to an origin. The speculation loop only sees this
 * interface, so transport concerns (timeouts, retries, failover, engine
 * adapters) can change below it without touching the loop.
 */
export interface OriginClient {
  health(): Promise<OriginHealth>;
  verify(request: VerifyRequest): Promise<VerifyResponse>;
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent>;
}

export interface HttpOriginOptions {
  /** Shared secret: sign verify/generate (shared/origin-auth.ts). */
  secret?: string;
  /** Name used in error messages (the pool's member id). */
  name?: string;
  /** Timeout of GET /health, shorter than calls: a probe must not hang a request. */
  healthTimeoutMs?: number;
}

/** The reference origin (origin/) over HTTP: POST /v1/verify, POST /v1/generate (NDJSON), GET /health. */
export class HttpOriginClient implements OriginClient {
  private readonly name: string;

  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs: number,
    private readonly options: HttpOriginOptions = {},
  ) {
    this.name = options.name ? `${options.name} (${baseUrl})` : baseUrl;
  }

  async health(): Promise<OriginHealth> {
    const response = await originFetch(this.name, this.baseUrl + '/health', { method: 'GET' }, this.options.healthTimeoutMs ?? this.timeoutMs);
    return (await response.json()) as OriginHealth;
  }

  async verify(request: VerifyRequest): Promise<VerifyResponse> {
    const response = await this.post('/v1/verify', request);
    return (await response.json()) as VerifyResponse;
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const response = await this.post('/v1/generate', request, signal);
    if (!response.body) throw new ApiError(502, `origin ${this.name} returned an empty stream`, null, 'origin_error');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    try {
      for (;;) {
        const { done, value } = await reader.read().catch((err: Error) => {
          throw new ApiError(502, `origin ${this.name} stream broke: ${err.message}`, null, 'origin_error');
        });
        if (done) break;
        buffered += value;
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line) yield JSON.parse(line) as GenerateEvent;
        }
      }
    } finally {
      // A consumer that stops early (stop string, failover) must not leave the origin decoding.
      reader.cancel().catch(() => {});
    }
  }

  private async post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    const text = JSON.stringify(body);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.options.secret) Object.assign(headers, await signRequest(this.options.secret, 'POST', path, text));
    return originFetch(this.name, this.baseUrl + path, { method: 'POST', headers, body: text }, this.timeoutMs, signal);
  }
}

/**
 * fetch with a timeout, turning every failure into an OpenAI-shaped ApiError
 * whose status and code say whether another origin could do better
 * (see isRetryableOriginError).
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
    throw new ApiError(503, `origin ${name} is unreachable (${(err as Error).message}); is it running?`, null, 'origin_unreachable');
  }
  if (!response.ok) {
    const detail = await response.text().catch(() => '');
    let message = detail.slice(0, 500);
    try {
      message = (JSON.parse(detail) as { error: { message: string } }).error.message;
    } catch {
      /* not an OpenAI-shaped body; keep the text */
    }
    const path = new URL(url).pathname;
    if (response.status === 401 || response.status === 403) {
      throw new ApiError(502, `origin ${name} refused the edge's credentials on ${path}: ${message}`, null, 'origin_auth_failed');
    }
    // The origin rejecting our own request is a gateway failure for the client, unless it is about their input.
    const status = response.status === 400 || response.status === 413 ? response.status : 502;
    const code = response.status === 503 ? 'origin_overloaded' : 'origin_error';
    throw new ApiError(status, `origin ${name} ${path} answered ${response.status}: ${message}`, null, code);
  }
  return response;
}

/**
 * Whether a failed call says something about the origin (try another, count it
 * against the origin's breaker) rather than about the request (400/413: every
 * origin would refuse it) or the client (gone).
 */
export function isRetryableOriginError(err: unknown): boolean {
  if (err instanceof ApiError) return err.status >= 500;
  return !(err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError'));
}
