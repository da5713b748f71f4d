-- One row per order billing charged (or tried to, and the provider declined): the
-- provider's answer, kept so a re-published OrderConfirmed is never charged twice and a
-- cancellation knows what to refund. Money is integer minor units (cents); timestamps
-- are Unix milliseconds.
CREATE TABLE payments (
    order_id       TEXT    PRIMARY KEY,
    amount_minor   BIGINT  NOT NULL CHECK (amount_minor >= 0),
    currency       TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('succeeded', 'declined', 'refunded')),
    -- The provider's charge (for a decline, the failed charge, when it names one).
    charge_id      TEXT,
    decline_code   TEXT,
    decline_reason TEXT,
    refund_id      TEXT,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    CHECK (status = 'declined' OR charge_id IS NOT NULL),
    CHECK (status <> 'declined' OR decline_code IS NOT NULL),
    CHECK (status <> 'refunded' OR refund_id IS NOT NULL)
);
