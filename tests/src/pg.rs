//! A throwaway PostgreSQL for one test, or a fresh database in a given server.
//!
//! `QI_TEST_TIER` picks the storage tier the cluster offers the hub:
//! - `none` (default): Debian's PostgreSQL binaries.
//! - `apache`: the relocated PostgreSQL with TimescaleDB's Apache-2 build from
//!   `scripts/setup-timescaledb.sh`, preloaded.
//! - `timescale`: the PGlite + TimescaleDB server from `scripts/setup-pglite.sh`
//!   (one connection at a time: only the storage suite runs against it).
//! - `citus`: three clusters of the relocated PostgreSQL with Citus from
//!   `scripts/setup-citus.sh` (a coordinator and `QI_TEST_CITUS_WORKERS`
//!   workers, default 2, all preloading `citus`); the hub gets the coordinator.

mod citus;
mod replica;

use crate::process::Proc;
use anyhow::{Context, Result, bail};
pub use citus::citus_workers;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct PgServer {
    url: String,
    /// How to start the local cluster again (None with QI_TEST_DATABASE_URL).
    local: Option<Local>,
    // Field order matters: the server must stop before its directory goes.
    _proc: Option<Proc>,
    _dir: Option<tempfile::TempDir>,
    /// Tier citus: the worker clusters (they outlive the coordinator's stop).
    workers: Vec<PgServer>,
}

/// What a local cluster preloads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Preload {
    Nothing,
    Timescaledb,
    Citus,
}

struct Local {
    bindir: PathBuf,
    preload: Preload,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    ids: Option<(u32, u32)>,
    log: PathBuf,
    /// `listen_addresses` (127.0.0.1, and more for partition tests).
    listen: String,
}

impl Local {
    fn spawn(&self) -> Result<Proc> {
        let mut postgres = Command::new(self.bindir.join("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.sock)
            // Throwaway test cluster: durability of the *database* is not under test here.
            .args([
                "-c",
                &format!("listen_addresses={}", self.listen),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        match self.preload {
            Preload::Nothing => {}
            Preload::Timescaledb => {
                postgres.args([
                    "-c",
                    "shared_preload_libraries=timescaledb",
                    "-c",
                    "timescaledb.telemetry_level=off",
                ]);
            }
            Preload::Citus => {
                postgres.args([
                    "-c",
                    "shared_preload_libraries=citus",
                    // 8 shards per distributed table, not 32: every day
                    // partition is a set of shards, and two shared cores
                    // create them for each test.
                    "-c",
                    "citus.shard_count=8",
                ]);
                // Citus connects to the other nodes with libpq, which looks
                // for client certificates under $HOME: run as `postgres`
                // with root's HOME it fails on /root/.postgresql.
                postgres.env("HOME", &self.sock);
            }
        }
        if let Some((uid, gid)) = self.ids {
            postgres.uid(uid).gid(gid);
        }
        Proc::spawn_cmd("postgres", &mut postgres, &self.log)
    }
}

/// Directory of the Debian PostgreSQL server binaries (initdb, postgres).
pub fn pg_bindir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("QI_PG_BINDIR") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql; run scripts/setup.sh (installs Debian's postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin; run scripts/setup.sh")
}

/// Tests that stop, restart or replicate their database need a cluster of
/// their own. With `QI_TEST_DATABASE_URL` set there is none: such a test
/// calls this first and returns when it says so, after a line saying why
/// (the rest of the suite still runs against the given server).
pub fn skip_on_shared_server(test: &str, needs: &str) -> bool {
    let shared = std::env::var_os("QI_TEST_DATABASE_URL").is_some();
    if shared {
        eprintln!(
            "SKIPPED {test}: it {needs}, which a server given by QI_TEST_DATABASE_URL does not allow"
        );
    }
    shared
}

/// Tests whose subject a tier's server does not offer (a single-cluster
/// backup on tier citus, say) call this first and return when it says so,
/// after a line saying why (the rest of the suite still runs on that tier).
pub fn skip_on_tier(tier: &str, test: &str, needs: &str) -> bool {
    let skip = test_tier() == tier;
    if skip {
        eprintln!("SKIPPED {test}: it {needs}, which tier {tier} does not offer");
    }
    skip
}

/// The tier under test (`QI_TEST_TIER`): none, apache, citus or timescale.
pub fn test_tier() -> String {
    std::env::var("QI_TEST_TIER").unwrap_or_else(|_| "none".into())
}

/// The relocated PostgreSQL with TimescaleDB: `QI_TSDB_BINDIR`, else where
/// `scripts/setup-timescaledb.sh` recorded it (`target/timescaledb/bindir`;
/// outside the checkout when the `postgres` user cannot enter it).
fn apache_bindir() -> Result<PathBuf> {
    let dir = match std::env::var_os("QI_TSDB_BINDIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = std::env::var_os("QI_TSDB_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target/timescaledb"));
            match std::fs::read_to_string(out.join("bindir")) {
                Ok(recorded) => PathBuf::from(recorded.trim()),
                Err(_) => out.join("pg/lib/postgresql/15/bin"),
            }
        }
    };
    if !dir.join("postgres").is_file() {
        bail!(
            "QI_TEST_TIER=apache needs PostgreSQL with TimescaleDB in {}; run scripts/setup-timescaledb.sh",
            dir.display()
        );
    }
    Ok(dir)
}

/// Checks up front that the cluster's owner can run the binaries in
/// `bindir`: run as root, the tests start PostgreSQL as `postgres`, which
/// cannot enter a checkout in a mode-700 directory; initdb would then fail
/// with a bare "Permission denied".
pub fn check_runnable_as(bindir: &Path, ids: Option<(u32, u32)>) -> Result<()> {
    let mut probe = Command::new(bindir.join("initdb"));
    probe.arg("--version");
    if let Some((uid, gid)) = ids {
        probe.uid(uid).gid(gid);
    }
    match probe.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "{}/initdb --version failed: {}",
            bindir.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "the `postgres` user (PostgreSQL's owner when the tests run as root) cannot run {}: a directory on the way is closed to it (a checkout in a mode-700 directory?). Run scripts/setup-timescaledb.sh as root (it copies the build to QI_TSDB_SHARED_DIR, default /var/lib/qi-test, and records it), or set QI_TSDB_BINDIR to a copy `postgres` can reach",
            bindir.join("initdb").display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot run {}", bindir.join("initdb").display())),
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: the postmaster stops its
        // backends and reaps them. SIGKILL would orphan them.
        if let Some(p) = self._proc.take() {
            let _ = p.interrupt(std::time::Duration::from_secs(10));
        }
    }
}

impl PgServer {
    /// The local server's process (None with QI_TEST_DATABASE_URL), for
    /// benchmarks that read its CPU and memory.
    pub fn pid(&self) -> Option<u32> {
        self._proc.as_ref().map(Proc::pid)
    }

    /// Tier citus: the worker clusters' server processes (empty otherwise).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(PgServer::pid).collect()
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Tier citus: the workers' URLs, to look at the shards they hold
    /// (empty otherwise).
    pub fn worker_urls(&self) -> Vec<String> {
        self.workers.iter().map(PgServer::url).collect()
    }

    /// Points this handle at database `name` on the same server (one restored
    /// from a dump, say); the server's lifetime is unchanged.
    pub fn switch_database(&mut self, name: &str) -> Result<()> {
        let (head, tail) = self
            .url
            .rsplit_once('/')
            .context("database URL without a database part")?;
        let params = tail
            .split_once('?')
            .map(|(_, p)| format!("?{p}"))
            .unwrap_or_default();
        self.url = format!("{head}/{name}{params}");
        Ok(())
    }

    pub async fn start() -> Result<PgServer> {
        if let Ok(base) = std::env::var("QI_TEST_DATABASE_URL") {
            return Self::fresh_database(&base).await;
        }
        let tier = test_tier();
        let (bindir, preload) = match tier.as_str() {
            "none" => (pg_bindir()?, Preload::Nothing),
            "apache" => (apache_bindir()?, Preload::Timescaledb),
            "citus" => return Self::start_citus(citus_workers()?).await,
            "timescale" => return Self::start_pglite().await,
            other => bail!("QI_TEST_TIER must be none, apache, citus or timescale, not {other:?}"),
        };
        Self::start_local(bindir, preload, None).await
    }

    /// [`PgServer::start`] listening on `addr` too (beside 127.0.0.1), with
    /// trust for clients in `clients` (a CIDR): for a hub in another network
    /// namespace ([`crate::netns`]). Tiers none and apache only.
    pub async fn start_also_on(addr: std::net::Ipv4Addr, clients: &str) -> Result<PgServer> {
        if std::env::var_os("QI_TEST_DATABASE_URL").is_some() {
            bail!("a cluster on another address cannot be given by QI_TEST_DATABASE_URL");
        }
        let (bindir, preload) = match test_tier().as_str() {
            "none" => (pg_bindir()?, Preload::Nothing),
            "apache" => (apache_bindir()?, Preload::Timescaledb),
            other => bail!("listening on another address: tiers none and apache only, not {other}"),
        };
        Self::start_local(bindir, preload, Some((addr, clients))).await
    }

    /// [`PgServer::url`] with `addr` for the host (see [`PgServer::start_also_on`]).
    pub fn url_via(&self, addr: std::net::Ipv4Addr) -> String {
        self.url.replacen("@127.0.0.1:", &format!("@{addr}:"), 1)
    }

    async fn start_local(
        bindir: PathBuf,
        preload: Preload,
        also: Option<(std::net::Ipv4Addr, &str)>,
    ) -> Result<PgServer> {
        let dir = tempfile::Builder::new().prefix("qi-pg-").tempdir()?;
        let data = dir.path().join("data");
        let sock = dir.path().to_path_buf();
        // PostgreSQL refuses to run as root: drop to the `postgres` user then.
        let ids = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")?
                .context("running as root and there is no `postgres` user to run PostgreSQL as")?;
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        check_runnable_as(&bindir, ids)?;
        let as_owner = |cmd: &mut Command| {
            if let Some((uid, gid)) = ids {
                cmd.uid(uid).gid(gid);
            }
        };
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb.args(["-D"]).arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]);
        as_owner(&mut initdb);
        let out = initdb.output().context("cannot run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut listen = "127.0.0.1".to_string();
        if let Some((addr, clients)) = also {
            listen.push_str(&format!(",{addr}"));
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))?
                .write_all(format!("host all all {clients} trust\n").as_bytes())?;
        }
        let port = crate::free_port();
        let local = Local {
            bindir,
            preload,
            data,
            sock,
            port,
            ids,
            log: dir.path().join("postgres.log"),
            listen,
        };
        let proc = local.spawn()?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let server = PgServer {
            url,
            local: Some(local),
            _proc: Some(proc),
            _dir: Some(dir),
            workers: Vec::new(),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let url = self.url.clone();
        crate::wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    use sqlx::Connection;
                    Ok(sqlx::PgConnection::connect(&url).await.ok().map(|_| ()))
                }
            },
        )
        .await
    }

    /// Stops the local cluster (fast shutdown: open transactions roll back,
    /// clients are disconnected), keeps it down for `down_for`, starts it again.
    pub async fn restart(&mut self, down_for: Duration) -> Result<()> {
        self.stop()?;
        tokio::time::sleep(down_for).await;
        self.start_again().await
    }

    /// Stops the local cluster (fast shutdown); [`PgServer::start_again`] brings it back.
    pub fn stop(&mut self) -> Result<()> {
        if self.local.is_none() {
            bail!("cannot stop a server given by QI_TEST_DATABASE_URL");
        }
        if let Some(p) = self._proc.take() {
            p.interrupt(Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Starts the stopped local cluster again and waits until it accepts connections.
    pub async fn start_again(&mut self) -> Result<()> {
        let Some(local) = &self.local else {
            bail!("cannot start a server given by QI_TEST_DATABASE_URL");
        };
        if self._proc.is_none() {
            self._proc = Some(local.spawn()?);
        }
        self.wait_ready().await
    }

    /// PGlite with TimescaleDB on a free port, in memory.
    async fn start_pglite() -> Result<PgServer> {
        let server = std::env::var_os("QI_PGLITE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join("target/pglite"))
            .join("server.mjs");
        if !server.is_file() {
            bail!(
                "QI_TEST_TIER=timescale needs {}; run scripts/setup-pglite.sh",
                server.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("qi-pglite-").tempdir()?;
        let port = crate::free_port();
        let mut node = Command::new("node");
        node.arg(&server).arg(port.to_string());
        let proc = Proc::spawn_cmd("pglite", &mut node, &dir.path().join("pglite.log"))?;
        let server = PgServer {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
            local: None,
            _proc: Some(proc),
            _dir: Some(dir),
            workers: Vec::new(),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn fresh_database(base: &str) -> Result<PgServer> {
        use sqlx::Connection;
        // The pid and a port alone repeat across runs (pids are reused, and the
        // port counter is seeded by the pid); the clock makes the name new.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "qi_test_{}_{}_{nanos}",
            std::process::id(),
            crate::free_port()
        );
        let mut conn = sqlx::PgConnection::connect(base)
            .await
            .with_context(|| "cannot connect to QI_TEST_DATABASE_URL")?;
        // `name` is built from digits and a fixed prefix only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let url = match base.rsplit_once('/') {
            Some((head, tail)) => {
                let params = tail
                    .split_once('?')
                    .map(|(_, p)| format!("?{p}"))
                    .unwrap_or_default();
                format!("{head}/{name}{params}")
            }
            None => bail!("QI_TEST_DATABASE_URL {base:?} has no database part"),
        };
        Ok(PgServer {
            url,
            local: None,
            _proc: None,
            _dir: None,
            workers: Vec::new(),
        })
    }
}
