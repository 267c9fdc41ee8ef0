-- Revenue events (charges and refunds). Text columns use the "C" collation so
-- ordering (notably the id tie-breaker of keyset pagination) is bytewise, as in
-- SQLite.
CREATE TABLE revenue_events (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    customer_id TEXT COLLATE "C" NOT NULL,
    product     TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL CHECK (kind IN ('charge', 'refund')),
    amount      BIGINT      NOT NULL CHECK (amount > 0),
    currency    TEXT COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    occurred_at TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    metadata    JSONB
);

CREATE INDEX revenue_events_occurred_at ON revenue_events (occurred_at, id);
CREATE INDEX revenue_events_customer_occurred_at ON revenue_events (customer_id, occurred_at, id);
CREATE INDEX revenue_events_product_occurred_at ON revenue_events (product, occurred_at, id);
