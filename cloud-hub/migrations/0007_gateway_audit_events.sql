-- Audit events a gateway's local API reported over the uplink (logins,
-- logouts, device writes), by the gateway's sequence number: a redelivered
-- batch must not append the same event to the audit trail twice. Written in
-- the batch's transaction together with the audit_log entry.
CREATE TABLE gateway_audit_events (
    gateway_id text   NOT NULL,
    seq        bigint NOT NULL,
    -- The audit_log entry the event became.
    audit_id   bigint NOT NULL,
    PRIMARY KEY (gateway_id, seq)
);
