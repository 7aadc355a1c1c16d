//! Several hubs over one database: more hub processes next to the Stack's
//! own (each on its own ports and config directory), and HAProxy in TCP mode
//! in front of them (Debian `haproxy`, from scripts/setup-test-peers.sh).

use crate::netns::Netns;
use crate::process::Proc;
use crate::{HubLaunch, Stack, bin, free_port, get_json, wait_for};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A hub process beside the Stack's own.
pub struct Replica {
    pub name: String,
    pub proc: Option<Proc>,
    pub grpc_port: u16,
    pub http_port: u16,
    /// Where it listens: 127.0.0.1, or a namespace's address.
    pub host: String,
}

impl Replica {
    /// Starts hub `name` over the Stack's database with `[database]` keys
    /// `database` and tables `after`; waits for its `/ready`.
    pub async fn start(stack: &Stack, name: &str, database: &str, after: &str) -> Result<Replica> {
        Self::launch(stack, name, database, "", after, None).await
    }

    /// [`Replica::start`] inside `ns`, over the database at the host end's
    /// address (the cluster must listen there: [`crate::PgServer::start_also_on`]),
    /// with `[grpc]` keys `grpc`: a routable listen address needs gateway
    /// authentication (`auth = "token"` and its `[grpc.tokens]`).
    pub async fn start_in(
        stack: &Stack,
        name: &str,
        (database, grpc, after): (&str, &str, &str),
        ns: &Netns,
    ) -> Result<Replica> {
        Self::launch(stack, name, database, grpc, after, Some(ns)).await
    }

    async fn launch(
        stack: &Stack,
        name: &str,
        database: &str,
        grpc: &str,
        after: &str,
        ns: Option<&Netns>,
    ) -> Result<Replica> {
        let dir = stack.dir.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let (grpc_port, http_port) = (free_port(), free_port());
        let pg_url = match (ns, &stack.pg) {
            (Some(ns), Some(pg)) => pg.url_via(ns.host_addr),
            _ => stack.pg_url()?,
        };
        let launch = HubLaunch {
            binary: bin("cloud-hub")?,
            pg_url: &pg_url,
            grpc_port,
            http_port,
            database,
            grpc,
            after,
            args: &[],
            dir: &dir,
            log: &stack.log_path(name),
        };
        let proc = match ns {
            Some(ns) => launch.start_in(ns).await?,
            None => launch.start().await?,
        };
        Ok(Replica {
            name: name.to_string(),
            proc: Some(proc),
            grpc_port,
            http_port,
            host: ns.map_or_else(|| "127.0.0.1".into(), |n| n.ns_addr.to_string()),
        })
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}:{}", self.host, self.grpc_port)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}:{}", self.host, self.http_port)
    }

    /// `/ready`'s `leader` field: leader, follower or always.
    pub async fn leader_role(&self) -> Result<String> {
        let (_, body) = get_json(&format!("{}/ready", self.http_url())).await?;
        Ok(body["leader"].as_str().unwrap_or_default().to_string())
    }

    /// `hub_gateways_connected` from the hub's `/metrics`.
    pub async fn gateways_connected(&self) -> Result<f64> {
        let text = crate::http::get(format!("{}/metrics", self.http_url()))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("hub_gateways_connected "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }

    pub fn kill9(&mut self) -> Result<()> {
        self.proc.take().context("hub already stopped")?.kill9()
    }

    pub fn log_tail(&self) -> String {
        match &self.proc {
            Some(p) => format!("\n----- {} -----\n{}", self.name, p.log_tail(60)),
            None => String::new(),
        }
    }
}

/// Debian's HAProxy binary (from scripts/setup-test-peers.sh).
pub fn haproxy_binary() -> Result<PathBuf> {
    let p = PathBuf::from(std::env::var_os("QI_HAPROXY").unwrap_or("/usr/sbin/haproxy".into()));
    if !p.exists() {
        bail!(
            "{} missing: run scripts/setup-test-peers.sh (installs Debian's haproxy)",
            p.display()
        );
    }
    Ok(p)
}

/// HAProxy in the foreground (`-db`), TCP mode, on a free port, balancing
/// over `backends` (gRPC ports) with health checks every 500 ms.
pub async fn haproxy(dir: &Path, backends: &[u16]) -> Result<(Proc, u16)> {
    let port = free_port();
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server hub{i} 127.0.0.1:{p} check inter 500 fall 2 rise 2\n"))
        .collect();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 256\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n\n\
             frontend grpc\n    bind 127.0.0.1:{port}\n    default_backend hubs\n\n\
             backend hubs\n    balance roundrobin\n    option redispatch\n    retries 2\n{servers}"
        ),
    )?;
    let proc = Proc::spawn(
        "haproxy",
        &haproxy_binary()?,
        &["-db".as_ref(), "-f".as_ref(), cfg.as_os_str()],
        &dir.join("haproxy.log"),
    )?;
    let addr = format!("127.0.0.1:{port}");
    wait_for("haproxy port", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())) }
    })
    .await
    .with_context(|| proc.log_tail(30))?;
    Ok((proc, port))
}
