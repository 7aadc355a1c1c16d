//! Helpers for the benchmark binaries (`tests/src/bin/*_bench.rs`).

use crate::workspace_root;
use anyhow::{Result, bail};
use std::path::PathBuf;

/// A release binary of the workspace (benchmarks never measure debug builds).
pub fn release_bin(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("QI_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} missing: run the benchmark through its scripts/bench-*.sh (they build release binaries)",
            p.display()
        );
    }
    Ok(p)
}

/// Resident set size of a process, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
