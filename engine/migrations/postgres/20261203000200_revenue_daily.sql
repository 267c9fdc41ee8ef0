-- Daily rollup of revenue_events for summaries (GET /summary): one row per UTC day,
-- currency and product with the exact totals of that day's events. A summary reads
-- the whole UTC days of its range here and only the partial days at its edges from
-- revenue_events, so a month is about (days x currencies x products) rows instead of
-- every event of the month.
--
-- The rollup is kept exact by statement-level triggers on revenue_events, in the
-- same transaction as the write (any write: the engine's, a backfill, or SQL run by
-- hand). Each INSERT statement adds its rows' totals with one upsert, taking the
-- rollup rows it touches in key order (no deadlock between concurrent batches).
-- Writers of the same day, currency and product serialise on that rollup row until
-- commit: accepted (events arrive spread over products and currencies, and the lock
-- is held only for the rest of the writing transaction).
--
-- Sums are NUMERIC (like SUM(bigint)), so they never overflow. Rows never hold
-- count = 0: a DELETE that empties a group removes its row, so a summary never shows
-- a bucket without events.
CREATE TABLE revenue_daily (
    day      DATE            NOT NULL,
    currency TEXT COLLATE "C" NOT NULL,
    product  TEXT COLLATE "C" NOT NULL,
    gross    NUMERIC         NOT NULL,
    refunds  NUMERIC         NOT NULL,
    count    BIGINT          NOT NULL,
    PRIMARY KEY (day, currency, product)
);

-- Adds the events of the transition table new_rows.
CREATE FUNCTION revenue_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO revenue_daily AS r (day, currency, product, gross, refunds, count)
    SELECT (occurred_at AT TIME ZONE 'UTC')::date, currency, product,
           COALESCE(SUM(amount) FILTER (WHERE kind = 'charge'), 0),
           COALESCE(SUM(amount) FILTER (WHERE kind = 'refund'), 0),
           COUNT(*)
    FROM new_rows
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (day, currency, product) DO UPDATE
    SET gross = r.gross + EXCLUDED.gross,
        refunds = r.refunds + EXCLUDED.refunds,
        count = r.count + EXCLUDED.count;
    RETURN NULL;
END;
$$;

-- Subtracts the events of the transition table old_rows; drops emptied groups.
-- (The engine never updates or deletes events; this keeps the rollup exact when
-- that is done by hand.)
CREATE FUNCTION revenue_daily_subtract() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revenue_daily r
    SET gross = r.gross - g.gross, refunds = r.refunds - g.refunds, count = r.count - g.count
    FROM (SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, currency, product,
                 COALESCE(SUM(amount) FILTER (WHERE kind = 'charge'), 0) AS gross,
                 COALESCE(SUM(amount) FILTER (WHERE kind = 'refund'), 0) AS refunds,
                 COUNT(*) AS count
          FROM old_rows
          GROUP BY 1, 2, 3) g
    WHERE (r.day, r.currency, r.product) = (g.day, g.currency, g.product);
    DELETE FROM revenue_daily WHERE count = 0;
    RETURN NULL;
END;
$$;

CREATE FUNCTION revenue_daily_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM revenue_daily;
    RETURN NULL;
END;
$$;

CREATE TRIGGER revenue_daily_insert AFTER INSERT ON revenue_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_daily_add();
CREATE TRIGGER revenue_daily_delete AFTER DELETE ON revenue_events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_daily_subtract();
-- An UPDATE moves the old version's totals out and the new version's in.
CREATE TRIGGER revenue_daily_update_old AFTER UPDATE ON revenue_events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_daily_subtract();
CREATE TRIGGER revenue_daily_update_new AFTER UPDATE ON revenue_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_daily_add();
CREATE TRIGGER revenue_daily_truncate AFTER TRUNCATE ON revenue_events
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_daily_truncate();

-- Backfill. The SHARE lock blocks concurrent writes until this migration commits,
-- so no event is missed or counted twice.
LOCK TABLE revenue_events IN SHARE MODE;
INSERT INTO revenue_daily (day, currency, product, gross, refunds, count)
SELECT (occurred_at AT TIME ZONE 'UTC')::date, currency, product,
       COALESCE(SUM(amount) FILTER (WHERE kind = 'charge'), 0),
       COALESCE(SUM(amount) FILTER (WHERE kind = 'refund'), 0),
       COUNT(*)
FROM revenue_events
GROUP BY 1, 2, 3;
