//! The transparency log (issue #15, docs/transparency-log.md) against a real
//! PostgreSQL and the real hub binary: appends (one by one, in bulk, from
//! concurrent transactions, rolled back) give the tree an in-memory copy
//! gives; proofs and heads fetched over HTTP without credentials verify with
//! the hub's own verifiers and with an independent one (Python's hashlib for
//! the Merkle tree, OpenSSL for the Ed25519 signature); bounds are refused;
//! the tables refuse UPDATE and DELETE.

use anyhow::{Context, Result, ensure};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use cloud_hub::translog::merkle::{self, Hash, MemoryTree};
use cloud_hub::translog::{self, LogSigner, SignedTreeHead, store};
use e2e_tests::PgServer;
use serde_json::Value;
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

    // What a certificate carries, checked with nothing but the public key.
    let bundle = a.bundle(&mut conn, 7).await?;
    ensure!(bundle.signed_tree_head.tree_size == 61);
    let json = serde_json::to_string(&bundle)?;
    let back: translog::InclusionBundle = serde_json::from_str(&json)?;
    translog::verify_bundle(&back, &entry(7), a.public_key())?;
    ensure!(matches!(
        translog::verify_bundle(&back, &entry(8), a.public_key()),
        Err(translog::BundleError::WrongEntry)
    ));
    let mut forged = back.clone();
    forged.signed_tree_head.tree_size = 60;
    ensure!(translog::verify_bundle(&forged, &entry(7), a.public_key()).is_err());
    let mut forged = back.clone();
    forged.audit_path[0][0] ^= 1;
    ensure!(matches!(
        translog::verify_bundle(&forged, &entry(7), a.public_key()),
        Err(translog::BundleError::Proof(_))
    ));
    Ok(())
}

// ---------------------------------------------------------------------------
// Over HTTP, against the hub binary.

async fn get(url: &str) -> Result<(u16, Value)> {
    let r = e2e_tests::http::Client::bare().get(url).send().await?;
    let s = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        s,
        serde_json::from_str(&text).with_context(|| format!("{url}: {text}"))?,
    ))
}

fn hashes(v: &Value) -> Result<Vec<Hash>> {
    v.as_array()
        .context("an array of hashes")?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(translog::sth::hash_from_hex)
                .context("a hex hash")
        })
        .collect()
}

fn hash(v: &Value) -> Result<Hash> {
    v.as_str()
        .and_then(translog::sth::hash_from_hex)
        .context("a hex hash")
}

/// An RFC 9162 verifier nobody here wrote in Rust: Python's hashlib, the
/// algorithms of RFC 9162 2.1.3.2 and 2.1.4.2 as a reader of the RFC would
/// write them. Reads JSON cases on stdin, prints "ok" per case.
const PY_VERIFIER: &str = r#"
import hashlib, json, sys
def node(l, r): return hashlib.sha256(b"\x01" + l + r).digest()
def leaf(d): return hashlib.sha256(b"\x00" + d).digest()
def inclusion(lh, index, size, path, root):
    if index >= size: return False
    fn, sn, r = index, size - 1, lh
    for p in path:
        if sn == 0: return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1; sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1; sn >>= 1
    return sn == 0 and r == root
def consistency(m, n, r1, r2, path):
    if m == n: return not path and r1 == r2
    if not path or m == 0 or m > n: return False
    if m & (m - 1) == 0: path = [r1] + path
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1; sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0: return False
        if fn & 1 or fn == sn:
            fr = node(c, fr); sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1; sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1; sn >>= 1
    return fr == r1 and sr == r2 and sn == 0
h = bytes.fromhex
for c in json.load(sys.stdin):
    if c["kind"] == "inclusion":
        ok = leaf(h(c["entry"])) == h(c["leaf_hash"]) and inclusion(
            h(c["leaf_hash"]), c["index"], c["size"], [h(x) for x in c["path"]], h(c["root"]))
    else:
        ok = consistency(c["first"], c["second"], h(c["first_root"]), h(c["second_root"]),
                         [h(x) for x in c["path"]])
    print("ok" if ok else "FAIL", c["kind"])
"#;

fn python_verifies(cases: &Value) -> Result<Vec<String>> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PY_VERIFIER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("python3")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(cases.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "python3 failed");
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(String::from)
        .collect())
}

/// OpenSSL checks a head's Ed25519 signature over the documented 50 bytes.
fn openssl_verifies(dir: &std::path::Path, pem: &str, sth: &SignedTreeHead) -> Result<bool> {
    let key = dir.join("log.pem");
    let msg = dir.join("sth.bin");
    let sig = dir.join("sth.sig");
    std::fs::write(&key, pem)?;
    std::fs::write(&msg, sth.signed_bytes())?;
    std::fs::write(&sig, &sth.signature)?;
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&key)
        .arg("-rawin")
        .arg("-in")
        .arg(&msg)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .context("openssl")?;
    Ok(out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_fetches_and_verifies_heads_proofs_and_entries_over_http() -> Result<()> {
    let mut stack = e2e_tests::Stack::new().await?;
    stack.start_hub().await?;
    let base = format!("{}/api/v1/log", stack.hub_url());
    let pool = sqlx::PgPool::connect(&stack.pg_url()?).await?;

    // The empty log has a signed head too.
    let (s, head0) = get(&format!("{base}/head")).await?;
    ensure!(s == 200 && head0["tree_size"] == 0, "{s} {head0}");

    // Entries appended on the hub's database, as the certificate code does.
    let entries: Vec<Vec<u8>> = (0..13).map(entry).collect();
    for e in &entries[..5] {
        translog::append(&mut *pool.acquire().await?, e).await?;
    }
    let (_, head5) = get(&format!("{base}/head")).await?;
    for e in &entries[5..] {
        translog::append(&mut *pool.acquire().await?, e).await?;
    }

    let (s, key) = get(&format!("{base}/key")).await?;
    ensure!(s == 200, "{key}");
    let pem = key["public_key_pem"].as_str().context("pem")?;
    let public = translog::sth::public_key_from_pem(pem)?;
    ensure!(key["jwk"]["kty"] == "OKP" && key["jwk"]["crv"] == "Ed25519");
    ensure!(key["log_id"] == translog::sth::to_hex(&translog::sth::log_id(&public)));

    let (s, head) = get(&format!("{base}/head")).await?;
    ensure!(s == 200, "{head}");
    let sth: SignedTreeHead = serde_json::from_value(head.clone())?;
    let sth5: SignedTreeHead = serde_json::from_value(head5.clone())?;
    ensure!(sth.tree_size == 13 && sth5.tree_size == 5);
    translog::verify_sth(&sth, &public)?;
    translog::verify_sth(&sth5, &public)?;
    ensure!(
        openssl_verifies(stack.dir.path(), pem, &sth)?,
        "openssl refused the head"
    );
    let mut forged = sth.clone();
    forged.tree_size = 12;
    ensure!(translog::verify_sth(&forged, &public).is_err());
    ensure!(
        !openssl_verifies(stack.dir.path(), pem, &forged)?,
        "openssl took a forged head"
    );

    // Entries, proofs of every leaf, by index and by leaf hash.
    let (s, page) = get(&format!("{base}/entries?start=0&end=13")).await?;
    ensure!(s == 200, "{page}");
    let listed = page["entries"].as_array().context("entries")?;
    ensure!(listed.len() == 13);
    let mut cases = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        use base64::Engine;
        let got = base64::engine::general_purpose::STANDARD
            .decode(listed[i]["entry"].as_str().context("entry")?)?;
        ensure!(&got == e && listed[i]["index"] == i, "entry {i}");
        let (s, p) = get(&format!("{base}/proof/inclusion?index={i}&tree_size=13")).await?;
        ensure!(s == 200, "{p}");
        let path = hashes(&p["audit_path"])?;
        let leaf = hash(&p["leaf_hash"])?;
        translog::verify_inclusion(&leaf, i as u64, 13, &path, &sth.root_hash)?;
        let by_hash = format!(
            "{base}/proof/inclusion?leaf_hash={}&tree_size=13",
            translog::sth::to_hex(&leaf)
        );
        let (s, p2) = get(&by_hash).await?;
        ensure!(s == 200 && p2["leaf_index"] == i && p2["audit_path"] == p["audit_path"]);
        cases.push(serde_json::json!({
            "kind": "inclusion", "entry": translog::sth::to_hex(e), "leaf_hash": p["leaf_hash"],
            "index": i, "size": 13, "path": p["audit_path"], "root": head["root_hash"],
        }));
    }
    // Without tree_size: against the latest head, which comes along.
    let (s, p) = get(&format!("{base}/proof/inclusion?index=3")).await?;
    ensure!(s == 200 && p["tree_size"] == 13 && p["signed_tree_head"]["tree_size"] == 13);

    let (s, c) = get(&format!("{base}/proof/consistency?first=5&second=13")).await?;
    ensure!(s == 200, "{c}");
    let cpath = hashes(&c["proof"])?;
    translog::verify_consistency(5, 13, &sth5.root_hash, &sth.root_hash, &cpath)?;
    cases.push(serde_json::json!({
        "kind": "consistency", "first": 5, "second": 13, "path": c["proof"],
        "first_root": head5["root_hash"], "second_root": head["root_hash"],
    }));
    // A forked history: the old head's root changed.
    let mut forked = cases.last().cloned().context("case")?;
    forked["first_root"] = Value::String(translog::sth::to_hex(&[0u8; 32]));
    cases.push(forked);
    let verdicts = python_verifies(&Value::Array(cases))?;
    ensure!(verdicts.len() == 15, "{verdicts:?}");
    ensure!(
        verdicts[..14].iter().all(|v| v.starts_with("ok")) && verdicts[14].starts_with("FAIL"),
        "{verdicts:?}"
    );

    // Bounds: 400 with a message, never 5xx.
    for q in [
        "proof/inclusion?index=13&tree_size=13",
        "proof/inclusion?index=0&tree_size=14",
        "proof/inclusion?index=-1&tree_size=3",
        "proof/inclusion?tree_size=3",
        "proof/inclusion?leaf_hash=zz",
        "proof/consistency?first=6&second=5",
        "proof/consistency?first=1&second=99",
        "entries?start=0&end=100000",
        "entries?start=5&end=2",
        "entries?start=x&end=2",
    ] {
        let (s, v) = get(&format!("{base}/{q}")).await?;
        ensure!(s == 400 && v["error"] == "bad_request", "{q}: {s} {v}");
    }
    let (s, _) = get(&format!(
        "{base}/proof/inclusion?leaf_hash={}",
        translog::sth::to_hex(&[7u8; 32])
    ))
    .await?;
    ensure!(s == 404, "unknown leaf: {s}");
    // Past the end of the log, a range is cut at the tree size.
    let (s, v) = get(&format!("{base}/entries?start=10&end=20")).await?;
    ensure!(
        s == 200 && v["entries"].as_array().map(Vec::len) == Some(3),
        "{v}"
    );
    Ok(())
}
