-- Tenants and their API keys (functions/auth). A key is stored only as the
-- SHA-256 of its text: the clear key is shown once, when it is created.
-- Limits live on the tenant and are shared by all of its keys (a key is a
-- credential, not a budget); NULL means "no limit".
CREATE TABLE tenants (
  id TEXT PRIMARY KEY,                 -- "ten_" + random; also derives the prefix-cache salt
  name TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,         -- unix ms
  requests_per_minute INTEGER,
  tokens_per_minute INTEGER,           -- prompt + completion tokens
  tokens_per_day INTEGER,              -- prompt + completion tokens, per UTC day
  max_tokens INTEGER,                  -- largest max_tokens a request may ask for
  max_draft_length INTEGER,            -- largest speculation.draft_length
  max_depth INTEGER                    -- largest speculation.depth (verify calls in flight)
);

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,                 -- "key_" + random: safe to show and log
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  name TEXT NOT NULL,
  key_hash TEXT NOT NULL UNIQUE,       -- hex SHA-256 of the key text
  key_prefix TEXT NOT NULL,            -- first characters of the key, to recognise it in lists
  created_at INTEGER NOT NULL,
  revoked_at INTEGER                   -- NULL while the key works
);

CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
