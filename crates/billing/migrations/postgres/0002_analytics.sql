-- Analytics' projection of `order-events` (consumer group `analytics`): orders and revenue
-- per product. Its own tables, which nothing else reads or writes: `brigade replay
-- analytics` empties them and rebuilds them from the stream. Money is integer minor units
-- (cents); timestamps are Unix milliseconds.

-- One row per order the projection has heard of: its lines (from OrderCreated) and the
-- furthest it got (created < paid < refunded). An order counts in `analytics_products`
-- while it has lines and its status is `paid`, whichever order its events came in.
CREATE TABLE analytics_orders (
    order_id   TEXT    PRIMARY KEY,
    -- The lines as JSON, [{"product_id", "quantity", "unit_price_minor"}]; NULL until an
    -- OrderCreated with items is applied (a foreign producer's order never has them).
    lines      TEXT,
    status     TEXT    NOT NULL CHECK (status IN ('created', 'paid', 'refunded')),
    updated_at BIGINT  NOT NULL
);

-- What paid orders bought, per product; a product with no paid order left has no row.
CREATE TABLE analytics_products (
    product_id    BIGINT  PRIMARY KEY,
    orders_paid   BIGINT  NOT NULL CHECK (orders_paid >= 0),
    units_paid    BIGINT  NOT NULL,
    revenue_minor BIGINT  NOT NULL
);

-- The projection's own inbox: each event id it applied, so a redelivered event changes
-- nothing. Emptied with the projection, so a replay applies everything again.
CREATE TABLE analytics_applied (
    event_id   TEXT    PRIMARY KEY,
    order_id   TEXT    NOT NULL,
    applied_at BIGINT  NOT NULL
);

-- One row that every write of the projection updates first: an event's transaction and
-- the clear of a replay queue on its lock, so a clear never interleaves with an event
-- (PostgreSQL; SQLite serializes writers anyway).
CREATE TABLE analytics_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    events_applied BIGINT  NOT NULL,
    cleared_at     BIGINT
);
INSERT INTO analytics_state (id, events_applied, cleared_at) VALUES (1, 0, NULL);
