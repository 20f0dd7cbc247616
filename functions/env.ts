import type { PrefixCache } from './prefix-cache/durable-object';
import type { RateLimiter } from './rate-limit/durable-object';

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
  /** Verify requests in flight in pipelined mode (D). */
  PIPELINE_DEPTH?: string;
  /** Adaptive mode's early stop: draft top probability below which drafting stops (0 = off). */
  DRAFT_MIN_CONFIDENCE?: string;
  /** Entries of the draft's sparse proposal q sent per sampled token. */
  DRAFT_Q_ENTRIES?: string;
  /** Milliseconds before an origin call is abandoned. */
  ORIGIN_TIMEOUT_MS?: string;
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
}
