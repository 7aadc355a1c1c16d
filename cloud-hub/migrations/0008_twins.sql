-- Digital twins: the registry of assets central operations think in (sites,
-- areas, benches, gateways, instruments, samples), their models, the graph
-- between them and the latest value of every series (reported state).
-- Rules that must hold for every writer live here as constraints, so a
-- change made by the API, by discovery at ingest or by hand cannot break them.

CREATE TABLE twin_types (
    type_id      text PRIMARY KEY,
    kind         text NOT NULL
                 CHECK (kind IN ('site', 'area', 'bench', 'gateway', 'instrument', 'sample')),
    name         text NOT NULL DEFAULT '',
    -- Expected attributes: {"<name>": {"type": "number"|"string"|"boolean", "required": bool, "unit": "..."}}
    attributes   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    -- Metrics an instrument of this type reports, from its firmware profile:
    -- [{"name", "unit", "description", "writable", "min", "max"}]
    metrics      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(metrics) = 'array'),
    manufacturer text NOT NULL DEFAULT '',
    device_type  text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    -- 'profile': made from a firmware profile a gateway reported (kept in step
    -- with it); 'user': written through the API.
    source       text NOT NULL DEFAULT 'user' CHECK (source IN ('user', 'profile')),
    version      bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE twins (
    twin_id       text PRIMARY KEY,
    kind          text NOT NULL
                  CHECK (kind IN ('site', 'area', 'bench', 'gateway', 'instrument', 'sample')),
    type_id       text REFERENCES twin_types (type_id),
    name          text NOT NULL DEFAULT '',
    -- Samples (units under test) are known by their serial number.
    serial_number text,
    attributes    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    metadata      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    latitude      double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude     double precision CHECK (longitude BETWEEN -180 AND 180),
    -- What binds a gateway or instrument twin to the data that arrives at ingest.
    gateway_id    text,
    device_id     text,
    -- Created by discovery at ingest and not yet placed by an engineer.
    discovered    boolean NOT NULL DEFAULT false,
    -- Where the twin sits now: the ids from its root down to itself, each
    -- followed by U+001F (ids never hold control characters). Kept by
    -- `twin_repath` from the current relations; a subtree is one index
    -- range (`path >= p AND path < p without its last U+001F || ' '`).
    path          text COLLATE "C" NOT NULL DEFAULT '',
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: the row stays for history and for relations that ended.
    deleted_at    timestamptz,
    CHECK ((latitude IS NULL) = (longitude IS NULL)),
    CHECK (kind <> 'sample' OR serial_number IS NOT NULL),
    CHECK (kind <> 'instrument' OR device_id IS NULL OR gateway_id IS NOT NULL)
);
CREATE UNIQUE INDEX twins_sample_serial ON twins (serial_number)
    WHERE kind = 'sample' AND deleted_at IS NULL;
CREATE UNIQUE INDEX twins_gateway_binding ON twins (gateway_id)
    WHERE kind = 'gateway' AND deleted_at IS NULL;
CREATE UNIQUE INDEX twins_instrument_binding ON twins (gateway_id, device_id)
    WHERE kind = 'instrument' AND deleted_at IS NULL;
CREATE INDEX twins_kind ON twins (kind, twin_id) WHERE deleted_at IS NULL;
CREATE INDEX twins_type ON twins (type_id, twin_id) WHERE deleted_at IS NULL;
-- Not partial: a move rewrites the paths of deleted twins under it too.
CREATE INDEX twins_path ON twins (path);
-- One kind within a subtree (the instruments of a site): a range per kind.
CREATE INDEX twins_kind_path ON twins (kind, path) WHERE deleted_at IS NULL;
CREATE INDEX twins_location ON twins (latitude, longitude)
    WHERE latitude IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX twins_attributes ON twins USING gin (attributes jsonb_path_ops);
-- Text search (`q=`) over id, name and serial number: a trigram index where
-- pg_trgm is installed (PostgreSQL's contrib), a scan where it is not.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX twins_text ON twins
        USING gin ((twin_id || ' ' || name || ' ' || coalesce(serial_number, '')) gin_trgm_ops);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available: twin text search scans';
END $$;

-- The graph. A relation is never deleted: it ends (valid_to), so "as of a
-- time" queries see the past. Direction: contains parent > child;
-- connected_to instrument > gateway; measures instrument > sample;
-- calibrated_by instrument > certificate (target_ref, not a twin).
CREATE TABLE twin_relations (
    relation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('contains', 'connected_to', 'measures', 'calibrated_by')),
    source_id   text NOT NULL REFERENCES twins (twin_id),
    target_id   text REFERENCES twins (twin_id),
    target_ref  text,
    valid_from  timestamptz NOT NULL DEFAULT now(),
    valid_to    timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    CHECK ((kind = 'calibrated_by') = (target_id IS NULL)),
    CHECK ((kind = 'calibrated_by') = (target_ref IS NOT NULL)),
    CHECK (source_id <> target_id)
);
-- The contains graph is a forest: a twin sits in at most one parent at a time.
CREATE UNIQUE INDEX twin_relations_one_parent ON twin_relations (target_id)
    WHERE kind = 'contains' AND valid_to IS NULL;
-- An instrument is connected to one gateway at a time.
CREATE UNIQUE INDEX twin_relations_one_gateway ON twin_relations (source_id)
    WHERE kind = 'connected_to' AND valid_to IS NULL;
CREATE INDEX twin_relations_source ON twin_relations (source_id, kind, valid_from);
CREATE INDEX twin_relations_target ON twin_relations (target_id, kind, valid_from);

-- Reported state: the latest reading of every series, kept current in each
-- ingest transaction, so a twin's live state never scans raw data.
CREATE TABLE series_latest (
    series_id integer PRIMARY KEY REFERENCES series (series_id),
    ts        timestamptz NOT NULL,
    value     double precision NOT NULL,
    quality   smallint NOT NULL,
    seq       bigint NOT NULL
);
INSERT INTO series_latest (series_id, ts, value, quality, seq)
SELECT DISTINCT ON (series_id) series_id, ts, value, quality, seq
FROM samples ORDER BY series_id, ts DESC, seq DESC;

-- The current parent of a twin: its container, or for an instrument placed
-- nowhere, the gateway it is connected to.
CREATE FUNCTION twin_parent(child text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT source_id FROM twin_relations
          WHERE target_id = child AND kind = 'contains' AND valid_to IS NULL LIMIT 1),
        (SELECT target_id FROM twin_relations
          WHERE source_id = child AND kind = 'connected_to' AND valid_to IS NULL LIMIT 1))
$$;

-- Recomputes a twin's path from its parent's and moves its whole subtree
-- with it (every path under the old one shares its prefix).
CREATE FUNCTION twin_repath(start text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    old_path text;
    new_path text;
    parent   text;
BEGIN
    SELECT path INTO old_path FROM twins WHERE twin_id = start;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    parent := twin_parent(start);
    new_path := coalesce((SELECT path FROM twins WHERE twin_id = parent), '') || start || chr(31);
    IF new_path = old_path THEN
        RETURN;
    END IF;
    IF old_path = '' THEN
        UPDATE twins SET path = new_path WHERE twin_id = start;
    ELSE
        UPDATE twins SET path = new_path || substr(path, length(old_path) + 1)
         WHERE path >= old_path COLLATE "C" AND path < (left(old_path, -1) || ' ') COLLATE "C";
    END IF;
END $$;

CREATE FUNCTION twins_path_of_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.path := NEW.twin_id || chr(31);
    RETURN NEW;
END $$;
CREATE TRIGGER twins_path_new BEFORE INSERT ON twins
    FOR EACH ROW EXECUTE FUNCTION twins_path_of_new();

CREATE FUNCTION twins_path_on_relation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'contains' THEN
        PERFORM twin_repath(NEW.target_id);
    ELSIF NEW.kind = 'connected_to' THEN
        PERFORM twin_repath(NEW.source_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER twin_relations_path AFTER INSERT OR UPDATE ON twin_relations
    FOR EACH ROW EXECUTE FUNCTION twins_path_on_relation();

-- Discovery: a gateway or device first seen at ingest becomes a twin
-- (discovered = true) connected to its gateway, unless a twin is already
-- bound to it. One function for each, used by the triggers and by the hub
-- when a gateway reports its devices' profiles.
CREATE FUNCTION twin_discover_gateway(gw text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    id text;
BEGIN
    SELECT twin_id INTO id FROM twins
     WHERE kind = 'gateway' AND gateway_id = gw AND deleted_at IS NULL;
    IF id IS NULL THEN
        id := 'gateway:' || gw;
        INSERT INTO twins (twin_id, kind, name, gateway_id, discovered)
        VALUES (id, 'gateway', gw, gw, true)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN id;
END $$;

CREATE FUNCTION twin_discover_instrument(gw text, dev text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    id text;
    gw_twin text;
BEGIN
    SELECT twin_id INTO id FROM twins
     WHERE kind = 'instrument' AND gateway_id = gw AND device_id = dev AND deleted_at IS NULL;
    IF id IS NOT NULL THEN
        RETURN id;
    END IF;
    gw_twin := twin_discover_gateway(gw);
    id := 'instrument:' || gw || ':' || dev;
    INSERT INTO twins (twin_id, kind, name, gateway_id, device_id, discovered)
    VALUES (id, 'instrument', dev, gw, dev, true)
    ON CONFLICT DO NOTHING;
    IF FOUND AND gw_twin IS NOT NULL THEN
        INSERT INTO twin_relations (kind, source_id, target_id)
        VALUES ('connected_to', id, gw_twin)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN id;
END $$;

CREATE FUNCTION twins_on_new_gateway() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM twin_discover_gateway(NEW.gateway_id);
    RETURN NULL;
END $$;
CREATE TRIGGER gateways_discover AFTER INSERT ON gateways
    FOR EACH ROW EXECUTE FUNCTION twins_on_new_gateway();

CREATE FUNCTION twins_on_new_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM twin_discover_instrument(NEW.gateway_id, NEW.device_id);
    RETURN NULL;
END $$;
CREATE TRIGGER devices_discover AFTER INSERT ON devices
    FOR EACH ROW EXECUTE FUNCTION twins_on_new_device();

-- What was already there becomes twins too.
SELECT twin_discover_gateway(gateway_id) FROM gateways;
SELECT twin_discover_instrument(gateway_id, device_id) FROM devices;

-- Sites move from gateway_sites into the graph: a site twin contains the
-- gateway twin. Principals scoped to sites now follow contains relations.
INSERT INTO twins (twin_id, kind, name)
SELECT DISTINCT site_id, 'site', site_id FROM gateway_sites
ON CONFLICT DO NOTHING;
SELECT twin_discover_gateway(gateway_id) FROM gateway_sites;
INSERT INTO twin_relations (kind, source_id, target_id)
SELECT 'contains', s.site_id, t.twin_id
FROM gateway_sites s JOIN twins t ON t.kind = 'gateway' AND t.gateway_id = s.gateway_id
ON CONFLICT DO NOTHING;

DROP TABLE gateway_sites;

-- The site a twin lies in: the nearest twin of kind site on its path
-- (its containers; for an instrument placed nowhere, its gateway's), itself
-- when it is a site. Scopes principals to sites; one definition for every
-- query.
CREATE FUNCTION twin_site(start text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT t.twin_id
    FROM twins me,
         unnest(string_to_array(rtrim(me.path, chr(31)), chr(31))) WITH ORDINALITY AS p(id, n)
         JOIN twins t ON t.twin_id = p.id
    WHERE me.twin_id = start AND t.kind = 'site' AND t.deleted_at IS NULL
    ORDER BY p.n DESC LIMIT 1
$$;

-- A twin's subtree along contains relations valid at `at` (the root
-- included, depth 0), plus, for every gateway in it, the instruments
-- connected to that gateway and not placed elsewhere. Used by subtree
-- queries, live-stream filters and exports alike.
CREATE FUNCTION twin_descendants(root text, at timestamptz)
RETURNS TABLE (twin_id text, depth integer) LANGUAGE sql STABLE AS $$
    WITH RECURSIVE down(id, depth) AS (
        SELECT root, 0
        UNION
        SELECT r.target_id, down.depth + 1
        FROM down JOIN twin_relations r
          ON r.source_id = down.id AND r.kind = 'contains'
         AND r.valid_from <= at AND (r.valid_to IS NULL OR r.valid_to > at)
        WHERE down.depth < 64
    ), tree AS (
        SELECT id, min(depth) AS depth FROM down GROUP BY id
    )
    SELECT id, depth FROM tree
    UNION ALL
    SELECT r.source_id, tree.depth + 1
    FROM tree JOIN twin_relations r
      ON r.target_id = tree.id AND r.kind = 'connected_to'
     AND r.valid_from <= at AND (r.valid_to IS NULL OR r.valid_to > at)
    WHERE NOT EXISTS (SELECT 1 FROM tree t2 WHERE t2.id = r.source_id)
      AND NOT EXISTS (
          SELECT 1 FROM twin_relations p
          WHERE p.target_id = r.source_id AND p.kind = 'contains'
            AND p.valid_from <= at AND (p.valid_to IS NULL OR p.valid_to > at))
$$;
