-- Idempotency keys expire (database.idempotency_key_ttl, 24 h by default): a claim
-- takes over an expired key, and a background sweep deletes expired rows in batches
-- by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
