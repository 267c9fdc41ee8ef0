-- Revenue events (charges and refunds). Timestamps are UTC TEXT in the fixed-width
-- form YYYY-MM-DDTHH:MM:SS.ffffffZ, so text order is time order.
CREATE TABLE revenue_events (
    id          TEXT    NOT NULL PRIMARY KEY,
    customer_id TEXT    NOT NULL,
    product     TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('charge', 'refund')),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    currency    TEXT    NOT NULL CHECK (length(currency) = 3),
    occurred_at TEXT    NOT NULL CHECK (length(occurred_at) = 27),
    created_at  TEXT    NOT NULL,
    metadata    TEXT
) STRICT;

-- Keyset pagination orders by (occurred_at DESC, id DESC); each index ends with
-- both so filtered pages are read in index order.
CREATE INDEX revenue_events_occurred_at ON revenue_events (occurred_at, id);
CREATE INDEX revenue_events_customer_occurred_at ON revenue_events (customer_id, occurred_at, id);
CREATE INDEX revenue_events_product_occurred_at ON revenue_events (product, occurred_at, id);
