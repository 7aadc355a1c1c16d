-- Inbound requests from a LIMS (issue #15): the LIMS's own reference for a
-- service request, and the answers of idempotent creates.

-- The LIMS's id of the order, unique per customer (two customers' systems
-- may number alike), searchable with `?external_ref=`.
ALTER TABLE service_requests ADD COLUMN external_ref text;
CREATE UNIQUE INDEX service_requests_external_ref
    ON service_requests (customer, external_ref) WHERE external_ref IS NOT NULL;
CREATE INDEX service_requests_external_ref_search
    ON service_requests (external_ref) WHERE external_ref IS NOT NULL;

-- One row per (caller, operation, Idempotency-Key) whose create committed:
-- the hash of the request it answered and the answer, replayed to a retry
-- with the same key and body. Rows are written in the create's transaction,
-- so a create that failed leaves no key behind and may be retried; they are
-- purged after `crate::idempotency::TTL_HOURS`.
CREATE TABLE idempotency_keys (
    principal      text NOT NULL,
    operation      text NOT NULL,
    key            text NOT NULL,
    request_sha256 text NOT NULL,
    status         smallint NOT NULL,
    etag           text,
    response       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, operation, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
