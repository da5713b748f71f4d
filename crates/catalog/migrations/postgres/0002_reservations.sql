-- Stock held for an order, idempotent per order id. `lines` is the canonical JSON of
-- the reserved lines ([[product_id, quantity], ...] sorted by product), so a retried
-- ReserveStock can be recognised as the same request.
CREATE TABLE reservations (
    order_id   TEXT   PRIMARY KEY,
    state      TEXT   NOT NULL CHECK (state IN ('reserved', 'released')),
    lines      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
