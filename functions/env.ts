import type { PrefixCache } from './prefix-cache/durable-object';

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
  /** Several origins: JSON array of {id?, url, kind?, weight?, ...} (functions/origin/config.ts); overrides ORIGIN_URL. */
  ORIGINS?: string | unknown[];
  /** Secret: HMAC key signing verify/generate calls to reference origins (the origin's ORIGIN_SECRET). */
  ORIGIN_SECRET?: string;
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
  /** "on" mounts /internal/bench/* (benchmarks only). */
  BENCH_ROUTES?: string;
  /** Durable Objects holding draft KV blocks (functions/prefix-cache); absent = no prefix cache. */
  PREFIX_CACHE?: DurableObjectNamespace<PrefixCache>;
  /** Cache salt of the deployment's single tenant until requests carry their own (see functions/prefix-cache/tenant.ts). */
  PREFIX_CACHE_SALT?: string;
  /** Tokens per cached block. */
  PREFIX_CACHE_BLOCK_TOKENS?: string;
  /** Byte budget of one PrefixCache object, in MiB. */
  PREFIX_CACHE_MAX_MB?: string;
  /** Seconds an unused block lives. */
  PREFIX_CACHE_TTL_S?: string;
  /** "on" mounts /internal/prefix-cache/* and the test tenant header (tests and benchmarks only). */
  TEST_ROUTES?: string;
}
