-- The transactional outbox: messages a write implies, stored in the write's own
-- transaction; the relay publishes them in `seq` order and stamps `sent_at`.
CREATE TABLE outbox (
    seq          BIGSERIAL PRIMARY KEY,
    message_id   TEXT    NOT NULL UNIQUE,
    shape        TEXT    NOT NULL CHECK (shape IN ('queue', 'stream')),
    destination  TEXT    NOT NULL,
    envelope     TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    sent_at      BIGINT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX outbox_unsent ON outbox (sent_at, seq);

-- The inbox: message ids a consumer has handled, recorded in the transaction of the
-- effect, so a redelivered or re-published message has no second effect.
CREATE TABLE inbox (
    consumer    TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    handled_at  BIGINT  NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_by_age ON inbox (handled_at);
