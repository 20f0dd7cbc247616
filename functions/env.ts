import type { BackgroundMessage } from './background/messages';
import type { Sweeper } from './background/sweeper';
import type { Metrics } from './metrics/durable-object';
import type { PrefixCache } from './prefix-cache/durable-object';
import type { RateLimiter } from './rate-limit/durable-object';
import type { SuffixHistory } from './suffix-history/durable-object';

/** Bindings and vars of the edge Worker, as declared in wrangler.toml. */
export interface Env {
  /** R2 bucket holding model folders (config.json, tokenizer.json, onnx/...). */
  MODELS: R2Bucket;
  /** Base URL of the origin verifier. */
  ORIGIN_URL: string;
  /** R2 prefix of the draft model folder. */
  DRAFT_MODEL: string;
  /** Model id served on /v1/models and accepted in requests. */
  MODEL_ID: string;
  /** Drafted tokens per verify round (k). */
  DRAFT_LENGTH?: string;
  /** Verification rule at the origin: "token" or "block". */
  VERIFY_METHOD?: string;
  /** Default speculation mode: "lockstep", "pipelined", "adaptive" or "origin". */
  SPECULATION_MODE?: string;
  SPECULATION_PLACEMENT?: string;
  /** Verify requests in flight in pipelined mode (D). */
  PIPELINE_DEPTH?: string;
  /** Adaptive mode's early stop: draft top probability below which drafting stops (0 = off). */
  DRAFT_MIN_CONFIDENCE?: string;
  SPECULATION_PROPOSER?: string;
  DRAFT_MS_PER_TOKEN?: string;
  /** Entries of the draft's sparse proposal q sent per sampled token. */
  DRAFT_Q_ENTRIES?: string;
  /** Milliseconds before an origin call is abandoned. */
  ORIGIN_TIMEOUT_MS?: string;
  /** How a generation's verify rounds reach its origin: "websocket" (one session, the default) or "http" (a signed call per round). */
  ORIGIN_SESSION?: string;
  /** Several origins: JSON array of {id?, url, kind?, weight?, ...} (functions/upstream/config.ts); overrides ORIGIN_URL. */
  ORIGINS?: string | unknown[];
  /** Secret: HMAC key signing verify/generate calls to reference origins (the origin's ORIGIN_SECRET). */
  ORIGIN_SECRET?: string;
  /** Key id of ORIGIN_SECRET on the origins (default "default"): rotate by adding a key id there first. */
  ORIGIN_SECRET_ID?: string;
  /** Secret: bearer token for SGLang/vLLM origins started with --api-key. */
  ORIGIN_API_KEY?: string;
  /** Extra attempts of an idempotent origin call on another origin. */
  ORIGIN_RETRIES?: string;
  /** Consecutive failures that open an origin's circuit breaker. */
  ORIGIN_BREAKER_FAILURES?: string;
  /** First open period of a breaker before its half-open probe (doubles on each failed probe, up to 60 s). */
  ORIGIN_BREAKER_COOLDOWN_MS?: string;
  /** Active health check period of a healthy origin. */
  ORIGIN_HEALTH_INTERVAL_MS?: string;
  /** Durable Objects holding draft KV blocks (functions/prefix-cache); absent = no prefix cache. */
  PREFIX_CACHE?: DurableObjectNamespace<PrefixCache>;
  /** Tokens per cached block. */
  PREFIX_CACHE_BLOCK_TOKENS?: string;
  /** Byte budget of one PrefixCache object, in MiB. */
  PREFIX_CACHE_MAX_MB?: string;
  /** Seconds an unused block lives. */
  PREFIX_CACHE_TTL_S?: string;
  /** One object per tenant (named by its cache salt) holding its recent outputs for suffix drafts (functions/suffix-history); absent = each isolate's memory only. */
  SUFFIX_HISTORY?: DurableObjectNamespace<SuffixHistory>;
  /** Tenants and hashed API keys (migrations/, functions/auth). */
  DB: D1Database;
  /** One object per tenant holding its rate-limit buckets and daily quota (functions/rate-limit). */
  RATE_LIMITER: DurableObjectNamespace<RateLimiter>;
  /** Secret: bearer token of the admin API (/admin/*) and of /health?deep=1; unset = both disabled. */
  ADMIN_SECRET?: string;
  /** Largest request body in KiB, refused (413) before it is read. */
  MAX_BODY_KB?: string;
  /** "on" lets ORIGINS/ORIGIN_URL use plain http:// beyond loopback (a private network you trust). */
  ALLOW_HTTP_ORIGINS?: string;
  /** MiB of the isolate's 128 MB new generations may fill (estimated) before they get 503 isolate_busy. */
  ISOLATE_MEMORY_BUDGET_MB?: string;
  /** Background jobs: messages carry a job id (functions/jobs); absent = POST /v1/jobs answers 503. */
  JOBS_QUEUE?: Queue<BackgroundMessage>;
  /** Webhook deliveries: messages carry a delivery id and attempt number (functions/webhooks). */
  WEBHOOKS_QUEUE?: Queue<BackgroundMessage>;
  /** One object re-sending the messages of work a queue lost or a consumer dropped (functions/background/sweeper.ts). */
  SWEEPER?: DurableObjectNamespace<Sweeper>;
  /** One object adding up every isolate's metrics for GET /metrics (functions/metrics); absent = each isolate reports its own. */
  METRICS?: DurableObjectNamespace<Metrics>;
  /** Workers Analytics Engine dataset (production): a data point per request and per generation (functions/metrics/analytics.ts). */
  ANALYTICS?: AnalyticsEngineDataset;
  /** Seconds a job run's claim holds without renewal (renewed between rounds); a dead run's job is taken over after it. */
  JOB_LEASE_S?: string;
  /** First backoff of a transiently failed job run, seconds (doubling per queue retry). */
  JOB_RETRY_BASE_S?: string;
  /** Runs of one job (claims) after which it fails. */
  JOB_MAX_ATTEMPTS?: string;
  /** Period of the sweeper's alarm while background work is open. */
  SWEEP_INTERVAL_S?: string;
  /** "on" lets webhook URLs use plain http:// to loopback (local development and tests only). */
  WEBHOOK_ALLOW_HTTP_LOOPBACK?: string;
  /** Multiplies the webhook retry schedule (1 = Svix's; the test Worker compresses it). */
  WEBHOOK_RETRY_SCALE?: string;
  /** An attempt succeeds only with a 2xx within this many ms. */
  WEBHOOK_TIMEOUT_MS?: string;
  /** An endpoint whose every attempt failed for this many seconds is disabled. */
  WEBHOOK_DISABLE_AFTER_S?: string;
  /** Seconds the previous secret keeps signing after a rotation. */
  WEBHOOK_ROTATION_OVERLAP_S?: string;
  /** Largest inbound trigger event body, KiB. */
  TRIGGER_MAX_BODY_KB?: string;
  /** Largest clock difference accepted in a signed trigger event's timestamp, seconds. */
  TRIGGER_TOLERANCE_S?: string;
}
