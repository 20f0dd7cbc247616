import type { EdgeConfig } from '../config';
import { HttpOriginClient, type OriginClient } from './client';
import { prefixAffinityKey } from './affinity';
import type { OriginSpec } from './config';
import { EngineOriginClient } from './engines/scored';
import { SglangScorer } from './engines/sglang';
import { VllmScorer } from './engines/vllm';
import { isolateLink } from '../speculation/controller';
import { OriginPool, type PoolMember, type PoolSession } from './pool';
import { SessionOriginClient, type TransportStats } from './session';

export type { OriginClient } from './client';
export type { SessionOriginClient } from './session';

/** A probe must never hold a request for long: all-down has to answer within 2 s. */
const HEALTH_TIMEOUT_MS = 1500;

/**
 * The one place the edge chooses how to reach origins: a pool (one origin
 * from ORIGIN_URL, or ORIGINS), and per generation a session with prefix
 * affinity on the prompt's first block. `waitUntil` lets due health probes
 * outlive the request.
 */
export function createOriginClient(
  config: EdgeConfig,
  options: { affinityTokens?: readonly number[]; waitUntil?: (promise: Promise<unknown>) => void } = {},
): PoolSession {
  const pool = originPool(config);
  pool.maintain(options.waitUntil);
  const key = options.affinityTokens?.length ? prefixAffinityKey(options.affinityTokens, config.modelId, config.prefixCache.blockTokens) : null;
  return pool.session(key);
}

/**
 * How a generation drafting here sends its verify rounds to the origin
 * `session` routes it to: one WebSocket session (ORIGIN_SESSION "websocket",
 * falling back to `session`'s HTTP calls whenever it cannot serve) or an HTTP
 * call per round ("http"). Either way the queue wait the origins report is
 * counted in `stats`. Close it when the generation ends.
 */
export function generationTransport(config: EdgeConfig, session: PoolSession, stats: TransportStats, options: { cacheSalt: string; vocabSize: number }): SessionOriginClient {
  const route = config.originSession === 'websocket' ? session.sessionRoute() : null;
  return new SessionOriginClient(session, route, { ...options, secret: config.originSecret, keyId: config.originSecretId, timeoutMs: config.originTimeoutMs }, stats);
}

/** The isolate's pool for this configuration: breaker state lives as long as the isolate. */
let cached: { key: string; pool: OriginPool } | null = null;

export function originPool(config: EdgeConfig): OriginPool {
  const key = JSON.stringify([config.origins, config.originPool, config.originTimeoutMs, config.originSecret ?? '', config.originSecretId, config.originApiKey ?? '']);
  if (cached?.key === key) return cached.pool;
  const { retries, breakerFailures, breakerCooldownMs, healthIntervalMs } = config.originPool;
  const pool = new OriginPool(
    config.origins.map((spec) => memberFor(spec, config)),
    {
      retries,
      backoffBaseMs: 50,
      backoffMaxMs: 400,
      breaker: { failureThreshold: breakerFailures, cooldownMs: breakerCooldownMs, maxCooldownMs: Math.max(breakerCooldownMs, 60_000) },
      healthIntervalMs,
    },
    // Probe round trips are the isolate's cleanest link measurement (deployed, the clock moves only across I/O).
    { onProbeRoundTrip: (ms) => isolateLink.observeLinkProbe(ms) },
  );
  cached = { key, pool };
  return pool;
}

/** One client per configured origin; a new engine kind adds one case here. */
function memberFor(spec: OriginSpec, config: EdgeConfig): PoolMember {
  const base = { id: spec.id, url: spec.url, kind: spec.kind, weight: spec.weight };
  const timeoutMs = config.originTimeoutMs;
  switch (spec.kind) {
    case 'reference':
      return { ...base, client: new HttpOriginClient(spec.url, timeoutMs, { secret: config.originSecret, keyId: config.originSecretId, name: spec.id, healthTimeoutMs: HEALTH_TIMEOUT_MS }) };
    case 'sglang':
    case 'vllm': {
      const scorer =
        spec.kind === 'sglang'
          ? new SglangScorer({ id: spec.id, baseUrl: spec.url, timeoutMs, apiKey: config.originApiKey })
          : new VllmScorer({ id: spec.id, baseUrl: spec.url, timeoutMs, apiKey: config.originApiKey, model: spec.model! });
      const client = new EngineOriginClient(scorer, {
        id: spec.id,
        baseUrl: spec.url,
        timeoutMs,
        vocabSize: spec.vocabSize!,
        maxPositions: spec.maxPositions!,
        topLogprobs: spec.topLogprobs,
        healthTimeoutMs: HEALTH_TIMEOUT_MS,
      });
      return { ...base, client };
    }
  }
}
