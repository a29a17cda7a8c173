-- 001-initial: settings, API keys, safety rules and the audit log.
-- Applied once, inside a transaction, by app/core/db.c; PRAGMA user_version
-- records the number of the last migration applied.

CREATE TABLE settings (
  key   TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  name      TEXT NOT NULL UNIQUE,
  prefix    TEXT NOT NULL,          -- first characters of the key, shown in listings
  salt      TEXT NOT NULL,          -- hex, 16 random bytes
  hash      TEXT NOT NULL,          -- hex HMAC-SHA256 (salt, key)
  created   INTEGER NOT NULL,       -- unix seconds
  last_used INTEGER,              -- unix seconds, NULL when never used
  revoked   INTEGER,                -- unix seconds, NULL while valid
  rpm       INTEGER NOT NULL DEFAULT 0,  -- requests per minute, 0 = server default
  tpm       INTEGER NOT NULL DEFAULT 0   -- tokens per minute, 0 = server default
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);

CREATE TABLE rules (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  kind     TEXT NOT NULL CHECK (kind IN ('word', 'regex')),
  pattern  TEXT NOT NULL,
  action   TEXT NOT NULL CHECK (action IN ('block', 'mask', 'log')),
  scope    TEXT NOT NULL DEFAULT 'both' CHECK (scope IN ('input', 'output', 'both')),
  nocase   INTEGER NOT NULL DEFAULT 0,
  nowidth  INTEGER NOT NULL DEFAULT 0,
  label    TEXT NOT NULL DEFAULT '',
  created  INTEGER NOT NULL
);

CREATE TABLE audit (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  time              INTEGER NOT NULL,    -- unix microseconds
  request_id        TEXT NOT NULL DEFAULT '',
  client            TEXT NOT NULL DEFAULT '',
  key_id            INTEGER,
  model             TEXT NOT NULL DEFAULT '',
  endpoint          TEXT NOT NULL DEFAULT '',
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  cached_tokens     INTEGER NOT NULL DEFAULT 0,
  ttft_ms           REAL NOT NULL DEFAULT 0,
  total_ms          REAL NOT NULL DEFAULT 0,
  finish_reason     TEXT NOT NULL DEFAULT '',
  verdicts          TEXT NOT NULL DEFAULT '[]',  -- JSON array of rule verdicts
  privacy           TEXT NOT NULL DEFAULT 'none' CHECK (privacy IN ('full', 'hashed', 'none')),
  prompt            TEXT,                -- per privacy: the text, its SHA-256, or NULL
  completion        TEXT
);
CREATE INDEX audit_time ON audit (time);
