-- Background jobs, outbound webhooks (Standard Webhooks v1) and inbound
-- triggers (functions/jobs, functions/webhooks, functions/triggers). Queue
-- messages carry only ids; everything else lives here. D1 has no BEGIN:
-- every state change is one conditional UPDATE (WHERE status = … AND
-- attempt = …) in a db.batch() with what must happen with it, and every
-- "exactly once" is a UNIQUE constraint, never a read followed by a write.
-- Times are unix ms.

-- Where a tenant's events go. `inline` endpoints are the per-job URLs of
-- `POST /v1/jobs {"webhook": {"url"}}`: not listed, same delivery rules.
CREATE TABLE webhook_endpoints (
  id TEXT PRIMARY KEY,                       -- "whe_" + random
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  url TEXT NOT NULL,
  description TEXT,
  event_types TEXT NOT NULL,                 -- JSON array of event types sent
  inline INTEGER NOT NULL DEFAULT 0,
  enabled INTEGER NOT NULL DEFAULT 1,
  disabled_reason TEXT,                      -- "gone" (a 410), "failing" (failing for WEBHOOK_DISABLE_AFTER_S), "user"
  disabled_at INTEGER,
  failing_since INTEGER,                     -- first failed attempt since the last success; NULL when healthy
  secret TEXT NOT NULL,                      -- whsec_…: signs every attempt
  previous_secret TEXT,                      -- still signs, next to `secret`, until previous_secret_expires_at
  previous_secret_expires_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  deleted_at INTEGER                         -- soft delete: deliveries keep their endpoint
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, inline, created_at);

-- A job: one completion request run in the background.
-- queued → in_progress → completed | failed | cancelled (functions/jobs/state.ts).
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,                       -- "job_" + random
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  api_key_id TEXT,                           -- the key that created it (NULL for a trigger's job)
  status TEXT NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled')),
  request TEXT NOT NULL,                     -- the completion request (JSON, as validated)
  metadata TEXT,                             -- JSON object of at most 16 short strings
  webhook_endpoint_id TEXT REFERENCES webhook_endpoints(id),
  trigger_id TEXT,                           -- set when an inbound trigger made it
  attempt INTEGER NOT NULL DEFAULT 0,        -- consumer runs that claimed it
  transition TEXT,                           -- random token of the last transition: the statements batched with it check it
  run_after INTEGER NOT NULL,                -- not claimed before (rate-limit and retry delays)
  lease_until INTEGER,                       -- in_progress: the claim holds until then (renewed between rounds)
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  charge TEXT,                               -- JSON {attempt, tokens, day, state}: the open rate-limit reservation of a run
  result_text TEXT,
  token_ids TEXT,                            -- JSON array, when the request asked for return_token_ids
  finish_reason TEXT,
  usage TEXT,                                -- JSON, OpenAI's usage object
  speculation TEXT,                          -- JSON, as /v1/completions reports it
  error TEXT,                                -- JSON {code, message}
  last_error TEXT,                           -- JSON {code, message} of the last transient failure (the DLQ's reason)
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  updated_at INTEGER NOT NULL
);
CREATE INDEX jobs_tenant_created ON jobs(tenant_id, created_at, id);
CREATE INDEX jobs_open ON jobs(status, updated_at) WHERE status IN ('queued', 'in_progress');

-- Idempotency-Key: one key names one job of a tenant for 24 h; the same key with another body is a 409.
CREATE TABLE idempotency_keys (
  tenant_id TEXT NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,                -- SHA-256 of the canonical JSON body
  job_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, key)
);

-- What happened to a job, once: the body every delivery of it sends.
CREATE TABLE events (
  id TEXT PRIMARY KEY,                       -- "evt_" + random: the webhook-id header
  tenant_id TEXT NOT NULL,
  job_id TEXT NOT NULL REFERENCES jobs(id),
  type TEXT NOT NULL,                        -- job.started | job.completed | job.failed | job.cancelled
  terminal INTEGER NOT NULL,                 -- 1 for completed / failed / cancelled
  payload TEXT NOT NULL,                     -- {"type", "timestamp", "data"} exactly as signed and sent
  created_at INTEGER NOT NULL,
  UNIQUE (job_id, type)
);
-- A job ends once: one terminal event per job, whichever it is.
CREATE UNIQUE INDEX events_one_terminal ON events(job_id) WHERE terminal = 1;
CREATE INDEX events_tenant_created ON events(tenant_id, created_at);

-- One event to one endpoint (replays add rows with replay = 1, 2, …).
-- pending → delivering → succeeded | failed, or back to pending for a retry (functions/webhooks/state.ts).
CREATE TABLE webhook_deliveries (
  id TEXT PRIMARY KEY,                       -- "whd_" + random
  tenant_id TEXT NOT NULL,
  event_id TEXT NOT NULL REFERENCES events(id),
  endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id),
  job_id TEXT,
  replay INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER,
  lease_until INTEGER,                       -- delivering: the attempt holds until then
  last_status INTEGER,
  last_error TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  finished_at INTEGER,
  UNIQUE (event_id, endpoint_id, replay)
);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries(job_id, created_at);
CREATE INDEX webhook_deliveries_open ON webhook_deliveries(status, next_attempt_at) WHERE status IN ('pending', 'delivering');

-- Every attempt of a delivery, once.
CREATE TABLE webhook_attempts (
  delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id),
  attempt INTEGER NOT NULL,
  started_at INTEGER NOT NULL,
  latency_ms INTEGER NOT NULL,
  status_code INTEGER,                       -- NULL: no HTTP answer (timeout, connection error, refused URL)
  outcome TEXT NOT NULL,                     -- success | failure | timeout | network | redirect | gone | blocked | skipped
  error TEXT,
  response_snippet TEXT,                     -- the first 1 KiB of the answer
  PRIMARY KEY (delivery_id, attempt)
);

-- Inbound triggers: a signed POST from GitHub, Stripe, Slack or any Standard Webhooks sender becomes a job.
CREATE TABLE triggers (
  id TEXT PRIMARY KEY,                       -- "trg_" + random: its URL is /v1/triggers/<id>/events
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  name TEXT,
  scheme TEXT NOT NULL CHECK (scheme IN ('github', 'stripe', 'slack', 'standard-webhooks')),
  secret TEXT NOT NULL,
  template TEXT NOT NULL,                    -- Jinja, rendered with the event payload into the prompt
  params TEXT NOT NULL,                      -- JSON: the completion request without its prompt
  webhook_endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id),
  created_at INTEGER NOT NULL,
  deleted_at INTEGER
);
CREATE INDEX triggers_tenant ON triggers(tenant_id, created_at);

-- One inbound delivery id runs once: a replay is acknowledged and finds this row.
CREATE TABLE trigger_deliveries (
  trigger_id TEXT NOT NULL REFERENCES triggers(id),
  delivery_id TEXT NOT NULL,                 -- X-GitHub-Delivery, Stripe's event id, Slack's event_id, webhook-id
  job_id TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  PRIMARY KEY (trigger_id, delivery_id)
);
CREATE INDEX trigger_deliveries_received ON trigger_deliveries(received_at);
