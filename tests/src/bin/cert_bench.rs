//! Certificates (BENCHMARKS.md, issue #15):
//!
//! - `verify [N]`: offline verifications per second on one thread
//!   (`cloud_hub::certificates::verify`, exactly what `cloud-hub certificate
//!   verify` runs): a certificate of 4 runs with 3 criteria each, both
//!   signatures, the chain, JSON = XML, expiry, and a signed revocation list
//!   of 1,000 entries. Goal >= 1,000/s on one core: pin it with `taskset -c 0`.
//! - `issue [N]`: N certificates issued one after another over HTTP by a
//!   release hub with PostgreSQL (runs reported over gRPC first); latency
//!   p50/p95/max of `POST /api/v1/certificates` (read the runs, render, sign
//!   twice, store, log append, audit). Goal p95 <= 100 ms.
//!
//! Run: `cargo build --release -p cloud-hub && cargo run --release -p e2e-tests
//! --bin cert_bench -- verify 20000` and `... -- issue 200`.
use anyhow::{Context, Result, bail};
use cloud_hub::certificates::verify::{
    BUNDLE_FORMAT, Bundle, Options, REVOCATIONS_FORMAT, RevocationList, Revoked, sign_revocations,
    verify_bundle,
};
use cloud_hub::certificates::{dsig, jws};
use e2e_tests::bench::{pct, release_bin};
use e2e_tests::certificate_fixture::certificate;
use e2e_tests::certs::IssuingPki;
use e2e_tests::grpc::{Client, exchange, hello};
use e2e_tests::runs::{Run, stc};
use e2e_tests::{HubLaunch, PgServer, free_port};
use serde_json::{Value, json};
use std::time::Instant;

fn verify(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = IssuingPki::new(dir.path(), "bench")?;
    let key = pki.issuing_key()?;
    let trusted = cloud_hub::certificates::pki::certs_from_pem(&std::fs::read(&pki.ca)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = certificate("QI-CERT-2026-000001", 4);
    let json = String::from_utf8(c.to_json())?;
    let bundle = serde_json::to_vec(&Bundle {
        format: BUNDLE_FORMAT.into(),
        id: c.id.clone(),
        xml: dsig::sign(&c.to_xml(), &key)?,
        jws: jws::sign_detached(json.as_bytes(), &key)?,
        json,
        log: None,
    })?;
    let list = sign_revocations(
        &RevocationList {
            format: REVOCATIONS_FORMAT.into(),
            issuer_fingerprint: key.fingerprint().into(),
            issued_at: "2026-07-01T00:00:00Z".into(),
            entries: (0..1000)
                .map(|i| Revoked {
                    id: format!("QI-CERT-2026-{:06}", 100_000 + i),
                    state: "revoked".into(),
                    at: "2026-06-15T00:00:00Z".into(),
                    reason: "wrong module type".into(),
                    superseded_by: None,
                })
                .collect(),
        },
        &key,
    )?;
    let now = chrono::DateTime::parse_from_rfc3339("2026-08-01T00:00:00Z")?.to_utc();
    for (what, revocations) in [
        ("without a revocation list", None),
        ("with a signed list of 1,000", Some(&list)),
    ] {
        let o = Options {
            trusted: &trusted,
            revocations,
            log_head: None,
            now,
        };
        verify_bundle(&bundle, &o).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        for _ in 0..n {
            if verify_bundle(&bundle, &o).is_err() {
                bail!("a verification failed");
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "verify {what}: {n} in {s:.2} s = {:.0}/s ({:.0} us each); bundle {} bytes",
            n as f64 / s,
            s * 1e6 / n as f64,
            bundle.len()
        );
    }
    Ok(())
}

async fn post(url: &str, token: &str, body: &Value) -> Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

async fn issue(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = IssuingPki::new(dir.path(), "bench")?;
    let pg = PgServer::start().await?;
    let (grpc, http) = (free_port(), free_port());
    let after = pki.hub_table("lab_name = \"PV Lab\"\nlab_country = \"DE\"");
    let _hub = HubLaunch {
        binary: release_bin("cloud-hub")?,
        pg_url: &pg.url(),
        grpc_port: grpc,
        http_port: http,
        database: "",
        grpc: "",
        after: &after,
        args: &[],
        dir: dir.path(),
        log: &dir.path().join("hub.log"),
    }
    .start()
    .await?;
    let url = format!("http://127.0.0.1:{http}");
    let token = e2e_tests::http::headers_for(&url)
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.trim_start_matches("Bearer ").to_string())
        .context("admin key")?;
    let (s, sr) = post(
        &format!("{url}/api/v1/service-requests"),
        &token,
        &json!({"customer": "Solar GmbH", "module_type": "SG-400M", "protocols": ["stc-power"]}),
    )
    .await?;
    anyhow::ensure!(s == 201, "{sr}");
    let sr = sr["request_id"].as_str().context("id")?.to_string();
    let client = Client::plain(&format!("http://127.0.0.1:{grpc}"));
    let mut msgs = vec![hello("gw-bench")];
    let mut seq = 1;
    for i in 0..n {
        let serial = format!("MOD-{i:05}");
        let (s, v) = post(
            &format!("{url}/api/v1/service-requests/{sr}/samples"),
            &token,
            &json!({"serial_number": serial}),
        )
        .await?;
        anyhow::ensure!(s == 201, "{v}");
        let mut r = Run::new(
            &format!("0b7c2a4e-9f1d-4c3b-8a2e-{i:012x}"),
            seq,
            1_780_000_000_000_000,
        );
        stc(&mut r, &format!("sample:{serial}"), 395.0, "olga")?;
        seq = r.seq;
        msgs.push(r.all());
    }
    let (_, err) = exchange(&client, msgs).await?;
    anyhow::ensure!(err.is_none(), "{err:?}");
    // Every run evaluated (in the hub's background) before timing.
    let pool = sqlx::PgPool::connect(&pg.url()).await?;
    e2e_tests::wait_for(
        "runs evaluated",
        std::time::Duration::from_secs(120),
        || async {
            let k: i64 = sqlx::query_scalar("SELECT count(DISTINCT run_id) FROM run_evaluations")
                .fetch_one(&pool)
                .await?;
            Ok((k as usize >= n).then_some(()))
        },
    )
    .await?;
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let (s, v) = post(
            &format!("{url}/api/v1/certificates"),
            &token,
            &json!({"sample": format!("sample:MOD-{i:05}")}),
        )
        .await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(s == 201, "{v}");
    }
    let max = ms.iter().copied().fold(0.0, f64::max);
    println!(
        "issue (HTTP, release hub, PostgreSQL, one after another): n={n} p50 {:.1} ms, p95 {:.1} ms, max {max:.1} ms",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.95),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "verify".into());
    let n: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    match what.as_str() {
        "verify" => verify(n.unwrap_or(20_000)),
        "issue" => issue(n.unwrap_or(200)).await,
        other => bail!("unknown benchmark {other:?}: verify or issue"),
    }
}
