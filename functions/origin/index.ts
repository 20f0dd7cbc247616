import type { EdgeConfig } from '../config';
import { HttpOriginClient, type OriginClient } from './client';

export type { OriginClient } from './client';

/** The one place the edge chooses how to reach origins (a single URL today). */
export function createOriginClient(config: EdgeConfig): OriginClient {
  return new HttpOriginClient(config.originUrl, config.originTimeoutMs);
}
