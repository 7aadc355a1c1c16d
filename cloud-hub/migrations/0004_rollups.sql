-- Rollups kept by the hub (every tier; on TimescaleDB they could be
-- continuous aggregates, but one code path serves all tiers the same way).
-- Per series and bucket: enough to combine buckets exactly (count, sum,
-- sum of squares for stddev, min, max, first and last by time).

CREATE TABLE rollup_1m (
    series_id integer NOT NULL,
    bucket    timestamptz NOT NULL,
    n         bigint NOT NULL,
    sum       double precision NOT NULL,
    sum_sq    double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    first_ts  timestamptz NOT NULL,
    first     double precision NOT NULL,
    last_ts   timestamptz NOT NULL,
    last      double precision NOT NULL,
    PRIMARY KEY (series_id, bucket)
);

CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL);

-- How far (by the hub's commit time) raw samples have been rolled up.
CREATE TABLE rollup_state (
    name      text PRIMARY KEY,
    watermark timestamptz NOT NULL
);
INSERT INTO rollup_state VALUES ('samples', '-infinity');

-- The rollup worker finds new samples by commit time; a BRIN index costs
-- almost nothing on an append-mostly table.
CREATE INDEX samples_received_brin ON samples USING brin (received_at);
