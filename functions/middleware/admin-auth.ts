import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../../shared/errors';
import { bearerToken, secretsEqual } from '../../shared/bearer';
import type { EdgeEnv } from '../context';

/**
 * The operator's routes (/admin/*, /health?deep=1) take the ADMIN_SECRET
 * wrangler secret as a bearer token. Without that secret they are off: a
 * deployment never has an admin API nobody configured.
 */
export const adminAuth: MiddlewareHandler<EdgeEnv> = async (c, next) => {
  if (!(await isAdmin(c.env.ADMIN_SECRET, c.req.header('authorization')))) {
    throw new ApiError(
      401,
      c.env.ADMIN_SECRET ? 'This route needs the admin secret: "Authorization: Bearer <ADMIN_SECRET>".' : 'The admin API is off: set the ADMIN_SECRET secret (`wrangler secret put ADMIN_SECRET`).',
      null,
      'admin_required',
    );
  }
  await next();
};

export async function isAdmin(secret: string | undefined, authorization: string | undefined): Promise<boolean> {
  const token = bearerToken(authorization);
  return !!secret && !!token && (await secretsEqual(token, secret));
}
