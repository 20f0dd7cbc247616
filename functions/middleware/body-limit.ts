import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { ApiError } from '../../shared/errors';
import type { EdgeEnv } from '../context';

/**
 * Refuses a body over MAX_BODY_KB before it is read: by its Content-Length at
 * once, or, for a chunked body, as soon as the bytes read pass the limit.
 * Reading a 20 MB body whole used to take the local Workers runtime down with
 * every request in it; nothing past this point ever holds more than the limit.
 */
export const boundedBody: MiddlewareHandler<EdgeEnv> = (c, next) =>
  bodyLimit({
    maxSize: c.var.config.maxBodyBytes,
    onError: () => {
      throw new ApiError(413, `Request body is larger than ${Math.round(c.var.config.maxBodyBytes / 1024)} KiB.`, null, 'body_too_large');
    },
  })(c, next);
