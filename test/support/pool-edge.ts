import { startEdge, type EdgeService } from '../../scripts/stack';
import { DRAFT_DIR } from './models';

/**
 * An edge of its own in front of a pool of signed origins (ORIGINS), with a
 * breaker and health probes quick enough for failover tests to see a dead
 * origin leave the pool and come back within seconds.
 */
export function startPoolEdge(options: { port: number; secret: string; origins: Array<{ id: string; url: string }> }): Promise<EdgeService> {
  return startEdge({
    port: options.port,
    // Unused: ORIGINS names the pool.
    originUrl: 'http://127.0.0.1:9',
    persistTo: `.wrangler/test-state-${options.port}`,
    draftDir: DRAFT_DIR,
    secret: options.secret,
    vars: {
      ORIGINS: JSON.stringify(options.origins),
      ORIGIN_BREAKER_COOLDOWN_MS: '1500',
      ORIGIN_HEALTH_INTERVAL_MS: '1000',
      ORIGIN_TIMEOUT_MS: '10000',
    },
  });
}
