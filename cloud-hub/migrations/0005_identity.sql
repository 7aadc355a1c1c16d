-- Who may use the hub's REST API (issue #12). Roles and what each may do are
-- defined in code (cloud-hub/src/identity/permissions.rs); the CHECKs repeat
-- the role names so a stray value cannot enter through SQL either.

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    -- argon2id, PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash)
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'engineer', 'operator', 'viewer')),
    -- NULL: every site; otherwise the only sites this user may see or act on.
    sites         text[],
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Refresh tokens: stored as SHA-256 of the random token; each use replaces
-- the token by a new one of the same family, and presenting a used one again
-- revokes the whole family (it was stolen, or the client is confused).
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family     text NOT NULL,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- API keys for machines: `qik_<id>_<secret>`; only SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    secret_hash  bytea NOT NULL,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'engineer', 'operator', 'viewer')),
    sites        text[],
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Keys that sign the hub's access tokens (Ed25519). The newest unretired key
-- signs; retired keys still verify until the tokens they signed have expired,
-- so rotating does not log anyone out. Kept in the database so that every hub
-- replica signs and verifies with the same keys.
CREATE TABLE signing_keys (
    kid           text PRIMARY KEY,
    private_pkcs8 bytea NOT NULL,
    public_key    bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz
);

-- Which site a gateway belongs to: what site-scoped users and keys are limited by.
CREATE TABLE gateway_sites (
    gateway_id text PRIMARY KEY,
    site_id    text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
