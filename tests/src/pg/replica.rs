//! A streaming replica of a test's local cluster.

use super::{Local, PgServer, pg_bindir};
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::process::Command;

impl PgServer {
    /// A streaming replica of this local cluster (`pg_basebackup -R`), on a
    /// port of its own, started with the same binaries and settings; its
    /// [`PgServer::stop`] stops the replica only.
    pub async fn start_replica(&self) -> Result<PgServer> {
        let Some(primary) = &self.local else {
            bail!("a replica needs the local cluster, not QI_TEST_DATABASE_URL");
        };
        let dir = tempfile::Builder::new()
            .prefix("qi-pg-replica-")
            .tempdir()?;
        if let Some((uid, gid)) = primary.ids {
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )?;
        }
        let data = dir.path().join("data");
        let tool = match primary.bindir.join("pg_basebackup") {
            p if p.is_file() => p,
            _ => pg_bindir()?.join("pg_basebackup"),
        };
        let mut backup = Command::new(tool);
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"]);
        if let Some((uid, gid)) = primary.ids {
            backup.uid(uid).gid(gid);
        }
        let out = backup.output().context("cannot run pg_basebackup")?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = crate::free_port();
        let local = Local {
            bindir: primary.bindir.clone(),
            preload: primary.preload,
            data,
            sock: dir.path().to_path_buf(),
            port,
            ids: primary.ids,
            log: dir.path().join("postgres.log"),
            listen: "127.0.0.1".into(),
        };
        let proc = local.spawn()?;
        let server = PgServer {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            local: Some(local),
            _proc: Some(proc),
            _dir: Some(dir),
            workers: Vec::new(),
        };
        server.wait_ready().await?;
        Ok(server)
    }
}
