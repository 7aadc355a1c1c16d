//! The hub's start when PostgreSQL is not there (yet): every attempt is
//! logged with host:port and the cause, it keeps trying for
//! `database.connect_timeout_s`, then exits non-zero with one clear line;
//! a database that comes up in time is used. The password never shows.
// qi-test: tier-independent (the hub's start before its database is up): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::process::Proc;
use e2e_tests::{PgServer, bin, free_port, get_json, wait_for};
use std::path::Path;
use std::time::{Duration, Instant};

const PASSWORD: &str = "n0t-in-any-log";

fn write_config(dir: &Path, url: &str, connect_timeout_s: u64) -> Result<std::path::PathBuf> {
    let cfg = dir.join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{url}\"\nconnect_timeout_s = {connect_timeout_s}\n\n[grpc]\nlisten = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n",
            free_port(),
            free_port()
        ),
    )?;
    Ok(cfg)
}

/// Runs the hub until it exits by itself; returns (success, seconds, log).
fn run_until_exit(dir: &Path, cfg: &Path, limit: Duration) -> Result<(bool, f64, String)> {
    let log = dir.join("hub.log");
    let started = Instant::now();
    let hub = Proc::spawn(
        "cloud-hub",
        &bin("cloud-hub")?,
        &["--config".as_ref(), cfg.as_os_str()],
        &log,
    )?;
    let status = hub.wait(limit)?;
    let secs = started.elapsed().as_secs_f64();
    Ok((status.success(), secs, std::fs::read_to_string(&log)?))
}

fn attempt_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("cannot connect to PostgreSQL"))
        .collect()
}

#[test]
fn closed_port_each_attempt_logged_then_one_clear_line_within_the_timeout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Nothing listens there: connection refused at once, every attempt.
    let port = free_port();
    let url = format!("postgres://qi:{PASSWORD}@127.0.0.1:{port}/qi");
    for timeout_s in [2u64, 5] {
        let cfg = write_config(dir.path(), &url, timeout_s)?;
        let (ok, secs, log) =
            run_until_exit(dir.path(), &cfg, Duration::from_secs(timeout_s + 20))?;
        std::fs::remove_file(dir.path().join("hub.log"))?;
        eprintln!("connect_timeout_s = {timeout_s}: exited after {secs:.1} s\n{log}");
        assert!(
            !ok,
            "the hub must exit non-zero without its database:\n{log}"
        );
        assert!(
            secs >= timeout_s as f64 && secs < timeout_s as f64 + 10.0,
            "connect_timeout_s = {timeout_s} but the hub gave up after {secs:.1} s:\n{log}"
        );
        let attempts = attempt_lines(&log);
        assert!(
            attempts.len() >= 2,
            "expected a log line per attempt:\n{log}"
        );
        for line in &attempts {
            assert!(
                line.contains(&format!("127.0.0.1:{port}")),
                "no host:port: {line}"
            );
            assert!(line.contains("refused"), "no cause: {line}");
        }
        let fatal: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("cloud-hub: error:"))
            .collect();
        assert_eq!(fatal.len(), 1, "one final line:\n{log}");
        assert!(
            fatal[0].contains(&format!("127.0.0.1:{port}"))
                && fatal[0].contains("refused")
                && fatal[0].contains("connect_timeout_s"),
            "{}",
            fatal[0]
        );
        assert_eq!(
            fatal[0].matches("refused").count(),
            1,
            "cause repeated: {}",
            fatal[0]
        );
        assert!(!log.contains(PASSWORD), "password in the log:\n{log}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_cause_printed_once_per_attempt() -> Result<()> {
    let pg = PgServer::start().await?;
    let base = pg.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    );
    let (server, _) = base.rsplit_once('/').context("database in the URL")?;
    let url = format!("{server}/no_such_db");
    let dir = tempfile::tempdir()?;
    let cfg = write_config(dir.path(), &url, 2)?;
    let (ok, secs, log) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || run_until_exit(&dir, &cfg, Duration::from_secs(30))
    })
    .await??;
    eprintln!("exited after {secs:.1} s\n{log}");
    assert!(!ok, "{log}");
    let attempts = attempt_lines(&log);
    assert!(!attempts.is_empty(), "{log}");
    for line in &attempts {
        assert_eq!(line.matches("does not exist").count(), 1, "{line}");
        assert!(line.contains("no_such_db"), "{line}");
    }
    let fatal = log
        .lines()
        .find(|l| l.starts_with("cloud-hub: error:"))
        .context("no final line")?;
    assert_eq!(fatal.matches("does not exist").count(), 1, "{fatal}");
    assert!(!log.contains(PASSWORD), "password in the log:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_that_comes_up_in_time_is_used() -> Result<()> {
    if e2e_tests::pg::skip_on_shared_server(
        "database_that_comes_up_in_time_is_used",
        "restarts PostgreSQL",
    ) {
        return Ok(());
    }
    let mut pg = PgServer::start().await?;
    let dir = tempfile::tempdir()?;
    let cfg = write_config(dir.path(), &pg.url(), 60)?;
    let http = std::fs::read_to_string(&cfg)?
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .map(str::to_string)
        .context("http.listen")?;
    let log = dir.path().join("hub.log");
    let mut hub = None;
    // The hub starts while PostgreSQL is down for 4 s.
    let (restarted, spawned) = tokio::join!(pg.restart(Duration::from_secs(4)), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hub = Some(Proc::spawn(
            "cloud-hub",
            &bin("cloud-hub")?,
            &["--config".as_ref(), cfg.as_os_str()],
            &log,
        )?);
        anyhow::Ok(())
    });
    restarted?;
    spawned?;
    let hub = hub.context("hub")?;
    wait_for("hub /ready", Duration::from_secs(30), || async {
        anyhow::ensure!(
            hub.exit_status()?.is_none(),
            "hub exited:\n{}",
            hub.log_text()
        );
        Ok(get_json(&format!("http://{http}/ready"))
            .await
            .ok()
            .filter(|(s, _)| *s == 200)
            .map(|_| ()))
    })
    .await?;
    let text = hub.log_text();
    assert!(!attempt_lines(&text).is_empty(), "no retry logged:\n{text}");
    Ok(())
}
