-- Time-series layout: a series (gateway, device, metric, unit) gets a compact
-- id once; each sample row is then ~50 bytes instead of repeating four strings.
-- `readings` stays as a view with the old columns for the API and for scripts.

CREATE TABLE series (
    series_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_id text NOT NULL REFERENCES gateways (gateway_id),
    device_id  text NOT NULL,
    metric     text NOT NULL,
    unit       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, device_id, metric, unit)
);

CREATE TABLE samples (
    ts          timestamptz NOT NULL,
    series_id   integer NOT NULL,
    -- Per-gateway sequence of the at-least-once uplink (dedupe key).
    seq         bigint NOT NULL,
    value       double precision NOT NULL,
    quality     smallint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- One index serves both the dedupe (a redelivered reading has the same
-- series, time and sequence; a hypertable's unique index must include the
-- time column) and every query, which selects series and a time range.
CREATE UNIQUE INDEX samples_series_ts_seq ON samples (series_id, ts, seq);

INSERT INTO series (gateway_id, device_id, metric, unit)
SELECT DISTINCT gateway_id, device_id, metric, unit FROM readings;

INSERT INTO samples (ts, series_id, seq, value, quality, received_at)
SELECT r.ts, s.series_id, r.seq, r.value, r.quality, r.received_at
FROM readings r
JOIN series s USING (gateway_id, device_id, metric, unit);

DROP TABLE readings;

CREATE VIEW readings AS
SELECT x.ts, s.gateway_id, x.seq, s.device_id, s.metric, x.value, s.unit, x.quality, x.received_at, x.series_id
FROM samples x
JOIN series s USING (series_id);
