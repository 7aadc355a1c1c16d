-- The transparency log (issue #15, docs/transparency-log.md): an
-- append-only RFC 6962 Merkle tree of entries (issued and revoked
-- certificates). cloud-hub/src/translog/store.rs is the only writer.

-- One row per leaf, indexes 0.. without gaps.
CREATE TABLE translog_leaves (
    idx         bigint PRIMARY KEY CHECK (idx >= 0),
    -- SHA-256(0x00 || entry).
    leaf_hash   bytea NOT NULL CHECK (length(leaf_hash) = 32),
    -- The entry exactly as hashed.
    entry       bytea NOT NULL,
    appended_at timestamptz NOT NULL DEFAULT now()
);
-- Proofs by leaf hash (a certificate knows its entry, not its index).
CREATE INDEX translog_leaves_hash ON translog_leaves (leaf_hash);

-- The hash of every complete (perfect) subtree of level >= 1: level L,
-- index k covers leaves [k * 2^L, (k + 1) * 2^L). Written when its last
-- leaf is appended, never changed; a proof reads O(log n) of these rows
-- (level 0 is translog_leaves.leaf_hash).
CREATE TABLE translog_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- The tree's current size and root, and its right edge (the perfect
-- subtrees covering [0, tree_size), largest first, hashes concatenated) so
-- an append reads nothing else. One row; appenders lock it (FOR UPDATE),
-- which serialises them, so indexes have no gaps.
CREATE TABLE translog_head (
    id         smallint PRIMARY KEY CHECK (id = 1),
    tree_size  bigint NOT NULL CHECK (tree_size >= 0),
    root_hash  bytea NOT NULL CHECK (length(root_hash) = 32),
    frontier   bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO translog_head (id, tree_size, root_hash, frontier)
    VALUES (1, 0, sha256(''::bytea), ''::bytea);

-- The log's Ed25519 signing key, made at the hub's first start. One key
-- for the log's life: the key is the log's identity (its log id is the
-- SHA-256 of the public key's SubjectPublicKeyInfo).
CREATE TABLE translog_key (
    id            smallint PRIMARY KEY CHECK (id = 1),
    private_pkcs8 bytea NOT NULL,
    public_key    bytea NOT NULL CHECK (length(public_key) = 32),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Append-only: leaves, nodes and the key are never updated or deleted; the
-- head only moves forward, and only over leaves that are there.
CREATE FUNCTION translog_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER translog_leaves_no_change BEFORE UPDATE OR DELETE ON translog_leaves
    FOR EACH ROW EXECUTE FUNCTION translog_append_only();
CREATE TRIGGER translog_leaves_no_truncate BEFORE TRUNCATE ON translog_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION translog_append_only();
CREATE TRIGGER translog_nodes_no_change BEFORE UPDATE OR DELETE ON translog_nodes
    FOR EACH ROW EXECUTE FUNCTION translog_append_only();
CREATE TRIGGER translog_nodes_no_truncate BEFORE TRUNCATE ON translog_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION translog_append_only();
CREATE TRIGGER translog_key_no_change BEFORE UPDATE OR DELETE ON translog_key
    FOR EACH ROW EXECUTE FUNCTION translog_append_only();
CREATE TRIGGER translog_key_no_truncate BEFORE TRUNCATE ON translog_key
    FOR EACH STATEMENT EXECUTE FUNCTION translog_append_only();
CREATE TRIGGER translog_head_no_delete BEFORE DELETE ON translog_head
    FOR EACH ROW EXECUTE FUNCTION translog_append_only();
CREATE TRIGGER translog_head_no_truncate BEFORE TRUNCATE ON translog_head
    FOR EACH STATEMENT EXECUTE FUNCTION translog_append_only();

CREATE FUNCTION translog_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.tree_size < OLD.tree_size
       OR (NEW.tree_size = OLD.tree_size
           AND (NEW.root_hash <> OLD.root_hash OR NEW.frontier <> OLD.frontier)) THEN
        RAISE EXCEPTION 'translog_head only grows (tree size % -> % refused)',
            OLD.tree_size, NEW.tree_size USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Every index the head now covers is a leaf (a range count on the
    -- primary key: one row for a single append).
    IF (SELECT count(*) FROM translog_leaves
         WHERE idx >= OLD.tree_size AND idx < NEW.tree_size)
       <> NEW.tree_size - OLD.tree_size THEN
        RAISE EXCEPTION 'translog_head: leaves % .. % are not all there',
            OLD.tree_size, NEW.tree_size - 1 USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER translog_head_forward BEFORE UPDATE ON translog_head
    FOR EACH ROW EXECUTE FUNCTION translog_head_forward();

REVOKE UPDATE, DELETE, TRUNCATE ON translog_leaves, translog_nodes, translog_key FROM PUBLIC;
REVOKE DELETE, TRUNCATE ON translog_head FROM PUBLIC;
