import { z } from 'zod';
import { DEFAULT_KEY_ID, KEY_ID_PATTERN } from '../shared/origin-auth';
import type { Env } from './env';
import { DEFAULT_PROPOSER, PROPOSER_KINDS, type ProposerKind } from './proposers/kinds';
import { ASSUMED_DRAFT_MS_PER_TOKEN } from './speculation/controller';
import type { PlacementRequest, SpeculationMode } from './speculation/loop';
import { parseOrigins, type OriginSpec } from './upstream/config';

/** The edge's configuration, parsed once from wrangler vars with a clear message on a bad value. */
export interface EdgeConfig {
  originUrl: string;
  draftModel: string;
  modelId: string;
  draftLength: number;
  verifyMethod: 'token' | 'block';
  /** Default speculation mode (a request's `speculation.mode` overrides it). */
  speculationMode: SpeculationMode;
  /** Default draft placement (SPECULATION_PLACEMENT; a request's `speculation.placement` overrides it): auto chooses per request. */
  speculationPlacement: PlacementRequest;
  /** Default proposer (SPECULATION_PROPOSER; a request's `speculation.proposer` overrides it). */
  defaultProposer: ProposerKind;
  /** Verify requests in flight in pipelined mode. */
  pipelineDepth: number;
  /** Early stop below this draft top probability; applies to adaptive mode unless a request sets it. */
  draftMinConfidence: number;
  /** What a model draft costs per token where the clock cannot tell (deployed Workers): the adaptive controller's assumption (functions/speculation/controller.ts). */
  draftMsPerToken: number;
  draftQEntries: number;
  originTimeoutMs: number;
  /** How verify rounds of a generation drafting here reach its origin (ORIGIN_SESSION): one WebSocket session, or an HTTP call per round (functions/upstream/session.ts). */
  originSession: 'websocket' | 'http';
  /** ORIGINS when set, else ORIGIN_URL as the one reference origin (functions/upstream/config.ts). */
  origins: OriginSpec[];
  /** Shared secret signing calls to reference origins (wrangler secret ORIGIN_SECRET); unset = unsigned. */
  originSecret?: string;
  /** Key id under which the origins hold ORIGIN_SECRET ("default" = their ORIGIN_SECRET; else one of their ORIGIN_SECRETS). */
  originSecretId: string;
  /** Bearer token for engine origins (SGLang/vLLM --api-key). */
  originApiKey?: string;
  originPool: { retries: number; breakerFailures: number; breakerCooldownMs: number; healthIntervalMs: number };
  prefixCache: { blockTokens: number; maxBytes: number; ttlMs: number };
  /** Largest request body in bytes (hono/body-limit, before the body is read). */
  maxBodyBytes: number;
  /** Bytes of its 128 MB an isolate may hold before new generations are refused (functions/middleware/admission.ts). */
  isolateMemoryBudgetBytes: number;
  /** Background jobs (functions/jobs) and the sweeper (functions/background). */
  jobs: { leaseMs: number; retryBaseMs: number; maxAttempts: number; sweepIntervalMs: number };
  /** Outbound webhooks (functions/webhooks). */
  webhooks: { allowHttpLoopback: boolean; retryScale: number; timeoutMs: number; disableAfterMs: number; rotationOverlapMs: number };
  /** Inbound triggers (functions/triggers). */
  triggers: { maxBodyBytes: number; toleranceS: number };
}

const intVar = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).optional().transform((v) => v ?? fallback);

const configSchema = z.object({
  ORIGIN_URL: z.url({ message: 'ORIGIN_URL must be the origin verifier base URL, e.g. http://127.0.0.1:8788' }),
  DRAFT_MODEL: z.string().min(1, 'DRAFT_MODEL must name the draft model folder in the MODELS bucket'),
  MODEL_ID: z.string().min(1).default('edgespec'),
  DRAFT_LENGTH: intVar(0, 16, 4),
  VERIFY_METHOD: z.enum(['token', 'block']).default('token'),
  SPECULATION_MODE: z.enum(['origin', 'lockstep', 'pipelined', 'adaptive', 'branch-ahead']).default('adaptive'),
  SPECULATION_PLACEMENT: z.enum(['auto', 'edge', 'origin']).default('auto'),
  SPECULATION_PROPOSER: z.enum(PROPOSER_KINDS, { message: `SPECULATION_PROPOSER must be one of ${PROPOSER_KINDS.map((k) => `"${k}"`).join(', ')}` }).default(DEFAULT_PROPOSER),
  PIPELINE_DEPTH: intVar(1, 8, 2),
  DRAFT_MIN_CONFIDENCE: z.coerce.number().min(0).max(1).optional().transform((v) => v ?? 0.3),
  DRAFT_Q_ENTRIES: intVar(1, 256, 32),
  DRAFT_MS_PER_TOKEN: z.coerce.number().positive('DRAFT_MS_PER_TOKEN must be a positive number of ms').max(1000).optional().transform((v) => v ?? ASSUMED_DRAFT_MS_PER_TOKEN),
  ORIGIN_TIMEOUT_MS: intVar(100, 600_000, 30_000),
  // websocket measures faster per round in workerd and in Node (BENCHMARKS.md: Session protocol).
  ORIGIN_SESSION: z.enum(['websocket', 'http'], { message: 'ORIGIN_SESSION must be "websocket" or "http"' }).default('websocket'),
  ORIGIN_SECRET: z.string().min(16, 'ORIGIN_SECRET must be at least 16 characters (use a random 32-byte hex string)').optional().or(z.literal('').transform(() => undefined)),
  ORIGIN_SECRET_ID: z.string().regex(KEY_ID_PATTERN, 'ORIGIN_SECRET_ID: letters, digits, ".", "_" or "-" (at most 64)').default(DEFAULT_KEY_ID),
  ORIGIN_API_KEY: z.string().optional(),
  ORIGIN_RETRIES: intVar(0, 10, 2),
  ORIGIN_BREAKER_FAILURES: intVar(1, 100, 3),
  ORIGIN_BREAKER_COOLDOWN_MS: intVar(100, 600_000, 5_000),
  ORIGIN_HEALTH_INTERVAL_MS: intVar(500, 3_600_000, 10_000),
  PREFIX_CACHE_BLOCK_TOKENS: intVar(1, 1024, 16),
  // A SQLite-backed object holds up to 10 GB.
  PREFIX_CACHE_MAX_MB: intVar(1, 9_000, 128),
  PREFIX_CACHE_TTL_S: intVar(1, 30 * 86_400, 86_400),
  // 1 MiB holds the longest prompt the shipped models take many times over (1024 tokens of at most 32 bytes).
  MAX_BODY_KB: intVar(1, 100 * 1024, 1024),
  ALLOW_HTTP_ORIGINS: z.enum(['on', 'off']).default('off'),
  // Of the isolate's 128 MB; the rest is the estimate's error margin (functions/middleware/admission.ts).
  ISOLATE_MEMORY_BUDGET_MB: z.coerce.number().min(8, 'ISOLATE_MEMORY_BUDGET_MB must be at least 8').max(128, 'ISOLATE_MEMORY_BUDGET_MB: a Worker isolate has 128 MB').optional().transform((v) => v ?? 100),
  JOB_LEASE_S: intVar(2, 3_600, 120),
  JOB_RETRY_BASE_S: intVar(0, 3_600, 10),
  JOB_MAX_ATTEMPTS: intVar(1, 100, 10),
  SWEEP_INTERVAL_S: intVar(1, 3_600, 60),
  WEBHOOK_ALLOW_HTTP_LOOPBACK: z.enum(['on', 'off']).default('off'),
  WEBHOOK_RETRY_SCALE: z.coerce.number().gt(0).max(1).optional().transform((v) => v ?? 1),
  // Standard Webhooks / Svix: a 2xx within 15 s; tests shorten it.
  WEBHOOK_TIMEOUT_MS: intVar(100, 15_000, 15_000),
  WEBHOOK_DISABLE_AFTER_S: intVar(1, 90 * 86_400, 5 * 86_400),
  WEBHOOK_ROTATION_OVERLAP_S: intVar(0, 7 * 86_400, 86_400),
  TRIGGER_MAX_BODY_KB: intVar(1, 1024, 256),
  TRIGGER_TOLERANCE_S: intVar(1, 3_600, 300),
});

let cached: { env: Env; config: EdgeConfig } | null = null;

export function edgeConfig(env: Env): EdgeConfig {
  if (cached?.env === env) return cached.config;
  const parsed = configSchema.safeParse({ ...env, MODELS: undefined, PREFIX_CACHE: undefined, RATE_LIMITER: undefined, DB: undefined, JOBS_QUEUE: undefined, WEBHOOKS_QUEUE: undefined, SWEEPER: undefined });
  if (!parsed.success) throw new Error(`edgespec configuration (wrangler.toml [vars]): ${z.prettifyError(parsed.error)}`);
  const v = parsed.data;
  let origins: OriginSpec[];
  try {
    origins = parseOrigins(env.ORIGINS, v.ORIGIN_URL);
    if (v.ALLOW_HTTP_ORIGINS !== 'on') origins.forEach(refusePlainHttpBeyondLoopback);
  } catch (err) {
    throw new Error(`edgespec configuration (wrangler.toml [vars]): ${(err as Error).message}`);
  }
  const config: EdgeConfig = {
    originUrl: v.ORIGIN_URL.replace(/\/+$/, ''),
    draftModel: v.DRAFT_MODEL.replace(/\/+$/, ''),
    modelId: v.MODEL_ID,
    draftLength: v.DRAFT_LENGTH,
    verifyMethod: v.VERIFY_METHOD,
    speculationMode: v.SPECULATION_MODE,
    speculationPlacement: v.SPECULATION_PLACEMENT,
    defaultProposer: v.SPECULATION_PROPOSER,
    pipelineDepth: v.PIPELINE_DEPTH,
    draftMinConfidence: v.DRAFT_MIN_CONFIDENCE,
    draftMsPerToken: v.DRAFT_MS_PER_TOKEN,
    draftQEntries: v.DRAFT_Q_ENTRIES,
    originTimeoutMs: v.ORIGIN_TIMEOUT_MS,
    originSession: v.ORIGIN_SESSION,
    origins,
    originSecret: v.ORIGIN_SECRET,
    originSecretId: v.ORIGIN_SECRET_ID,
    originApiKey: v.ORIGIN_API_KEY || undefined,
    originPool: {
      retries: v.ORIGIN_RETRIES,
      breakerFailures: v.ORIGIN_BREAKER_FAILURES,
      breakerCooldownMs: v.ORIGIN_BREAKER_COOLDOWN_MS,
      healthIntervalMs: v.ORIGIN_HEALTH_INTERVAL_MS,
    },
    prefixCache: {
      blockTokens: v.PREFIX_CACHE_BLOCK_TOKENS,
      maxBytes: v.PREFIX_CACHE_MAX_MB * 2 ** 20,
      ttlMs: v.PREFIX_CACHE_TTL_S * 1000,
    },
    maxBodyBytes: v.MAX_BODY_KB * 1024,
    isolateMemoryBudgetBytes: Math.round(v.ISOLATE_MEMORY_BUDGET_MB * 2 ** 20),
    jobs: { leaseMs: v.JOB_LEASE_S * 1000, retryBaseMs: v.JOB_RETRY_BASE_S * 1000, maxAttempts: v.JOB_MAX_ATTEMPTS, sweepIntervalMs: v.SWEEP_INTERVAL_S * 1000 },
    webhooks: {
      allowHttpLoopback: v.WEBHOOK_ALLOW_HTTP_LOOPBACK === 'on',
      retryScale: v.WEBHOOK_RETRY_SCALE,
      timeoutMs: v.WEBHOOK_TIMEOUT_MS,
      disableAfterMs: v.WEBHOOK_DISABLE_AFTER_S * 1000,
      rotationOverlapMs: v.WEBHOOK_ROTATION_OVERLAP_S * 1000,
    },
    triggers: { maxBodyBytes: v.TRIGGER_MAX_BODY_KB * 1024, toleranceS: v.TRIGGER_TOLERANCE_S },
  };
  cached = { env, config };
  return config;
}

/** Hosts that are this machine: plain http:// to them is allowed (and a deployed Worker cannot reach them: scripts/deploy.ts). */
export const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * Verify calls carry prompts and signed bodies: beyond loopback they need TLS,
 * unless the operator says the network is private (ALLOW_HTTP_ORIGINS = "on").
 */
function refusePlainHttpBeyondLoopback(origin: OriginSpec): void {
  const url = new URL(origin.url);
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) {
    throw new Error(`origin "${origin.id}" uses plain http:// beyond loopback; use https://, or set ALLOW_HTTP_ORIGINS = "on" for a private network`);
  }
}
