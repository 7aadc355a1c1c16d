-- Desired state: the value an engineer wants a writable point of an
-- instrument twin to hold. Each row points at the latest command that
-- carries it to the device (commands, migration 0002); the command's state
-- is the tracking state, the twin's series_latest the reported value.
CREATE TABLE desired_points (
    twin_id    text NOT NULL REFERENCES twins (twin_id),
    point      text NOT NULL CHECK (length(point) BETWEEN 1 AND 128),
    value      double precision NOT NULL CHECK (value = value AND value NOT IN ('Infinity', '-Infinity')),
    -- Deadline of each command sent for it, in seconds.
    deadline_s integer NOT NULL CHECK (deadline_s BETWEEN 1 AND 86400),
    set_by     text NOT NULL,
    set_at     timestamptz NOT NULL DEFAULT now(),
    command_id bigint NOT NULL REFERENCES commands (id),
    -- Commands sent for this value: 1 when set, +1 per re-send on reconnect.
    attempts   integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    PRIMARY KEY (twin_id, point)
);
CREATE INDEX desired_points_command ON desired_points (command_id);
