-- Timestamps are Unix milliseconds; money is integer cents. `seq` orders a user's list
-- (keyset pages); `id` is the public tracking id.
CREATE TABLE orders (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    user_id         BIGINT  NOT NULL,
    status          TEXT    NOT NULL,
    total_minor     BIGINT  NOT NULL CHECK (total_minor >= 0),
    currency        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, seq);

CREATE TABLE order_items (
    order_id          TEXT    NOT NULL REFERENCES orders (id),
    line              INTEGER NOT NULL,
    product_id        BIGINT  NOT NULL,
    quantity          BIGINT  NOT NULL CHECK (quantity > 0),
    unit_price_minor  BIGINT  NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line)
);

CREATE TABLE order_transitions (
    order_id  TEXT    NOT NULL REFERENCES orders (id),
    step      INTEGER NOT NULL,
    status    TEXT    NOT NULL,
    at        BIGINT  NOT NULL,
    reason    TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, step)
);
