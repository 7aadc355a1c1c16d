//! A network namespace joined to the host by a veth pair, for tests that
//! partition a process from the rest: the process runs inside
//! ([`Netns::command`]), reaches the host at [`Netns::host_addr`] and is
//! reached at [`Netns::ns_addr`]; [`Netns::cut`] sets the host end of the
//! pair down, so both sides' packets are dropped with no RST or FIN (a
//! pulled cable, as far as the two TCP stacks can tell), and
//! [`Netns::heal`] sets it up again.
//!
//! A userspace proxy cannot model this: the proxy's kernel would keep
//! answering the keepalives of the side it faces. Needs root (or
//! CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2; [`Netns::create`] fails
//! with the reason otherwise, for the test to print and skip.
//!
//! Names carry the creating process' id, so a run that was killed before
//! its guard dropped leaves namespaces the next run deletes
//! ([`remove_stale`]); deleting a namespace deletes its veth pair too.

use anyhow::{Context, Result, bail};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// Prefix of the namespaces this module makes: `qi-part-<pid>-<tag>`.
const PREFIX: &str = "qi-part-";

/// A namespace, its veth pair and a /30 between them; deleted on drop.
pub struct Netns {
    pub name: String,
    /// The host end of the pair.
    pub host_if: String,
    /// The host end's address: what processes inside connect to.
    pub host_addr: Ipv4Addr,
    /// The namespace end's address: where processes inside listen.
    pub ns_addr: Ipv4Addr,
    /// The namespace end of the pair (what [`Netns::cut`] sets down).
    ns_if: String,
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why a namespace cannot be made here (None: it can, probably).
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

/// Deletes the namespaces of earlier runs whose process is gone.
pub fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A tag for names and the subnet, different per call and per process.
fn tag() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id().wrapping_mul(2_654_435_761))
        .wrapping_add(N.fetch_add(1, Ordering::SeqCst).wrapping_mul(40_503))
}

impl Netns {
    /// Makes the namespace, the pair and the addresses (10.213.x.y/30, one
    /// no interface on the host has), with the pair and loopback up.
    pub fn create() -> Result<Netns> {
        if let Some(why) = unavailable() {
            bail!(why);
        }
        remove_stale();
        let t = tag();
        let taken = ip(&["-4", "-o", "addr", "show"])?;
        let mut base = t;
        let (host_addr, ns_addr) = loop {
            // 10.213.<octet>.<multiple of 4>: .1 host, .2 namespace.
            let net = Ipv4Addr::new(10, 213, (base >> 8) as u8, ((base & 0x3f) * 4) as u8);
            let [a, b, c, d] = net.octets();
            let (h, n) = (Ipv4Addr::new(a, b, c, d + 1), Ipv4Addr::new(a, b, c, d + 2));
            if !taken.contains(&format!(" {a}.{b}.{c}.")) {
                break (h, n);
            }
            base = base.wrapping_add(0x100);
            if base.wrapping_sub(t) > 0x10000 {
                bail!("no free 10.213.x.0/24 for the test's veth pair");
            }
        };
        let suffix = format!("{:06x}", t & 0xff_ffff);
        let me = Netns {
            name: format!("{PREFIX}{}-{suffix}", std::process::id()),
            host_if: format!("qp{suffix}h"),
            ns_addr,
            host_addr,
            ns_if: format!("qp{suffix}n"),
        };
        let ns_if = me.ns_if.clone();
        ip(&["netns", "add", &me.name])?;
        // From here on, a failure drops `me`, which deletes what exists.
        ip(&[
            "link",
            "add",
            &me.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &me.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/30"),
            "dev",
            &me.host_if,
        ])?;
        ip(&["link", "set", &me.host_if, "up"])?;
        me.exec_ip(&["addr", "add", &format!("{ns_addr}/30"), "dev", &ns_if])?;
        me.exec_ip(&["link", "set", &ns_if, "up"])?;
        me.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(me)
    }

    fn exec_ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The /30 of the pair (both ends), in CIDR notation.
    pub fn subnet(&self) -> String {
        let [a, b, c, d] = self.host_addr.octets();
        format!("{a}.{b}.{c}.{}/30", d - 1)
    }

    /// `program` run inside the namespace (`ip netns exec`, which execs it:
    /// the child's pid is the program's, so signals reach it).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Partitions the namespace: its end of the pair goes down (see the
    /// module doc); packets either way are dropped.
    pub fn cut(&self) -> Result<()> {
        self.exec_ip(&["link", "set", &self.ns_if, "down"])
            .map(drop)
    }

    /// Joins the namespace to the host again (its routes come back with the link).
    pub fn heal(&self) -> Result<()> {
        self.exec_ip(&["link", "set", &self.ns_if, "up"]).map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the host end deletes its peer; deleting the namespace
        // would too, but a process still inside keeps it alive.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
