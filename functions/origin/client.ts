import { ApiError } from '../../shared/errors';
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

export class HttpOriginClient implements OriginClient {
  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs: number,
  ) {}

  async health(): Promise<OriginHealth> {
    const response = await this.post('/health', undefined, 'GET');
    return (await response.json()) as OriginHealth;
  }

  async verify(request: VerifyRequest): Promise<VerifyResponse> {
    const response = await this.post('/v1/verify', request);
    return (await response.json()) as VerifyResponse;
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const response = await this.post('/v1/generate', request, 'POST', signal);
    if (!response.body) throw new ApiError(502, 'origin returned an empty stream', null, 'origin_error');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    for (;;) {
      const { done, value } = await reader.read().catch((err: Error) => {
        throw new ApiError(502, `origin stream broke: ${err.message}`, null, 'origin_error');
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
  }

  private async post(path: string, body: unknown, method = 'POST', signal?: AbortSignal): Promise<Response> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    let response: Response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      if (timeout.aborted) throw new ApiError(504, `origin at ${this.baseUrl} did not answer within ${this.timeoutMs} ms`, null, 'origin_timeout');
      throw new ApiError(503, `origin at ${this.baseUrl} is unreachable (${(err as Error).message}); is it running?`, null, 'origin_unreachable');
    }
    if (!response.ok) {
      const detail = await response.text().catch(() => '');
      let message = detail.slice(0, 500);
      try {
        message = (JSON.parse(detail) as { error: { message: string } }).error.message;
      } catch {
        /* not an OpenAI-shaped body; keep the text */
      }
      // The origin rejecting our own request is a gateway failure for the client, unless it is about their input.
      const status = response.status === 400 || response.status === 413 ? response.status : 502;
      throw new ApiError(status, `origin ${path} answered ${response.status}: ${message}`, null, 'origin_error');
    }
    return response;
  }
}
