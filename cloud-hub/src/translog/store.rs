//! The log's tables (migration 0013): appending, the head, proofs and
//! entries read from the database. Every function takes a connection, so an
//! append can be part of the caller's transaction (a certificate and its log
//! entry commit together, or neither does).

use super::LogError;
use super::merkle::{self, Frontier, Hash, NodeId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::HashMap;

/// Largest entry the log takes. Entries are meant to be small records
/// (what was issued or revoked, and the digest of the document), not the
/// documents themselves.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Where an appended entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub leaf_hash: Hash,
}

/// The tree as stored now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub tree_size: u64,
    pub root_hash: Hash,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub leaf_hash: Hash,
    pub entry: Vec<u8>,
    pub appended_at: DateTime<Utc>,
}

/// idx, leaf_hash, entry, appended_at
type EntryRow = (i64, Vec<u8>, Vec<u8>, DateTime<Utc>);

fn hash_of(v: &[u8], what: &str) -> Result<Hash, LogError> {
    v.try_into()
        .map_err(|_| LogError::Corrupt(format!("{what} is {} bytes, not 32", v.len())))
}

fn to_i64(v: u64) -> Result<i64, LogError> {
    i64::try_from(v).map_err(|_| LogError::Corrupt(format!("{v} does not fit a bigint")))
}

/// Locks the head row (serialising appenders until the transaction ends)
/// and reads the tree's right edge.
async fn lock_frontier(conn: &mut PgConnection) -> Result<Frontier, LogError> {
    let (size, frontier): (i64, Vec<u8>) =
        sqlx::query_as("SELECT tree_size, frontier FROM translog_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    let size = u64::try_from(size).map_err(|_| LogError::Corrupt("negative tree size".into()))?;
    Frontier::from_bytes(size, &frontier)
        .ok_or_else(|| LogError::Corrupt(format!("the frontier does not fit tree size {size}")))
}

async fn write_head(conn: &mut PgConnection, f: &Frontier) -> Result<(), LogError> {
    sqlx::query(
        "UPDATE translog_head SET tree_size = $1, root_hash = $2, frontier = $3, updated_at = now()
          WHERE id = 1",
    )
    .bind(to_i64(f.size())?)
    .bind(f.root().as_slice())
    .bind(f.to_bytes())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends one entry; returns its index and leaf hash. Run it inside the
/// transaction that makes the thing logged: appends wait for each other
/// (the head row's lock) until that transaction ends, so keep it short.
pub async fn append(conn: &mut PgConnection, entry: &[u8]) -> Result<LogEntry, LogError> {
    if entry.len() > MAX_ENTRY_BYTES {
        return Err(LogError::TooLarge {
            len: entry.len(),
            max: MAX_ENTRY_BYTES,
        });
    }
    let mut f = lock_frontier(conn).await?;
    let index = f.size();
    let leaf = merkle::leaf_hash(entry);
    let done = f.push(leaf);
    sqlx::query("INSERT INTO translog_leaves (idx, leaf_hash, entry) VALUES ($1, $2, $3)")
        .bind(to_i64(index)?)
        .bind(leaf.as_slice())
        .bind(entry)
        .execute(&mut *conn)
        .await?;
    if !done.is_empty() {
        let levels: Vec<i16> = done.iter().map(|(n, _)| i16::from(n.level)).collect();
        let idx = done
            .iter()
            .map(|(n, _)| to_i64(n.index))
            .collect::<Result<Vec<_>, _>>()?;
        let hashes: Vec<Vec<u8>> = done.iter().map(|(_, h)| h.to_vec()).collect();
        sqlx::query(
            "INSERT INTO translog_nodes (level, idx, hash)
             SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
        )
        .bind(levels)
        .bind(idx)
        .bind(hashes)
        .execute(&mut *conn)
        .await?;
    }
    write_head(conn, &f).await?;
    metrics::counter!(crate::metric_names::HUB_TRANSLOG_APPENDS_TOTAL).increment(1);
    Ok(LogEntry {
        index,
        leaf_hash: leaf,
    })
}

/// `\\x<hex>` for a bytea column of COPY's text format.
fn copy_bytea(out: &mut String, b: &[u8]) {
    use std::fmt::Write;
    out.push_str("\\\\x");
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
}

async fn copy(conn: &mut PgConnection, sql: &str, data: String) -> Result<(), LogError> {
    let mut c = conn.copy_in_raw(sql).await?;
    if let Err(e) = c.send(data.into_bytes()).await {
        let _ = c.abort("send failed").await;
        return Err(e.into());
    }
    c.finish().await?;
    Ok(())
}

/// Appends many entries at once with COPY (bulk loads and the benchmark);
/// the same tree as appending them one by one. Returns the first new index.
pub async fn append_many(conn: &mut PgConnection, entries: &[&[u8]]) -> Result<u64, LogError> {
    if let Some(e) = entries.iter().find(|e| e.len() > MAX_ENTRY_BYTES) {
        return Err(LogError::TooLarge {
            len: e.len(),
            max: MAX_ENTRY_BYTES,
        });
    }
    let mut f = lock_frontier(conn).await?;
    let first = f.size();
    let mut leaves = String::with_capacity(entries.len() * 100);
    let mut nodes = String::with_capacity(entries.len() * 90);
    for e in entries {
        let index = f.size();
        let leaf = merkle::leaf_hash(e);
        leaves.push_str(&index.to_string());
        leaves.push('\t');
        copy_bytea(&mut leaves, &leaf);
        leaves.push('\t');
        copy_bytea(&mut leaves, e);
        leaves.push('\n');
        for (n, h) in f.push(leaf) {
            nodes.push_str(&format!("{}\t{}\t", n.level, n.index));
            copy_bytea(&mut nodes, &h);
            nodes.push('\n');
        }
    }
    copy(
        conn,
        "COPY translog_leaves (idx, leaf_hash, entry) FROM STDIN",
        leaves,
    )
    .await?;
    if !nodes.is_empty() {
        copy(
            conn,
            "COPY translog_nodes (level, idx, hash) FROM STDIN",
            nodes,
        )
        .await?;
    }
    write_head(conn, &f).await?;
    metrics::counter!(crate::metric_names::HUB_TRANSLOG_APPENDS_TOTAL)
        .increment(entries.len() as u64);
    Ok(first)
}

/// The tree's size and root now.
pub async fn head(conn: &mut PgConnection) -> Result<Head, LogError> {
    let (size, root): (i64, Vec<u8>) =
        sqlx::query_as("SELECT tree_size, root_hash FROM translog_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
    Ok(Head {
        tree_size: u64::try_from(size)
            .map_err(|_| LogError::Corrupt("negative tree size".into()))?,
        root_hash: hash_of(&root, "the root hash")?,
    })
}

/// The stored hashes of the given perfect subtrees, in one query (leaves
/// from `translog_leaves`, higher levels from `translog_nodes`).
async fn fetch_nodes(
    conn: &mut PgConnection,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, LogError> {
    let leaves = ids
        .iter()
        .filter(|n| n.level == 0)
        .map(|n| to_i64(n.index))
        .collect::<Result<Vec<_>, _>>()?;
    let upper: Vec<&NodeId> = ids.iter().filter(|n| n.level > 0).collect();
    let levels: Vec<i16> = upper.iter().map(|n| i16::from(n.level)).collect();
    let idx = upper
        .iter()
        .map(|n| to_i64(n.index))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT 0::smallint, idx, leaf_hash FROM translog_leaves WHERE idx = ANY($1)
         UNION ALL
         SELECT n.level, n.idx, n.hash FROM translog_nodes n
           JOIN unnest($2::smallint[], $3::bigint[]) AS w(level, idx)
             ON n.level = w.level AND n.idx = w.idx",
    )
    .bind(leaves)
    .bind(levels)
    .bind(idx)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for (level, index, h) in rows {
        let id = NodeId {
            level: u8::try_from(level).map_err(|_| LogError::Corrupt("node level".into()))?,
            index: u64::try_from(index).map_err(|_| LogError::Corrupt("node index".into()))?,
        };
        out.insert(id, hash_of(&h, "a stored node hash")?);
    }
    Ok(out)
}

async fn proof_of(conn: &mut PgConnection, ranges: &[(u64, u64)]) -> Result<Vec<Hash>, LogError> {
    let nodes = fetch_nodes(conn, &merkle::nodes_of(ranges)).await?;
    Ok(merkle::assemble(ranges, |id| nodes.get(&id).copied())?)
}

/// The root of the tree's first `size` leaves (size <= the tree's size).
pub async fn root_at(conn: &mut PgConnection, size: u64) -> Result<Hash, LogError> {
    Ok(proof_of(conn, &[(0, size)])
        .await?
        .first()
        .copied()
        .unwrap_or_else(merkle::empty_root))
}

/// The audit path of leaf `index` in the tree of `size` leaves. The caller
/// checks `size` against the head: a size beyond it finds hashes missing.
pub async fn inclusion_proof(
    conn: &mut PgConnection,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, LogError> {
    proof_of(conn, &merkle::inclusion_ranges(index, size)?).await
}

/// The consistency proof between the trees of `first` and `second` leaves.
pub async fn consistency_proof(
    conn: &mut PgConnection,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, LogError> {
    proof_of(conn, &merkle::consistency_ranges(first, second)?).await
}

/// The leaf hash at `index`.
pub async fn leaf_hash_at(conn: &mut PgConnection, index: u64) -> Result<Hash, LogError> {
    let h: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT leaf_hash FROM translog_leaves WHERE idx = $1")
            .bind(to_i64(index)?)
            .fetch_optional(&mut *conn)
            .await?;
    match h {
        Some(h) => hash_of(&h, "a leaf hash"),
        None => Err(merkle::ProofError::MissingNode(NodeId { level: 0, index }).into()),
    }
}

/// The index of the first leaf with this hash, if any.
pub async fn index_of(conn: &mut PgConnection, leaf_hash: &Hash) -> Result<Option<u64>, LogError> {
    let idx: Option<i64> =
        sqlx::query_scalar("SELECT min(idx) FROM translog_leaves WHERE leaf_hash = $1")
            .bind(leaf_hash.as_slice())
            .fetch_one(&mut *conn)
            .await?;
    Ok(idx.and_then(|i| u64::try_from(i).ok()))
}

/// Entries [start, end), stopping early once `max_bytes` of entries are
/// read (at least one entry is returned when the range is not empty).
pub async fn entries(
    conn: &mut PgConnection,
    start: u64,
    end: u64,
    max_bytes: usize,
) -> Result<Vec<StoredEntry>, LogError> {
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT idx, leaf_hash, entry, appended_at FROM translog_leaves
          WHERE idx >= $1 AND idx < $2 ORDER BY idx",
    )
    .bind(to_i64(start)?)
    .bind(to_i64(end)?)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    for (idx, leaf, entry, at) in rows {
        bytes += entry.len();
        if bytes > max_bytes && !out.is_empty() {
            break;
        }
        out.push(StoredEntry {
            index: u64::try_from(idx).map_err(|_| LogError::Corrupt("leaf index".into()))?,
            leaf_hash: hash_of(&leaf, "a leaf hash")?,
            entry,
            appended_at: at,
        });
    }
    Ok(out)
}
