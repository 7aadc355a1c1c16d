-- Protocol runs (issue #14): what a gateway's run engine reported (events,
-- readings tagged with a run), the hub's evaluations of each run and the
-- engineers' approvals, and values recorded about a sample outside runs.

-- A run's readings are ordinary series, tagged: the same device point
-- recorded by a run is a series of its own, so a run's raw data is the
-- samples of its series and the polled series are untouched. NULLS NOT
-- DISTINCT keeps one untagged series per (gateway, device, metric, unit).
ALTER TABLE series ADD COLUMN run_id uuid, ADD COLUMN run_series text;
ALTER TABLE series ADD CONSTRAINT series_run_tag CHECK ((run_id IS NULL) = (run_series IS NULL));
ALTER TABLE series DROP CONSTRAINT series_gateway_id_device_id_metric_unit_key;
ALTER TABLE series ADD CONSTRAINT series_identity
    UNIQUE NULLS NOT DISTINCT (gateway_id, device_id, metric, unit, run_id, run_series);
CREATE INDEX series_run ON series (run_id, run_series) WHERE run_id IS NOT NULL;

-- Every run event once per (gateway, seq), like readings.
CREATE TABLE run_events (
    gateway_id  text NOT NULL,
    seq         bigint NOT NULL,
    run_id      uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('started', 'step_started', 'step_finished',
                    'paused', 'resumed', 'interrupted', 'safe_state_applied',
                    'completed', 'aborted', 'failed')),
    ts          timestamptz NOT NULL,
    step        text NOT NULL DEFAULT '',
    message     text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX run_events_run ON run_events (run_id, seq);

-- One row per run: the STARTED event's content and a projection of the
-- events recomputed from all of them whenever one arrives, so events that
-- come late, twice or out of order give the same row. A row exists as soon
-- as any event or reading of the run is stored; `started_seq` is NULL until
-- its STARTED arrives.
CREATE TABLE runs (
    run_id           uuid PRIMARY KEY,
    -- Order of arrival: the listing's newest-first keyset.
    run_no           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    gateway_id       text NOT NULL,
    started_seq      bigint,
    bench_id         text,
    sample_id        text,
    protocol_id      text,
    protocol_version text,
    template_toml    text,
    template_sha256  text,
    parameters       jsonb NOT NULL DEFAULT '{}',
    operator         text,
    time_scale       double precision,
    bindings         jsonb NOT NULL DEFAULT '[]',
    state            text NOT NULL DEFAULT 'running'
                     CHECK (state IN ('running', 'paused', 'completed', 'aborted', 'failed')),
    started_at       timestamptz,
    ended_at         timestamptz,
    current_step     text,
    last_message     text,
    last_seq         bigint NOT NULL DEFAULT 0,
    first_seen       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_sample ON runs (sample_id, protocol_id, started_at);
CREATE INDEX runs_bench ON runs (gateway_id, bench_id, started_at);

-- Every evaluation of a run, kept: re-evaluating appends one, and says
-- whether its verdict matches the previous one.
CREATE TABLE run_evaluations (
    evaluation_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          uuid NOT NULL REFERENCES runs (run_id),
    -- pass, fail, no_verdict, provisional
    verdict         text NOT NULL CHECK (verdict IN ('pass', 'fail', 'no_verdict', 'provisional')),
    -- For provisional: what the criteria computed (pass or fail).
    computed        text NOT NULL CHECK (computed IN ('pass', 'fail', 'no_verdict')),
    simulated       boolean NOT NULL,
    template_sha256 text NOT NULL,
    inputs          jsonb NOT NULL,
    results         jsonb NOT NULL,
    matches_previous boolean,
    trigger         text NOT NULL,
    evaluated_by    text NOT NULL,
    evaluated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_evaluations_run ON run_evaluations (run_id, evaluation_id DESC);

-- An engineer's decision on a provisional evaluation (four eyes: never the
-- run's operator). Bound to the evaluation it signed: a later evaluation
-- is not approved until someone approves it.
CREATE TABLE run_approvals (
    approval_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    evaluation_id bigint NOT NULL UNIQUE REFERENCES run_evaluations (evaluation_id),
    run_id        uuid NOT NULL REFERENCES runs (run_id),
    decision      text NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment       text NOT NULL DEFAULT '',
    -- The verdict that became final: the computed one, or fail on reject.
    final_verdict text NOT NULL CHECK (final_verdict IN ('pass', 'fail')),
    decided_by    text NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now()
);

-- Values recorded about a sample outside runs (an inspection's count of
-- major visual defects, ...). Templates read them as `before.<name>` /
-- `after.<name>` with `source = { observation = "<name>" }`.
CREATE TABLE sample_observations (
    observation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sample_id      text NOT NULL,
    name           text NOT NULL,
    value          double precision NOT NULL,
    unit           text NOT NULL DEFAULT '',
    observed_at    timestamptz NOT NULL,
    -- Where it came from, e.g. 'inspection:42'.
    source         text NOT NULL DEFAULT '',
    recorded_by    text NOT NULL DEFAULT '',
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
-- The approval an evaluation stands under: the one given on it, or carried
-- over from the previous evaluation when this one came out the same
-- (verdict and every criterion's result). A different outcome carries
-- nothing: it needs its own approval.
ALTER TABLE run_evaluations ADD COLUMN approval_id bigint REFERENCES run_approvals (approval_id);

CREATE INDEX sample_observations_sample ON sample_observations (sample_id, name, observed_at);
