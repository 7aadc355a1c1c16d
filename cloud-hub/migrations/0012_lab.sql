-- The lab's work flow around the protocol runs (issue #14): service requests,
-- the samples they bring (twins of kind 'sample', id 'sample:<serial>'), and
-- inspections with findings and photos. An inspection's defect counts become
-- sample_observations (migration 0011), which the runs' criteria read as
-- before.* / after.* values.

CREATE SEQUENCE service_request_number;

CREATE TABLE service_requests (
    -- 'SR-' and the number, assigned by the hub.
    request_id  text PRIMARY KEY,
    customer    text NOT NULL,
    module_type text NOT NULL,
    -- The protocols the customer asked for, in the order they are to run.
    protocols   text[] NOT NULL,
    state       text NOT NULL DEFAULT 'received'
        CHECK (state IN ('received', 'intake', 'testing', 'evaluation', 'completed', 'cancelled')),
    notes       text NOT NULL DEFAULT '',
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Optimistic concurrency (ETag / If-Match).
    version     bigint NOT NULL DEFAULT 1
);

CREATE INDEX service_requests_state ON service_requests (state, request_id);

-- A sample belongs to one service request.
CREATE TABLE service_request_samples (
    request_id text NOT NULL REFERENCES service_requests (request_id),
    sample_id  text NOT NULL UNIQUE,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, sample_id)
);

-- Every state change, never updated or deleted (the audit trail has them too).
CREATE TABLE service_request_transitions (
    transition_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id    text NOT NULL REFERENCES service_requests (request_id),
    from_state    text NOT NULL,
    to_state      text NOT NULL,
    comment       text NOT NULL DEFAULT '',
    by_actor      text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX service_request_transitions_request
    ON service_request_transitions (request_id, transition_id);

-- Append-only: a correction is a new inspection.
CREATE TABLE inspections (
    inspection_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sample_id     text NOT NULL,
    stage         text NOT NULL CHECK (stage IN ('intake', 'intermediate', 'final')),
    performed_at  timestamptz NOT NULL,
    inspector     text NOT NULL,
    -- [{defect, severity: major|minor, location, note}]
    findings      jsonb NOT NULL,
    major_defects integer NOT NULL,
    minor_defects integer NOT NULL,
    notes         text NOT NULL DEFAULT '',
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX inspections_sample ON inspections (sample_id, performed_at, inspection_id);

CREATE TABLE inspection_photos (
    inspection_id bigint NOT NULL REFERENCES inspections (inspection_id),
    photo_no      integer NOT NULL,
    content_type  text NOT NULL,
    bytes         bytea NOT NULL,
    sha256        text NOT NULL,
    caption       text NOT NULL DEFAULT '',
    uploaded_by   text NOT NULL,
    uploaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (inspection_id, photo_no)
);
