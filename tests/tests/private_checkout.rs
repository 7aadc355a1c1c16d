//! A checkout the `postgres` user cannot enter (cloned into a mode-700
//! directory and run as root): the tests start PostgreSQL as `postgres`, so
//! the apache tier's relocated PostgreSQL, built under the checkout's
//! `target/`, has to be placed where that user can run it.
//! `scripts/setup-timescaledb.sh` does so; the harness checks up front and
//! says what to do instead of initdb's bare "Permission denied".

use anyhow::{Context, Result};
use e2e_tests::workspace_root;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The apache tier as `scripts/setup-timescaledb.sh` built it in this
/// checkout, or None (with the reason printed) where this cannot be tested.
fn built_tree() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root runs PostgreSQL as another user");
        return None;
    }
    let out = workspace_root().join("target/timescaledb");
    let built = std::fs::read_dir(&out)
        .ok()?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with(".built-"));
    if !built {
        eprintln!("skipped: run scripts/setup-timescaledb.sh first (scripts/test.sh does)");
        return None;
    }
    Some(out)
}

#[test]
fn apache_tier_built_in_a_private_checkout_runs_as_postgres() -> Result<()> {
    let Some(built) = built_tree() else {
        return Ok(());
    };
    let postgres = nix::unistd::User::from_name("postgres")?.context("no postgres user")?;
    let ids = Some((postgres.uid.as_raw(), postgres.gid.as_raw()));
    // The private checkout: mode 700, as `mktemp -d` or root's home.
    let private = tempfile::Builder::new().prefix("qi-private-").tempdir()?;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))?;
    let out = private.path().join("timescaledb");
    std::fs::create_dir_all(&out)?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg(built.join("pg"))
        .arg(&out)
        .status()?;
    anyhow::ensure!(copied.success(), "cp failed");
    for e in std::fs::read_dir(&built)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(".built-") {
            std::fs::copy(e.path(), out.join(e.file_name()))?;
        }
    }
    let private_bin = out.join("pg/lib/postgresql/15/bin");

    // What the harness says about binaries `postgres` cannot reach.
    let err = e2e_tests::pg::check_runnable_as(&private_bin, ids)
        .err()
        .context("the private copy should not be runnable by postgres")?;
    let msg = format!("{err:#}");
    assert!(
        msg.contains("setup-timescaledb.sh") && msg.contains("cannot run"),
        "{msg}"
    );

    // The setup script (its build reused here) places a copy postgres can run.
    let shared = tempfile::Builder::new().prefix("qi-shared-").tempdir()?;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755))?;
    let run = Command::new(workspace_root().join("scripts/setup-timescaledb.sh"))
        .env("QI_TSDB_DIR", &out)
        .env("QI_TSDB_SHARED_DIR", shared.path())
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{said}");
    let recorded = std::fs::read_to_string(out.join("bindir"))
        .with_context(|| format!("no bindir recorded:\n{said}"))?;
    let bindir = PathBuf::from(recorded.trim());
    assert!(
        bindir.starts_with(shared.path()),
        "recorded {} is not the shared copy:\n{said}",
        bindir.display()
    );
    e2e_tests::pg::check_runnable_as(&bindir, ids)?;
    // And a cluster really initialises from it as `postgres`.
    let data = shared.path().join("data");
    std::fs::create_dir(&data)?;
    nix::unistd::chown(&data, Some(postgres.uid), Some(postgres.gid))?;
    let initdb = Command::new(bindir.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
        ])
        .uid(postgres.uid.as_raw())
        .gid(postgres.gid.as_raw())
        .output()?;
    assert!(
        initdb.status.success(),
        "{}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    // Run again, the script keeps the copy and the record.
    let again = Command::new(workspace_root().join("scripts/setup-timescaledb.sh"))
        .env("QI_TSDB_DIR", &out)
        .env("QI_TSDB_SHARED_DIR", shared.path())
        .output()?;
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(out.join("bindir"))?, recorded);
    Ok(())
}
