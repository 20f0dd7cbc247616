import type { MiddlewareHandler } from 'hono';
import { edgeConfig } from '../config';
import type { EdgeEnv } from '../context';

/** `c.var.config`: the wrangler vars parsed once per isolate (functions/config.ts). */
export const withConfig: MiddlewareHandler<EdgeEnv> = async (c, next) => {
  c.set('config', edgeConfig(c.env));
  await next();
};
