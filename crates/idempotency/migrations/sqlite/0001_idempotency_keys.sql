-- One row per (client scope, Idempotency-Key): a claim while the first request runs
-- (`in_flight`, fenced by `claim_token`, held until `locked_until`), then the response
-- it produced (`completed`). Timestamps are Unix milliseconds.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('in_flight', 'completed')),
    claim_token  TEXT    NOT NULL,
    locked_until INTEGER NOT NULL,
    status       INTEGER,
    -- JSON array of [name, value] pairs: the response headers worth replaying.
    headers      TEXT,
    body         BLOB,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK (state = 'in_flight' OR (status IS NOT NULL AND headers IS NOT NULL AND body IS NOT NULL))
);

-- The purger deletes by expiry.
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
