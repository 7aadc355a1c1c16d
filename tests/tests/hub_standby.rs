//! The hub refuses a standby (a server in recovery) the way it refuses an
//! unreachable database: during a failover a standby can still answer at the
//! hub's address, and every write through such a connection would fail with
//! SQLSTATE 25006. It keeps trying, says why, and uses the server once it is
//! promoted. A real streaming standby: pg_basebackup -R of a throwaway
//! primary (docs/scaling.md "Database high availability").
// qi-test: tier-independent (the hub refusing a server in recovery): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail};
use e2e_tests::process::Proc;
use e2e_tests::{PgServer, bin, free_port, get_json, wait_for};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// The `postgres` user's ids when running as root (PostgreSQL refuses root).
fn owner() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name("postgres")?.context("no `postgres` user")?;
    Ok(Some((u.uid.as_raw(), u.gid.as_raw())))
}

fn as_owner(cmd: &mut Command, ids: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A streaming standby of `primary`: base backup with `-R`, started on its own port.
async fn standby(primary: &PgServer, dir: &std::path::Path) -> Result<(Proc, u16)> {
    let ids = owner()?;
    if let Some((uid, gid)) = ids {
        nix::unistd::chown(
            dir,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )?;
    }
    let bindir = e2e_tests::pg::pg_bindir()?;
    let url = primary.url();
    let port = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .context("primary URL without a port")?;
    let data = dir.join("standby");
    let out = as_owner(&mut Command::new(bindir.join("pg_basebackup")), ids)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
        ])
        .args(["--no-sync", "-D"])
        .arg(&data)
        .output()
        .context("cannot run pg_basebackup")?;
    if !out.status.success() {
        bail!(
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sport = free_port();
    let proc = Proc::spawn_cmd(
        "standby",
        as_owner(&mut Command::new(bindir.join("postgres")), ids)
            .arg("-D")
            .arg(&data)
            .args(["-p", &sport.to_string(), "-k"])
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1"]),
        &dir.join("standby.log"),
    )?;
    let surl = format!("postgres://postgres@127.0.0.1:{sport}/postgres");
    wait_for("the standby in recovery", Duration::from_secs(60), || {
        let surl = surl.clone();
        async move {
            use sqlx::Connection;
            let Ok(mut c) = sqlx::PgConnection::connect(&surl).await else {
                return Ok(None);
            };
            let r: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut c)
                .await?;
            Ok(r.then_some(()))
        }
    })
    .await?;
    Ok((proc, sport))
}

#[tokio::test]
async fn standby_refused_with_its_reason_then_used_once_promoted() -> Result<()> {
    if e2e_tests::pg::skip_on_shared_server(
        "standby_refused_with_its_reason_then_used_once_promoted",
        "builds a standby of its own cluster",
    ) {
        return Ok(());
    }
    let primary = PgServer::start().await?;
    let dir = tempfile::Builder::new().prefix("qi-standby-").tempdir()?;
    let (_standby, sport) = standby(&primary, dir.path()).await?;
    let surl = format!("postgres://postgres@127.0.0.1:{sport}/postgres");
    let http = free_port();
    let cfg = dir.path().join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{surl}\"\nconnect_timeout_s = 120\n\n[grpc]\nlisten = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
            free_port()
        ),
    )?;
    let hub = Proc::spawn(
        "cloud-hub",
        &bin("cloud-hub")?,
        &["--config".as_ref(), cfg.as_os_str()],
        &dir.path().join("hub.log"),
    )?;
    // Two refusals logged with the reason: it keeps trying.
    wait_for(
        "the hub refusing the standby twice",
        Duration::from_secs(60),
        || async {
            if hub.exit_status()?.is_some() {
                bail!("hub exited: {}", hub.log_tail(30));
            }
            let log = hub.log_text();
            let refusals = log
                .lines()
                .filter(|l| l.contains("cannot connect to PostgreSQL") && l.contains("standby"))
                .count();
            Ok((refusals >= 2).then_some(()))
        },
    )
    .await?;
    assert!(
        get_json(&format!("http://127.0.0.1:{http}/ready"))
            .await
            .map_or(true, |(s, _)| s != 200),
        "the hub must not be ready on a standby:\n{}",
        hub.log_tail(30)
    );
    // Promotion (what Patroni does at failover): the same address is now a primary.
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&surl).await?;
        sqlx::query("SELECT pg_promote()").execute(&mut c).await?;
    }
    wait_for(
        "hub /ready after the promotion",
        Duration::from_secs(60),
        || async {
            if hub.exit_status()?.is_some() {
                bail!("hub exited: {}", hub.log_tail(30));
            }
            Ok(get_json(&format!("http://127.0.0.1:{http}/ready"))
                .await
                .ok()
                .filter(|(s, _)| *s == 200))
        },
    )
    .await
    .with_context(|| hub.log_tail(30))?;
    assert!(
        hub.log_text()
            .contains("PostgreSQL accepts connections now"),
        "{}",
        hub.log_tail(30)
    );
    Ok(())
}
