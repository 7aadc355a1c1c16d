//! Shell blocks of the documentation, run as written: a fenced ```` ```sh ````
//! block right after a line `<!-- e2e: NAME -->` in a doc is what a test runs
//! (docs/backup.md), so the commands an operator copies are the ones tested.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// The body of the `sh` block marked `<!-- e2e: name -->` in `doc`
/// (a path relative to the workspace root).
pub fn block(doc: &str, name: &str) -> Result<String> {
    let path = crate::workspace_root().join(doc);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let marker = format!("<!-- e2e: {name} -->");
    let after = text
        .split_once(&marker)
        .with_context(|| format!("{doc} has no block marked {marker:?}"))?
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .with_context(|| format!("{doc}: {marker:?} is not followed by a ```sh block"))?;
    let end = body
        .find("\n```")
        .with_context(|| format!("{doc}: the block after {marker:?} does not end"))?;
    Ok(body[..end + 1].to_string())
}

/// Runs `script` with `bash -euo pipefail`, `path_dirs` first on `PATH` and
/// `env` set; returns its standard output, or an error with both outputs.
pub fn run(script: &str, path_dirs: &[&Path], env: &[(&str, String)]) -> Result<String> {
    let mut path = std::env::join_paths(path_dirs)?;
    if let Some(old) = std::env::var_os("PATH") {
        let mut joined = path.clone();
        joined.push(":");
        joined.push(old);
        path = joined;
    }
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("cannot run bash")?;
    if !out.status.success() {
        bail!(
            "documented commands failed ({}):\n{script}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`block`] then [`run`].
pub fn run_block(
    doc: &str,
    name: &str,
    path_dirs: &[&Path],
    env: &[(&str, String)],
) -> Result<String> {
    run(&block(doc, name)?, path_dirs, env).with_context(|| format!("{doc}, block {name}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_marked_block_of_backup_md_is_found() {
        for name in [
            "hub-dump",
            "hub-restore-none",
            "hub-check",
            "agent-backup",
            "agent-restore",
            "agent-move",
        ] {
            let b = super::block("docs/backup.md", name).expect(name);
            assert!(!b.trim().is_empty() && !b.contains("```"), "{name}: {b}");
        }
    }
}
