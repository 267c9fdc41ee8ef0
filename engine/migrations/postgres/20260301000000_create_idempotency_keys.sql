-- Idempotency keys of POST /events. One row per key, written in the same
-- transaction as the event it names; the primary key makes the first committed
-- request win (INSERT ... ON CONFLICT DO NOTHING). Keys are global (not scoped to a
-- client), compared bytewise, and kept forever for now.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT COLLATE "C" NOT NULL PRIMARY KEY
                    CHECK (octet_length(idempotency_key) BETWEEN 1 AND 255),
    -- Lowercase hex SHA-256 of the canonical request.
    request_hash    TEXT COLLATE "C" NOT NULL CHECK (request_hash ~ '^[0-9a-f]{64}$'),
    -- The key row is inserted before its event: check the reference at commit.
    event_id        TEXT COLLATE "C" NOT NULL
                    REFERENCES revenue_events (id) DEFERRABLE INITIALLY DEFERRED,
    created_at      TIMESTAMPTZ NOT NULL
);
