-- Instrument calibration (issue #15): what a calibration of an instrument
-- twin found (measured values with expanded uncertainty, conditions), when
-- it is due again, and by which laboratory; the instrument's calibration
-- that stands is its latest (by calibrated_at). Records are never changed
-- but for the certificate issued for them.

CREATE TABLE calibrations (
    calibration_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- An instrument twin bound to a device (`instrument:<gateway>:<device>`).
    twin_id               text NOT NULL REFERENCES twins (twin_id),
    -- Copied from the twin when recorded: the gateway learns the status of
    -- its devices (HubMessage.calibrations) without a join on twins.
    gateway_id            text NOT NULL,
    device_id             text NOT NULL,
    calibrated_at         timestamptz NOT NULL,
    due_at                timestamptz NOT NULL,
    -- The laboratory that calibrated: ours (a calibration certificate may be
    -- issued for it) or an external one (its certificate is referenced).
    laboratory            text NOT NULL,
    external              boolean NOT NULL,
    external_certificate  text,
    -- [{name, value, unit, expanded_uncertainty, coverage_factor}]
    measured              jsonb NOT NULL CHECK (jsonb_typeof(measured) = 'array'),
    -- [{name, value, unit}] (ambient temperature, humidity, ...)
    conditions            jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(conditions) = 'array'),
    method                text NOT NULL DEFAULT '',
    recorded_by           text NOT NULL,
    recorded_at           timestamptz NOT NULL DEFAULT now(),
    -- The calibration certificate the hub issued for it (kind calibration).
    certificate_id        text REFERENCES certificates (certificate_id),
    CHECK (due_at > calibrated_at),
    CHECK (external OR external_certificate IS NULL)
);

CREATE INDEX calibrations_twin ON calibrations (twin_id, calibrated_at DESC, calibration_id DESC);
CREATE INDEX calibrations_device ON calibrations (gateway_id, device_id, calibrated_at DESC);

-- Calibration and certificate expiry alarms are raised by the hub's
-- calibration watch (crate::calibration::watch), not by the rule
-- evaluator: their rules are of kind 'calibration', one per twin and
-- metric ('calibration', 'certificate:<id>').
ALTER TABLE alarm_rules DROP CONSTRAINT alarm_rules_kind_check;
ALTER TABLE alarm_rules ADD CONSTRAINT alarm_rules_kind_check
    CHECK (kind IN ('above', 'below', 'rate_of_change', 'stale', 'anomaly', 'calibration'));
CREATE UNIQUE INDEX alarm_rules_calibration ON alarm_rules (twin_id, metric)
    WHERE kind = 'calibration' AND deleted_at IS NULL;
