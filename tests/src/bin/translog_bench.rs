//! The transparency log at 1,000,000 entries (BENCHMARKS.md, issue #15;
//! goal: an inclusion proof for 1M entries in <= 5 ms):
//! - fills a log in a throwaway PostgreSQL with N entries of ~150 bytes by
//!   bulk COPY (`translog::append_many`, 50,000 per transaction);
//! - single appends at that size, each in its own transaction (what issuing
//!   one certificate adds);
//! - inclusion and consistency proofs from the database at random indexes
//!   and sizes (p50/p95; one pooled connection, the queries the API runs),
//!   and the same through the REST API over loopback HTTP;
//! - proof sizes; pure verification per proof; signing a tree head.
//!
//! Run: `cargo build --release -p e2e-tests --bin translog_bench &&
//! target/release/translog_bench [N]` (N defaults to 1,000,000).
use anyhow::{Context, Result, ensure};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use cloud_hub::translog::{self, merkle, store};
use e2e_tests::PgServer;
use e2e_tests::bench::{pct, serve};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// xorshift64*: reproducible random indexes without a dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn entry(i: u64) -> Vec<u8> {
    format!(
        "{{\"kind\":\"issued\",\"certificate\":\"QI-2026-{i:09}\",\"document_sha256\":\"{:064x}\",\"at\":\"2026-12-01T00:00:00Z\"}}",
        u128::from(i) * 0x9e37_79b9_7f4a_7c15
    )
    .into_bytes()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, v: &mut [f64]) {
    let p50 = pct(v, 0.5);
    let p95 = pct(v, 0.95);
    let max = pct(v, 1.0);
    println!(
        "{name}: p50 {p50:.3} ms, p95 {p95:.3} ms, max {max:.3} ms ({} samples)",
        v.len()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let pg = PgServer::start().await?;
    let st = Store::open(&StoreOptions {
        url: pg.url(),
        max_connections: 8,
        connect_timeout: Duration::from_secs(30),
        tier: TierChoice::None,
        ingest: IngestMethod::Copy,
        retention: Retention::default(),
    })
    .await?;
    let pool = st.pool().clone();

    // Fill.
    let mut mem = merkle::MemoryTree::new();
    let t0 = Instant::now();
    let mut bytes = 0usize;
    let mut i = 0u64;
    while i < n {
        let batch: Vec<Vec<u8>> = (i..n.min(i + 50_000)).map(entry).collect();
        for e in &batch {
            bytes += e.len();
            mem.push(merkle::leaf_hash(e));
        }
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let mut tx = pool.begin().await?;
        translog::append_many(&mut tx, &refs).await?;
        tx.commit().await?;
        i += batch.len() as u64;
    }
    let fill = t0.elapsed();
    sqlx::query("ANALYZE").execute(&pool).await?;
    let size: i64 =
        sqlx::query_scalar("SELECT pg_total_relation_size('translog_leaves') + pg_total_relation_size('translog_nodes')")
            .fetch_one(&pool)
            .await?;
    println!(
        "fill: {n} entries ({:.0} bytes each on average) in {:.1} s = {:.0} entries/s; tables + indexes {:.0} MiB",
        bytes as f64 / n as f64,
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64(),
        size as f64 / 1048576.0
    );
    let mut conn = pool.acquire().await?;
    let head = store::head(&mut conn).await?;
    ensure!(
        head.tree_size == n && Some(head.root_hash) == mem.root(n),
        "head"
    );

    // Single appends at this size, each its own transaction.
    let mut append_ms = Vec::new();
    for k in 0..500u64 {
        let e = entry(n + k);
        let t = Instant::now();
        let mut tx = pool.begin().await?;
        let got = translog::append(&mut tx, &e).await?;
        tx.commit().await?;
        append_ms.push(ms(t.elapsed()));
        mem.push(got.leaf_hash);
    }
    report(
        "append one entry (own transaction, commit included)",
        &mut append_ms,
    );
    let n = mem.size();

    // Inclusion proofs from the database: head + proof query, as the API does.
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut incl = Vec::new();
    let mut hashes = 0usize;
    let mut proofs = Vec::new();
    for _ in 0..2000 {
        let idx = rng.below(n);
        let t = Instant::now();
        let h = store::head(&mut conn).await?;
        let p = store::inclusion_proof(&mut conn, idx, h.tree_size).await?;
        incl.push(ms(t.elapsed()));
        hashes = hashes.max(p.len());
        proofs.push((idx, p));
    }
    report(
        &format!("inclusion proof at {n} entries, from the database"),
        &mut incl,
    );
    println!(
        "inclusion proof size: at most {hashes} hashes = {} bytes",
        hashes * 32
    );
    for (idx, p) in &proofs {
        ensure!(
            Some(p.clone()) == mem.inclusion_proof(*idx, n).ok(),
            "proof of {idx}"
        );
    }

    // Consistency proofs from random older sizes to the current one.
    let mut cons = Vec::new();
    let mut chashes = 0usize;
    for _ in 0..1000 {
        let first = 1 + rng.below(n - 1);
        let t = Instant::now();
        let h = store::head(&mut conn).await?;
        let p = store::consistency_proof(&mut conn, first, h.tree_size).await?;
        cons.push(ms(t.elapsed()));
        chashes = chashes.max(p.len());
    }
    report(
        "consistency proof (random first, current second), from the database",
        &mut cons,
    );
    println!(
        "consistency proof size: at most {chashes} hashes = {} bytes",
        chashes * 32
    );

    // Through the REST API (router in this process, loopback HTTP).
    let identity = Arc::new(
        cloud_hub::identity::Identity::open(
            pool.clone(),
            &cloud_hub::config::AuthConfig::default(),
        )
        .await?,
    );
    let state = e2e_tests::bench::api_state(&st, identity).await?;
    let signer = state.translog.clone();
    let base = serve(cloud_hub::api::router(state)).await?;
    let client = reqwest::Client::new();
    let mut http = Vec::new();
    let mut body_len = 0usize;
    for _ in 0..1000 {
        let idx = rng.below(n);
        let url = format!("{base}/api/v1/log/proof/inclusion?index={idx}&tree_size={n}");
        let t = Instant::now();
        let r = client.get(&url).send().await?;
        ensure!(r.status() == 200, "{url}: {}", r.status());
        let b = r.bytes().await?;
        http.push(ms(t.elapsed()));
        body_len = body_len.max(b.len());
    }
    report(
        "inclusion proof over HTTP (GET /api/v1/log/proof/inclusion)",
        &mut http,
    );
    println!("inclusion proof JSON answer: at most {body_len} bytes");

    // Signing a head; pure verification.
    let t = Instant::now();
    let k = 2000u64;
    for i in 0..k {
        std::hint::black_box(signer.sign(n, i, head.root_hash));
    }
    println!(
        "sign a tree head: {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / k as f64
    );
    let sth = signer.latest(&mut conn).await?;
    let root = sth.root_hash;
    let t = Instant::now();
    let mut verified = 0u64;
    for _ in 0..50 {
        for (idx, p) in &proofs {
            let leaf = mem
                .node(merkle::NodeId {
                    level: 0,
                    index: *idx,
                })
                .context("leaf")?;
            translog::verify_inclusion(&leaf, *idx, n, p, &root)?;
            verified += 1;
        }
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / verified as f64;
    println!(
        "verify an inclusion proof (pure, one core): {per:.2} us = {:.0}/s",
        1e6 / per
    );
    let t = Instant::now();
    for _ in 0..k {
        translog::verify_sth(&sth, signer.public_key())?;
    }
    println!(
        "verify a signed tree head: {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / k as f64
    );
    Ok(())
}
