-- Live state of gateways (health) and alarms on twins (issue #13).

-- Health: whether the gateway's uplink stream is open at this hub, and
-- since when. `last_seen` (0001) is also refreshed while the stream is open
-- (every batch and a heartbeat), so a hub that died without marking its
-- gateways offline does not leave them "online": readers also require a
-- recent last_seen (cloud-hub/src/live/health.rs).
ALTER TABLE gateways
    ADD COLUMN online          boolean NOT NULL DEFAULT false,
    ADD COLUMN connected_at    timestamptz,
    ADD COLUMN disconnected_at timestamptz;

-- Alarm rules: a condition on one metric of one twin.
CREATE TABLE alarm_rules (
    rule_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    twin_id     text NOT NULL REFERENCES twins (twin_id),
    metric      text NOT NULL,
    kind        text NOT NULL
                CHECK (kind IN ('above', 'below', 'rate_of_change', 'stale', 'anomaly')),
    -- Kind-specific parameters (threshold, hysteresis, for_s, per_s,
    -- stale_s, detector, window, z), checked by the hub on write.
    params      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    severity    text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning', 'info')),
    enabled     boolean NOT NULL DEFAULT true,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: alarms keep naming their rule.
    deleted_at  timestamptz
);
CREATE INDEX alarm_rules_twin ON alarm_rules (twin_id) WHERE deleted_at IS NULL;

-- Alarms: active or cleared, acknowledged or not (ThingsBoard's model).
CREATE TABLE alarms (
    alarm_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         bigint NOT NULL REFERENCES alarm_rules (rule_id),
    twin_id         text NOT NULL REFERENCES twins (twin_id),
    metric          text NOT NULL,
    severity        text NOT NULL,
    -- What raised it: value, threshold, reading time.
    details         jsonb NOT NULL DEFAULT '{}',
    raised_at       timestamptz NOT NULL DEFAULT now(),
    cleared_at      timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text,
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL))
);
-- One active alarm per rule: a raise while one is active is a no-op, also
-- across hub restarts and concurrent evaluators.
CREATE UNIQUE INDEX alarms_one_active_per_rule ON alarms (rule_id) WHERE cleared_at IS NULL;
CREATE INDEX alarms_twin ON alarms (twin_id, alarm_id DESC);
CREATE INDEX alarms_open ON alarms (alarm_id DESC) WHERE cleared_at IS NULL OR acknowledged_at IS NULL;
