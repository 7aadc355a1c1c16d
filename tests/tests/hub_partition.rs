//! A real network partition of the leader hub (issue #18): hub A runs in a
//! network namespace of its own, joined to the host by a veth pair, and is
//! cut off by setting the host end down (packets dropped both ways, no RST:
//! a pulled cable; see `e2e_tests::netns`). Hub B runs on the host; both
//! use one PostgreSQL, which listens on the veth's host address for A.
//!
//! What is checked (module doc of `cloud-hub/src/leader`):
//! (a) A steps down by itself ("leadership lost" in its log) once its lock
//!     connection goes silent;
//! (b) B leads only after that (the log timestamps of A's "leadership lost"
//!     and B's "leadership gained" are compared: one clock, one machine),
//!     once the server has ended A's sessions (their server-side keepalives);
//! (c) a singleton job runs on B afterwards (the rollup watermark moves);
//! (d) after the heal A comes back by itself as a follower, ingests again
//!     (its pool recovered) and B still leads;
//! (e) an agent streaming through B the whole time and one streaming through
//!     A (before the cut and after the heal) each have every acknowledged
//!     reading at the hub exactly once.
//!
//! Deadlines are generous; the gaps (cut -> A steps down, cut -> B leads)
//! are printed (`--nocapture`), figures for BENCHMARKS.md, not asserted.
//! Skips with the reason when network namespaces cannot be made (not root).
// qi-test: tier-independent (leadership across a network partition; rollups and ingest per tier: hub_failover, rollup_watchdog): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::multi_hub::Replica;
use e2e_tests::netns::{self, Netns};
use e2e_tests::process::Proc;
use e2e_tests::{PgServer, Stack, agent_auth, bin, free_port, get_json, profiles_dir, wait_for};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Rollups every second, so "a background job ran" is quick to see.
const AFTER: &str = "[analytics]\nrollup_interval_s = 1\n";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The time (ms) of the first line of `log` that contains `what`: the
/// timestamp `tracing` starts each line with.
fn logged_at(log: &str, what: &str) -> Option<i64> {
    let line = log.lines().find(|l| l.contains(what))?;
    line.split(|c: char| c.is_whitespace() || c == '\x1b')
        .find_map(|w| {
            let w = w.trim_start_matches(|c: char| !c.is_ascii_digit());
            chrono::DateTime::parse_from_rfc3339(w).ok()
        })
        .map(|t| t.timestamp_millis())
}

/// The rollup watermark (ms) — moved only by a rollup pass.
async fn rollup_watermark_ms(pool: &sqlx::PgPool) -> Result<i64> {
    let ms: Option<f64> = sqlx::query_scalar(
        "SELECT CASE WHEN watermark = '-infinity' THEN NULL
                ELSE extract(epoch FROM watermark) * 1000 END::float8
         FROM rollup_state WHERE name = 'samples'",
    )
    .fetch_one(pool)
    .await?;
    Ok(ms.unwrap_or(0.0) as i64)
}

async fn readings_of(pool: &sqlx::PgPool, gateway: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM readings WHERE gateway_id = $1")
            .bind(gateway)
            .fetch_one(pool)
            .await?,
    )
}

/// Sessions the server still has from `addr` (A's, by its address): for
/// each, its application, state, whether it is in a transaction, and query.
async fn sessions_from(pool: &sqlx::PgPool, addr: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT format('%s/%s/xact=%s/%s', application_name, state,
                       xact_start IS NOT NULL, left(query, 60))
         FROM pg_stat_activity WHERE client_addr = $1::inet",
    )
    .bind(addr)
    .fetch_all(pool)
    .await?)
}

/// A second agent (gateway `gateway`) polling the stack's simulator and
/// streaming to `hub_url` only; HTTP on `http_port`.
async fn start_agent_to(
    stack: &Stack,
    gateway: &str,
    hub_url: &str,
    http_port: u16,
) -> Result<Proc> {
    let cfg = stack.dir.path().join(format!("{gateway}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"gateway_id = "{gateway}"
profiles_dir = "{profiles}"

[buffer]
path = "{buffer}"

[uplink]
hub_url = "{hub_url}"
token_file = "{token_file}"
reconnect_min_ms = 100
reconnect_max_ms = 1000
batch_max = 50

[http]
listen = "127.0.0.1:{http_port}"

[[devices]]
id = "meter-1"
profile = "eastron-sdm630"
transport = {{ tcp = "127.0.0.1:{sim}" }}
poll_interval_ms = 20
retry_min_ms = 100
retry_max_ms = 1000
"#,
            profiles = profiles_dir().display(),
            buffer = stack.dir.path().join(format!("{gateway}-buffer")).display(),
            sim = stack.sim_port,
            token_file = stack.dir.path().join(format!("{gateway}.token")).display(),
        ),
    )?;
    agent_auth::add_user(&cfg, agent_auth::USER, "operator", agent_auth::PASSWORD)?;
    let mut cmd = std::process::Command::new(bin("edge-agent")?);
    cmd.arg("--config").arg(&cfg);
    let proc = Proc::spawn_cmd("edge-agent", &mut cmd, &stack.log_path(gateway))?;
    // The whole /health (backlog, last sequence) needs a session.
    let url = format!("http://127.0.0.1:{http_port}");
    wait_for(
        &format!("{gateway} /health"),
        Duration::from_secs(20),
        || async { Ok(get_json(&format!("{url}/health")).await.ok().map(|_| ())) },
    )
    .await
    .with_context(|| proc.log_tail(30))?;
    agent_auth::login_and_remember(&url).await?;
    Ok(proc)
}

/// Waits until the agent on `http_port` has delivered its backlog with its
/// device offline (the simulator stopped); returns its last sequence.
async fn drained(http_port: u16) -> Result<i64> {
    let url = format!("http://127.0.0.1:{http_port}/health");
    wait_for(
        "the second agent's backlog to drain",
        Duration::from_secs(90),
        || async {
            let (_, h) = get_json(&url).await?;
            let stopped = h["devices"][0]["state"] == "offline";
            Ok((stopped && h["buffer"]["backlog"] == 0)
                .then(|| h["buffer"]["last_seq"].as_i64())
                .flatten())
        },
    )
    .await
}

fn tails(hubs: &[&Replica], agent: &Proc) -> String {
    let mut s: String = hubs.iter().map(|h| h.log_tail()).collect();
    s.push_str(&format!(
        "\n----- agent via A -----\n{}",
        agent.log_tail(30)
    ));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_and_the_follower_takes_over() -> Result<()> {
    if let Some(why) = netns::unavailable() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipped: cannot make a network namespace here: {e:#}");
            return Ok(());
        }
    };
    let a_addr = ns.ns_addr.to_string();
    let mut stack = Stack::edge_only()?;
    stack.pg = Some(PgServer::start_also_on(ns.host_addr, &ns.subnet()).await?);
    let pool = stack.db().await?;

    // A listens on the veth: a routable address, so gateways need a token.
    let token = "partition-test-token";
    let token_file = stack.dir.path().join("gw-a.token");
    std::fs::write(&token_file, token)?;
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let grpc = format!("auth = \"token\"\n[grpc.tokens]\ngw-a = \"{hash}\"\n");
    let a = Replica::start_in(&stack, "hub-a", ("", &grpc, AFTER), &ns).await?;
    wait_for("hub-a to lead", Duration::from_secs(30), || async {
        Ok((a.leader_role().await? == "leader").then_some(()))
    })
    .await?;
    let b = Replica::start(&stack, "hub-b", "", AFTER).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.leader_role().await?, "follower");

    // gw-b streams through B the whole time; gw-a through A only.
    stack.start_sim(false).await?;
    stack.grpc_port = b.grpc_port;
    let cfg = stack.write_agent_config("gw-b", 20, "batch_max = 50\n")?;
    stack.start_agent(&cfg).await?;
    let a_agent_port = free_port();
    let agent_a = start_agent_to(&stack, "gw-a", &a.grpc_url(), a_agent_port).await?;
    wait_for(
        "readings through both hubs",
        Duration::from_secs(60),
        || async {
            let (ra, rb) = (
                readings_of(&pool, "gw-a").await?,
                readings_of(&pool, "gw-b").await?,
            );
            Ok((ra > 200 && rb > 200).then_some(()))
        },
    )
    .await
    .with_context(|| tails(&[&a, &b], &agent_a))?;

    // The cut.
    let cut_at = now_ms();
    ns.cut()?;
    let a_log = stack.log_path("hub-a");
    let b_log = stack.log_path("hub-b");

    // (a) A steps down by itself.
    let lost_at = wait_for("hub-a to step down", Duration::from_secs(30), || async {
        Ok(logged_at(
            &std::fs::read_to_string(&a_log)?,
            "leadership lost",
        ))
    })
    .await
    .with_context(|| tails(&[&a, &b], &agent_a))?;

    // (b) B leads, after A stepped down; meanwhile ingest through B goes on.
    let gw_b_at_cut = readings_of(&pool, "gw-b").await?;
    let gained_at = wait_for("hub-b to lead", Duration::from_secs(60), || async {
        let role = b.leader_role().await?;
        let log = std::fs::read_to_string(&b_log)?;
        Ok((role == "leader")
            .then(|| logged_at(&log, "leadership gained"))
            .flatten())
    })
    .await
    .with_context(|| tails(&[&a, &b], &agent_a))?;
    assert!(
        gained_at > lost_at,
        "hub-b gained leadership at {gained_at} ms, before hub-a lost it at {lost_at} ms"
    );
    // (c) a singleton job runs on B.
    wait_for(
        "a rollup pass on hub-b",
        Duration::from_secs(60),
        || async { Ok((rollup_watermark_ms(&pool).await? > gained_at).then_some(())) },
    )
    .await
    .with_context(|| tails(&[&a, &b], &agent_a))?;
    assert!(
        readings_of(&pool, "gw-b").await? > gw_b_at_cut,
        "ingest through hub-b stopped during the partition"
    );

    // The server ended A's sessions (the lock's, and the pool's, which
    // would otherwise hold their locks for as long as the host's keepalive).
    wait_for(
        "the server to end hub-a's sessions",
        Duration::from_secs(60),
        || async {
            let left = sessions_from(&pool, &a_addr).await?;
            anyhow::ensure!(left.is_empty(), "still open: {left:?}");
            Ok(Some(()))
        },
    )
    .await?;
    let sessions_gone_at = now_ms();

    // (d) the heal: A is back by itself, as a follower, and ingests again.
    let gw_a_before_heal = readings_of(&pool, "gw-a").await?;
    ns.heal()?;
    let healed_at = now_ms();
    wait_for(
        "hub-a to answer as a follower",
        Duration::from_secs(60),
        || async {
            let (status, body) = get_json(&format!("{}/ready", a.http_url())).await?;
            Ok((status == 200 && body["leader"] == "follower").then_some(()))
        },
    )
    .await
    .with_context(|| tails(&[&a, &b], &agent_a))?;
    wait_for(
        "readings through hub-a after the heal",
        Duration::from_secs(90),
        || async { Ok((readings_of(&pool, "gw-a").await? > gw_a_before_heal + 100).then_some(())) },
    )
    .await
    .with_context(|| tails(&[&a, &b], &agent_a))?;
    let ingesting_at = now_ms();
    for _ in 0..10 {
        let roles = [a.leader_role().await?, b.leader_role().await?];
        assert_eq!(roles, ["follower", "leader"], "after the heal");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let a_text = std::fs::read_to_string(&a_log)?;
    assert_eq!(
        a_text.matches("leadership gained").count(),
        1,
        "hub-a led again after the heal:\n{a_text}"
    );

    // (e) every acknowledged reading once, through either hub.
    let last_b = stack.drain().await?;
    stack.assert_exactly_once("gw-b", last_b).await?;
    let last_a = drained(a_agent_port)
        .await
        .with_context(|| tails(&[&a, &b], &agent_a))?;
    stack.assert_exactly_once("gw-a", last_a).await?;

    eprintln!(
        "partition: cut -> hub-a steps down {} ms; cut -> hub-b leads {} ms; \
         cut -> server ended hub-a's sessions <= {} ms; heal -> hub-a ingests again <= {} ms; \
         {last_a} + {last_b} readings exactly once",
        lost_at - cut_at,
        gained_at - cut_at,
        sessions_gone_at - cut_at,
        ingesting_at - healed_at,
    );
    Ok(())
}
