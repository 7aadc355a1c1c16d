-- The audit trail: every state change, append-only, each entry chained to
-- the previous one by SHA-256 (cloud-hub/src/audit/chain.rs says exactly what
-- is hashed), so `cloud-hub audit verify` finds an edited or deleted row.

CREATE TABLE audit_log (
    -- Assigned in chain order without gaps; a missing id is a deleted row.
    id          bigint PRIMARY KEY,
    -- When the hub recorded it.
    recorded_at timestamptz NOT NULL,
    -- When it happened (earlier for events a gateway buffered while offline).
    occurred_at timestamptz NOT NULL,
    -- user, api_key, oidc, gateway_user, gateway, cli, system
    actor_kind  text NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    -- The gateway an event happened on (events from a gateway's local API).
    gateway_id  text,
    source_addr text,
    user_agent  text,
    -- JSON text exactly as hashed (jsonb would re-format it).
    before      text,
    after       text,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX audit_log_occurred ON audit_log (occurred_at);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);

-- Append-only: no role but a superuser that switches triggers off can change
-- or remove a row, and the chain shows it if one does.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
