-- Walking-skeleton schema. Issue #6 replaces `readings` with series ids and tiers.

CREATE TABLE gateways (
    gateway_id    text PRIMARY KEY,
    agent_version text NOT NULL DEFAULT '',
    -- Highest reading sequence committed for this gateway (told to the edge on connect).
    highest_seq   bigint NOT NULL DEFAULT 0,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    gateway_id text NOT NULL REFERENCES gateways (gateway_id),
    device_id  text NOT NULL,
    -- Acquisition time of the oldest / newest reading received from the device.
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (gateway_id, device_id)
);

CREATE TABLE readings (
    ts          timestamptz NOT NULL,
    gateway_id  text NOT NULL,
    seq         bigint NOT NULL,
    device_id   text NOT NULL,
    metric      text NOT NULL,
    value       double precision NOT NULL,
    unit        text NOT NULL,
    quality     smallint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Dedupe key of the at-least-once uplink. `ts` is part of it because a
-- TimescaleDB hypertable's unique indexes must include the time column; a
-- redelivered reading carries the same ts, so this still catches every duplicate.
CREATE UNIQUE INDEX readings_gateway_seq ON readings (gateway_id, seq, ts);
CREATE INDEX readings_device_metric_ts ON readings (device_id, metric, ts DESC);
CREATE INDEX readings_ts ON readings (ts DESC);
