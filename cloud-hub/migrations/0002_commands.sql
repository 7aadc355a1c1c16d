-- Commands for gateways, durable until the gateway reports a result or the deadline passes.
CREATE TABLE commands (
    id           bigserial PRIMARY KEY,
    gateway_id   text NOT NULL,
    -- {"write_point": {"device": "...", "point": "...", "value": 1.5}}
    action       jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sent', 'succeeded', 'failed', 'expired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    deadline     timestamptz NOT NULL,
    sent_at      timestamptz,
    completed_at timestamptz,
    result       text
);
CREATE INDEX commands_open ON commands (gateway_id, id) WHERE state IN ('pending', 'sent');
