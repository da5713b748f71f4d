-- API keys (`brigade keys`). Only a key's SHA-256 is kept: the key itself is shown once,
-- at creation. Timestamps are Unix milliseconds. `scopes` is a comma-separated list
-- (empty for a secret key, which may do everything).
CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('secret', 'restricted')),
    scopes      TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE,
    redacted    TEXT    NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
