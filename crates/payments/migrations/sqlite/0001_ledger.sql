-- The sandbox's ledger. Amounts are integer minor units (cents); timestamps are Unix
-- milliseconds. `seq` orders the ledger as it was written; `id` is what clients see.
-- A declined charge is a row too (`failed`, with why), as a provider's ledger keeps it.
CREATE TABLE charges (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT    NOT NULL,
    order_id        TEXT    NOT NULL,
    description     TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed')),
    failure_code    TEXT,
    failure_message TEXT,
    decline_code    TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0
        CHECK (amount_refunded >= 0 AND amount_refunded <= amount),
    created_at      INTEGER NOT NULL,
    CHECK ((status = 'failed') = (failure_code IS NOT NULL)),
    CHECK (status = 'succeeded' OR amount_refunded = 0)
);

CREATE INDEX charges_by_order ON charges (order_id, seq);

CREATE TABLE refunds (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    charge_id  TEXT    NOT NULL REFERENCES charges (id),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    created_at INTEGER NOT NULL
);

CREATE INDEX refunds_by_charge ON refunds (charge_id, seq);
