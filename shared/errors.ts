/**
 * Errors in OpenAI's shape, {"error":{"message","type","param","code"}}, so
 * OpenAI clients surface them as they would the real API's.
 */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export type ApiErrorStatus = 400 | 401 | 404 | 405 | 413 | 429 | 500 | 502 | 503 | 504;

const typeForStatus: Record<ApiErrorStatus, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  404: 'not_found_error',
  405: 'invalid_request_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
  500: 'server_error',
  502: 'server_error',
  503: 'service_unavailable',
  504: 'timeout_error',
};

export class ApiError extends Error {
  /** Extra response headers, e.g. Retry-After on a 503. */
  headers?: Record<string, string>;

  constructor(
    readonly status: ApiErrorStatus,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toBody(): OpenAIErrorBody {
    return { error: { message: this.message, type: typeForStatus[this.status], param: this.param, code: this.code } };
  }
}

export function isApiError(err: unknown): err is ApiError {
  return err instanceof ApiError;
}
