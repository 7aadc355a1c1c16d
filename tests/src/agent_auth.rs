//! The agent's local API needs a login: the harness adds a local user with
//! the real `edge-agent user add` before the agent starts, logs in once it
//! answers, and registers the session (cookie and CSRF header) for the
//! agent's base URL, so every `http::get` / `http::Client` request carries
//! it. Sessions live in the agent's memory, so the harness logs in again
//! after every (re)start.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The user the harness logs in as (an operator: tests write points).
pub const USER: &str = "e2e-operator";
pub const PASSWORD: &str = "e2e operator password";

/// `edge-agent --config CONFIG user add NAME --role ROLE`, password on stdin.
/// A user already there (an agent restarted on the same config) is fine.
pub fn add_user(config: &Path, name: &str, role: &str, password: &str) -> Result<()> {
    add_user_with(&crate::bin("edge-agent")?, config, name, role, password)
}

/// [`add_user`] with a given `edge-agent` binary (the benchmarks' release build).
pub fn add_user_with(
    binary: &Path,
    config: &Path,
    name: &str,
    role: &str,
    password: &str,
) -> Result<()> {
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(["user", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run edge-agent user add")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !err.contains("exists already") {
        bail!("edge-agent user add {name}: {}\n{err}", out.status);
    }
    Ok(())
}

/// A logged-in session: the headers that carry it.
pub struct Login {
    pub cookie: String,
    pub csrf: String,
    /// The whole `Set-Cookie` value, for tests of its attributes.
    pub set_cookie: String,
}

impl Login {
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("cookie".into(), self.cookie.clone()),
            ("x-csrf-token".into(), self.csrf.clone()),
        ]
    }
}

/// `POST {base}/api/v1/login` with `client`; errors unless it answers 200.
pub async fn login_with(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> Result<Login> {
    let r = client
        .post(format!("{base}/api/v1/login"))
        .json(&serde_json::json!({"username": name, "password": password}))
        .send()
        .await
        .with_context(|| format!("POST {base}/api/v1/login"))?;
    let status = r.status();
    let set_cookie = r
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: serde_json::Value = r.json().await.context("login answer is not JSON")?;
    if status != 200 {
        bail!("login as {name}: {status} {body}");
    }
    let cookie = set_cookie
        .split(';')
        .next()
        .filter(|c| c.starts_with("qi_session="))
        .with_context(|| format!("no session cookie in {set_cookie:?}"))?
        .to_string();
    let csrf = body["csrf_token"]
        .as_str()
        .context("no csrf_token in the login answer")?
        .to_string();
    Ok(Login {
        cookie,
        csrf,
        set_cookie,
    })
}

pub async fn login(base: &str, name: &str, password: &str) -> Result<Login> {
    login_with(&reqwest::Client::new(), base, name, password).await
}

/// Logs in as [`USER`] and registers the session for `base`.
pub async fn login_and_remember(base: &str) -> Result<()> {
    let l = login(base, USER, PASSWORD).await?;
    crate::http::remember(base, l.headers());
    Ok(())
}
