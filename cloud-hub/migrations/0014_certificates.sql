-- Certificates (issue #15): signed documents issued from the runs of a
-- sample (kind 'test'); kind 'calibration' (an instrument's calibration
-- certificate) is reserved for later work. A certificate is never changed
-- but for its state: revoked (with reason, by, at) or superseded by a
-- corrected one that points back.

CREATE SEQUENCE certificate_number;

CREATE TABLE certificates (
    -- '<prefix>-<year>-<number>', e.g. 'QI-CERT-2026-000001'.
    certificate_id      text PRIMARY KEY,
    uuid                uuid NOT NULL UNIQUE,
    -- Order of issue: the listing's keyset.
    certificate_no      bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind                text NOT NULL CHECK (kind IN ('test', 'calibration')),
    -- The sample twin (test) or instrument twin (calibration).
    subject             text NOT NULL,
    service_request     text REFERENCES service_requests (request_id),
    -- [{run_id, protocol_id, verdict, evaluation_id, simulated}]
    runs                jsonb NOT NULL DEFAULT '[]',
    run_ids             uuid[] NOT NULL DEFAULT '{}',
    simulated           boolean NOT NULL DEFAULT false,
    issued_at           timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    issued_by           text NOT NULL,
    state               text NOT NULL DEFAULT 'valid'
                        CHECK (state IN ('valid', 'revoked', 'superseded')),
    revocation_reason   text,
    revoked_by          text,
    revoked_at          timestamptz,
    -- Deferred: the old certificate points at its correction in the
    -- transaction that inserts the correction.
    superseded_by       text REFERENCES certificates (certificate_id) DEFERRABLE INITIALLY DEFERRED,
    supersedes          text REFERENCES certificates (certificate_id),
    -- The signed XML document, its JSON mirror (the JWS payload, bytes as
    -- signed) and the detached JWS.
    document_xml        bytea NOT NULL,
    document_json       bytea NOT NULL,
    document_jws        text NOT NULL,
    document_sha256     text NOT NULL,
    -- SHA-256 of the issuing certificate that signed it.
    issuer_fingerprint  text NOT NULL,
    -- The transparency log's entry (index, inclusion proof, tree head).
    log_entry           jsonb,
    CHECK ((state = 'valid') = (revoked_at IS NULL)),
    CHECK ((state = 'superseded') = (superseded_by IS NOT NULL))
);

CREATE INDEX certificates_subject ON certificates (subject, certificate_no);
CREATE INDEX certificates_request ON certificates (service_request, certificate_no);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_runs ON certificates USING gin (run_ids);
