-- One row per (client scope, Idempotency-Key): a claim while the first request runs
-- (`in_flight`, fenced by `claim_token`, held until `locked_until`), then the response
-- it produced (`completed`). Timestamps are Unix milliseconds.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('in_flight', 'completed')),
    claim_token  TEXT    NOT NULL,
    locked_until BIGINT  NOT NULL,
    status       BIGINT,
    -- JSON array of [name, value] pairs: the response headers worth replaying.
    headers      TEXT,
    body         BYTEA,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK (state = 'in_flight' OR (status IS NOT NULL AND headers IS NOT NULL AND body IS NOT NULL))
);

-- The purger deletes by expiry.
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
