import { env } from 'cloudflare:workers';
import { secretBoxFor, type SecretBox, type SecretKeyEnv } from './secret-box';

/**
 * The secret box of this Worker (functions/webhooks/secret-box.ts), from its
 * env through `cloudflare:workers`' importable `env`: the stores that seal and
 * open secrets are made from a D1 binding alone (`new EndpointStore(c.env.DB)`),
 * so they reach the keys here rather than through every route. A module of
 * its own because Node cannot import `cloudflare:workers`: unit tests import
 * secret-box.ts, never this.
 */
export function workerSecretBox(): Promise<SecretBox> {
  return secretBoxFor(env as unknown as SecretKeyEnv);
}
