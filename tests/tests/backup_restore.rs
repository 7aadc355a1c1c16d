//! Backup and restore as docs/backup.md describes them, with the commands read
//! out of that file and run as written (`e2e_tests::doc_blocks`): the hub's
//! database dumped with pg_dump and restored into a new PostgreSQL cluster, a
//! hub started on it and the gateway continuing; a stopped gateway's state
//! archived with tar, wiped, restored under another path, and its backlog
//! delivered. Storage tier `none` (the default test cluster).

use anyhow::{Context, Result};
use e2e_tests::doc_blocks::run_block;
use e2e_tests::hub_auth::{admin_token, call};
use e2e_tests::{PgServer, Stack, agent_auth, bin, hub_command, hub_count, pg, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DOC: &str = "docs/backup.md";

/// PostgreSQL's client tools and the built `cloud-hub`, first on PATH.
fn tool_dirs() -> Result<Vec<PathBuf>> {
    let hub = bin("cloud-hub")?;
    Ok(vec![
        pg::pg_bindir()?,
        hub.parent().context("bin dir")?.to_path_buf(),
    ])
}

fn run_doc(name: &str, env: &[(&str, String)]) -> Result<String> {
    let dirs = tool_dirs()?;
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    run_block(DOC, name, &dirs, env)
}

/// What must survive a restore: samples per series, the series, gateway
/// audit events, users, API keys, and the migrations the schema went through.
async fn snapshot(url: &str) -> Result<Vec<String>> {
    let pool = sqlx::PgPool::connect(url).await?;
    let mut out = Vec::new();
    for q in [
        "SELECT series_id::text || ' ' || count(*)::text FROM samples GROUP BY series_id ORDER BY series_id",
        "SELECT series_id::text || ' ' || gateway_id || ' ' || device_id || ' ' || metric || ' ' || unit FROM series ORDER BY series_id",
        "SELECT gateway_id || ' ' || seq::text FROM gateway_audit_events ORDER BY 1",
        "SELECT username || ' ' || role FROM users ORDER BY 1",
        "SELECT id::text || ' ' || name FROM api_keys ORDER BY 1",
        "SELECT version::text || ' ' || encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(q).fetch_all(&pool).await?;
        out.push(format!("{q}\n{}", rows.join("\n")));
    }
    pool.close().await;
    Ok(out)
}

/// The URL of database `name` on the server of `server_url`.
fn database_url(server_url: &str, name: &str) -> Result<String> {
    let (head, _) = server_url
        .rsplit_once('/')
        .context("URL without a database")?;
    Ok(format!("{head}/{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restored_from_its_dump_into_a_new_cluster_carries_on() -> Result<()> {
    // pg_dump of a Citus coordinator holds no shard rows: tier citus is
    // backed up node by node (docs/backup.md, "Tier citus").
    if e2e_tests::pg::skip_on_tier(
        "citus",
        "a_hub_restored_from_its_dump_into_a_new_cluster_carries_on",
        "backs the hub's database up with one pg_dump",
    ) {
        return Ok(());
    }
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-bak", 50, "batch_max = 100\n")?;
    stack.start_agent(&cfg).await?;
    let url = stack.hub_url();
    let old_admin = admin_token(&stack);
    // The doc's restore depends on the tier, which the hub names in /ready.
    let (_, ready) = e2e_tests::get_json(&format!("{url}/ready")).await?;
    let tier = ready["storage_tier"].clone();
    let restore_block = match tier.as_str() {
        Some("none") => "hub-restore-none",
        Some("apache" | "timescale") => "hub-restore-timescaledb",
        other => anyhow::bail!("unknown storage tier {other:?}: {ready}"),
    };

    // A hub user, and an access token the old hub signed.
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/users"),
        Some(&old_admin),
        Some(&json!({"username": "olga", "password": "viewer password 1", "role": "viewer"})),
    )
    .await?;
    anyhow::ensure!(s == 201, "user: {s} {v}");
    let login = |url: String| async move {
        call(
            Method::POST,
            &format!("{url}/api/v1/auth/login"),
            None,
            Some(&json!({"username": "olga", "password": "viewer password 1"})),
        )
        .await
    };
    let (s, pair) = login(url.clone()).await?;
    anyhow::ensure!(s == 200, "login: {s} {pair}");
    let old_access = pair["access_token"]
        .as_str()
        .context("access_token")?
        .to_string();

    let pool = stack.db().await?;
    wait_for("readings at the hub", Duration::from_secs(30), || async {
        Ok((hub_count(&pool).await? > 500).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    pool.close().await;
    // Quiet ingest (instrument off, backlog delivered), so the restored copy
    // can be compared with the original; the dump itself is taken while the
    // hub runs, as the doc says it may be.
    let delivered = stack.drain().await?;
    let gets = [
        "/api/v1/devices",
        "/api/v1/series",
        "/api/v1/readings?device=meter-1&metric=voltage_l1&limit=50",
        "/api/v1/users",
    ];
    let mut before: Vec<Value> = Vec::new();
    for g in gets {
        let (s, v) = call(Method::GET, &format!("{url}{g}"), Some(&old_admin), None).await?;
        anyhow::ensure!(s == 200, "{g}: {s} {v}");
        before.push(v);
    }

    let backup = stack.dir.path().join("hub.dump");
    let old_url = stack.pg_url()?;
    let t = Instant::now();
    run_doc(
        "hub-dump",
        &[
            ("HUB_DATABASE_URL", old_url.clone()),
            ("BACKUP", backup.display().to_string()),
        ],
    )?;
    let dump_s = t.elapsed().as_secs_f64();
    stack
        .hub
        .take()
        .context("hub")?
        .terminate(Duration::from_secs(20))?;

    // A new cluster, as after losing the old server.
    let new_pg = PgServer::start().await?;
    let server_url = new_pg.url();
    // With QI_TEST_DATABASE_URL both "servers" are one: keep the name unique there.
    let shared = std::env::var_os("QI_TEST_DATABASE_URL").is_some();
    let name = if shared {
        format!("qi_hub_{}", e2e_tests::free_port())
    } else {
        "qi_hub".to_string()
    };
    let restored_url = database_url(&server_url, &name)?;
    let t = Instant::now();
    let restore_env = [
        ("SERVER_URL", server_url.clone()),
        ("RESTORED_URL", restored_url.clone()),
        ("BACKUP", backup.display().to_string()),
    ];
    if shared {
        let script = e2e_tests::doc_blocks::block(DOC, restore_block)?
            .replace(" qi_hub\n", &format!(" {name}\n"));
        let dirs = tool_dirs()?;
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        e2e_tests::doc_blocks::run(&script, &dirs, &restore_env)?;
    } else {
        run_doc(restore_block, &restore_env)?;
    }
    let restore_s = t.elapsed().as_secs_f64();
    eprintln!(
        "tier {tier}: {delivered} readings: pg_dump {dump_s:.2} s ({} bytes), restore ({restore_block}) {restore_s:.2} s",
        std::fs::metadata(&backup)?.len()
    );

    let (old_state, new_state) = (snapshot(&old_url).await?, snapshot(&restored_url).await?);
    for (a, b) in old_state.iter().zip(&new_state) {
        assert_eq!(a, b, "the restored database differs");
    }

    // The documented check, with a config naming the restored database.
    let hub_config = stack.dir.path().join("restored-hub.toml");
    std::fs::write(
        &hub_config,
        format!(
            "[database]\nurl = \"{restored_url}\"\n\n[grpc]\nlisten = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n",
            stack.grpc_port, stack.hub_http_port
        ),
    )?;
    run_doc(
        "hub-check",
        &[("HUB_CONFIG", hub_config.display().to_string())],
    )?;

    // A hub on the restored database, same addresses: /ready (no migration
    // pending), the same answers, the old credentials.
    let mut new_pg = new_pg;
    new_pg.switch_database(&name)?;
    let old_pg = stack.pg.replace(new_pg);
    stack.start_hub().await?;
    let (s, ready) = e2e_tests::get_json(&format!("{url}/ready")).await?;
    assert_eq!(
        (s, ready["status"].as_str()),
        (200, Some("ready")),
        "{ready}"
    );
    assert_eq!(
        ready["storage_tier"], tier,
        "the restored database keeps its tier"
    );
    for (g, was) in gets.iter().zip(&before) {
        let (s, v) = call(Method::GET, &format!("{url}{g}"), Some(&old_admin), None).await?;
        assert_eq!(s, 200, "{g} with the key made before the dump: {v}");
        assert_eq!(&v, was, "{g} answers differently after the restore");
    }
    let (s, me) = call(
        Method::GET,
        &format!("{url}/api/v1/auth/me"),
        Some(&old_access),
        None,
    )
    .await?;
    assert_eq!(s, 200, "an access token signed before the dump: {me}");
    let (s, v) = login(url.clone()).await?;
    assert_eq!(s, 200, "login after the restore: {v}");

    // The gateway reconnects by itself and continues: every sequence once.
    stack.start_sim(false).await?;
    let pool = stack.db().await?;
    let restored_count = hub_count(&pool).await?;
    wait_for(
        "new readings at the restored hub",
        Duration::from_secs(60),
        || async { Ok((hub_count(&pool).await? > restored_count + 300).then_some(())) },
    )
    .await
    .with_context(|| stack.logs())?;
    pool.close().await;
    let last = stack.drain().await?;
    assert!(last > delivered, "nothing new after the restore: {last}");
    stack.assert_exactly_once("gw-bak", last).await?;

    // The audit chain holds across the restore and what the new hub appended.
    let hub_toml = stack.dir.path().join("hub.toml");
    hub_command(&bin("cloud-hub")?, &hub_toml, &["audit", "verify"], "")?;
    drop(old_pg);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateways_state_restored_under_another_path_delivers_its_backlog_once()
-> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_sim(false).await?;
    let (config_dir, state_dir) = ("etc/edge-agent", "var/lib/edge-agent");
    let old_root = stack.dir.path().join("old-root");
    std::fs::create_dir_all(old_root.join(config_dir))?;
    std::fs::create_dir_all(old_root.join(state_dir))?;
    // The harness's config, with the buffer (and users.json next to it) in
    // the packaged layout under old_root.
    let generated = stack.write_agent_config("gw-state", 50, "")?;
    let text = std::fs::read_to_string(&generated)?.replace(
        &stack.dir.path().join("buffer").display().to_string(),
        &old_root
            .join(state_dir)
            .join("buffer")
            .display()
            .to_string(),
    );
    let config = old_root.join(config_dir).join("config.toml");
    std::fs::write(&config, text)?;
    agent_auth::add_user(&config, "restore-check", "viewer", "viewer password 1")?;

    // The hub is down: readings wait in the buffer.
    stack.start_agent(&config).await?;
    let backlog = wait_for("a backlog", Duration::from_secs(30), || async {
        let h = stack.agent_health().await?;
        Ok((h["buffer"]["backlog"].as_i64() > Some(500)).then(|| h["buffer"]["last_seq"].as_i64()))
    })
    .await
    .with_context(|| stack.logs())?
    .context("last_seq")?;
    stack
        .agent
        .take()
        .context("agent")?
        .terminate(Duration::from_secs(30))?;
    let stopped_at = chrono::Utc::now();

    let backup = stack.dir.path().join("gateway.tar.gz");
    let env = |root: &Path| {
        vec![
            ("ROOT", root.display().to_string()),
            ("CONFIG_DIR", config_dir.to_string()),
            ("STATE_DIR", state_dir.to_string()),
            ("BACKUP", backup.display().to_string()),
            ("OLD_ROOT", old_root.display().to_string()),
        ]
    };
    let t = Instant::now();
    run_doc("agent-backup", &env(&old_root))?;
    eprintln!(
        "gateway state with {backlog} readings buffered: tar {:.2} s, {} bytes",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&backup)?.len()
    );
    std::fs::remove_dir_all(&old_root)?;
    let new_root = stack.dir.path().join("new-root");
    std::fs::create_dir_all(&new_root)?;
    run_doc("agent-restore", &env(&new_root))?;
    run_doc("agent-move", &env(&new_root))?;
    let config = new_root.join(config_dir).join("config.toml");
    let moved = std::fs::read_to_string(&config)?;
    assert!(!moved.contains(&old_root.display().to_string()), "{moved}");
    assert!(new_root.join(state_dir).join("users.json").is_file());

    stack.start_hub().await?;
    stack.start_agent(&config).await?;
    // A user that only the restored users file knows.
    agent_auth::login(&stack.agent_url(), "restore-check", "viewer password 1").await?;
    let last = stack.drain().await?;
    assert!(
        last >= backlog,
        "the restored agent numbers below what it had buffered: {last} < {backlog}"
    );
    // Sequences 1..=last exactly once: the backlog buffered before the
    // backup included, nothing doubled.
    stack.assert_exactly_once("gw-state", last).await?;
    // ...and the first `backlog` of them are the readings taken before the
    // backup (an agent started on an empty buffer would number new ones so).
    let pool = stack.db().await?;
    let (old, newest): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT count(*), max(ts) FROM readings WHERE gateway_id = 'gw-state' AND seq <= $1",
    )
    .bind(backlog)
    .fetch_one(&pool)
    .await?;
    assert!(
        old > 500,
        "{old} readings among the first {backlog} sequences"
    );
    assert!(
        newest.is_some_and(|t| t < stopped_at),
        "sequences up to {backlog} should be the readings buffered before the backup (stopped at {stopped_at}), the newest is {newest:?}"
    );
    Ok(())
}
