//! Issue #12, edge: local users, sessions, CSRF, the permission table, the
//! login limit, the metrics token and HTTPS, against the real agent binary
//! with real sockets (no hub needed: these are the gateway's own rules).
// qi-test: tier-independent (the agent's own rules; no hub): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::agent_auth;
use e2e_tests::{Stack, wait_for};
use edge_agent::identity::Role;
use edge_agent::local_api::{Access, PERMISSIONS};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const VIEWER: (&str, &str) = ("vera", "viewer password");

type Headers = Vec<(String, String)>;

/// A stack with one writable device (`chamber`: a Binder MK53 on the
/// simulator, setpoint `temperature_setpoint`) and `auth` keys.
async fn chamber_stack(auth: &str) -> Result<Stack> {
    let mut stack = Stack::edge_only()?;
    stack.start_sim_with("binder-mk53", &["--constant"]).await?;
    let cfg = stack.agent_config_with(&format!(
        "[auth]\n{auth}\n\n[[devices]]\nid = \"chamber\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"127.0.0.1:{}\" }}\npoll_interval_ms = 200\n",
        stack.sim_port
    ))?;
    stack.start_agent(&cfg).await?;
    Ok(stack)
}

fn config(stack: &Stack) -> std::path::PathBuf {
    stack.dir.path().join("agent.toml")
}

/// Sends `method path` with these headers (and the write body for POSTs).
async fn call(
    stack: &Stack,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<(StatusCode, Value)> {
    let path = path.replace("{id}", "chamber").replace("{file}", "app.js");
    let url = format!("{}{}", stack.agent_url(), path);
    let client = reqwest::Client::new();
    let mut rb = match method {
        "GET" => client.get(&url),
        _ => client
            .post(&url)
            .json(&json!({"point": "temperature_setpoint", "value": 31.5})),
    };
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    let r = rb.send().await.with_context(|| format!("{method} {url}"))?;
    let status = r.status();
    // The live stream never ends: its status is the answer.
    if path == "/api/v1/live" && status.is_success() {
        return Ok((status, Value::Null));
    }
    let text = r.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// Audit events waiting in the buffer's high lane, and device writes done,
/// read with `session` (a test's own, fresh one: the harness's may have
/// idled out where `session_idle_s` is short and the machine is slow).
async fn written(stack: &Stack, session: &Headers) -> Result<(u64, f64)> {
    let (_, h) = call(stack, "GET", "/health", session).await?;
    let audit = h["buffer"]["backlog_high"]
        .as_u64()
        .with_context(|| format!("backlog_high in {h}"))?;
    let (_, text) = call(stack, "GET", "/metrics", session).await?;
    let text = text.as_str().unwrap_or_default();
    let writes = text
        .lines()
        .filter(|l| l.starts_with("edge_writes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok((audit, writes))
}

/// What an allowed caller gets from `call` (the write body, `{id}` =
/// "chamber"): OK, except on run routes, where that body is malformed and
/// "chamber" is no run. Past authorization either way.
fn allowed(method: &str, path: &str) -> StatusCode {
    match (method, path) {
        ("POST", "/api/v1/runs") | ("POST", "/api/v1/runs/{id}/abort") => StatusCode::BAD_REQUEST,
        ("GET", "/api/v1/runs/{id}") => StatusCode::NOT_FOUND,
        // No `?device=`: past authorization, refused as a bad query.
        ("GET", "/api/v1/history") => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

fn is_error_body(b: &Value) -> bool {
    b["error"].is_string() && b["message"].is_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_no_credentials_a_viewer_and_an_operator() -> Result<()> {
    let stack = chamber_stack("").await?;
    // Added while the agent runs: it reads the users file again on login.
    agent_auth::add_user(&config(&stack), VIEWER.0, "viewer", VIEWER.1)?;
    let base = stack.agent_url();
    let viewer = agent_auth::login(&base, VIEWER.0, VIEWER.1).await?;
    let operator = agent_auth::login(&base, agent_auth::USER, agent_auth::PASSWORD).await?;
    let callers: [(&str, Option<Role>, Headers); 3] = [
        ("nobody", None, vec![]),
        ("viewer", Some(Role::Viewer), viewer.headers()),
        ("operator", Some(Role::Operator), operator.headers()),
    ];
    let mut walked = 0;
    for (method, path, access) in PERMISSIONS {
        // Login and logout change the session itself: their own tests below.
        if path.ends_with("/login") || path.ends_with("/logout") {
            continue;
        }
        for (who, role, headers) in &callers {
            let (status, body) = call(&stack, method, path, headers).await?;
            let expect = match (access, role) {
                (Access::Open, _) => StatusCode::OK,
                (_, None) => StatusCode::UNAUTHORIZED,
                (Access::Scrape, Some(_)) => StatusCode::OK,
                (Access::Role(need), Some(r)) if r < need => StatusCode::FORBIDDEN,
                (Access::Role(_), Some(_)) => allowed(method, path),
            };
            assert_eq!(status, expect, "{who}: {method} {path}: {body}");
            if !status.is_success() {
                assert!(is_error_body(&body), "{who}: {method} {path}: {body}");
            }
            walked += 1;
        }
    }
    assert_eq!(walked, 3 * (PERMISSIONS.len() - 2));
    // /health without a session: its status only, nothing about the site.
    let (_, open) = call(&stack, "GET", "/health", &[]).await?;
    assert_eq!(open.as_object().map(|o| o.len()), Some(1), "{open}");
    let (_, full) = call(&stack, "GET", "/health", &viewer.headers()).await?;
    assert_eq!(full["devices"][0]["device_id"], "chamber", "{full}");
    // The operator's write reached the device and was audited (the harness's,
    // the viewer's and the operator's logins, and the write).
    let (audit, writes) = written(&stack, &viewer.headers()).await?;
    assert_eq!((audit, writes), (4, 1.0));
    // Plain HTTP: the cookie is HttpOnly and SameSite=Strict, not Secure.
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(viewer.set_cookie.contains(attr), "{}", viewer.set_cookie);
    }
    assert!(
        !viewer.set_cookie.contains("Secure"),
        "{}",
        viewer.set_cookie
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_foreign_and_csrf_less_requests_write_nothing() -> Result<()> {
    let stack = chamber_stack("session_idle_s = 4\nsession_max_s = 3600").await?;
    agent_auth::add_user(&config(&stack), VIEWER.0, "viewer", VIEWER.1)?;
    let base = stack.agent_url();
    let viewer = agent_auth::login(&base, VIEWER.0, VIEWER.1).await?;
    let op = agent_auth::login(&base, agent_auth::USER, agent_auth::PASSWORD).await?;
    let write = "/api/v1/devices/{id}/write";
    let before = written(&stack, &op.headers()).await?;
    let h = |cookie: &str, csrf: Option<&str>| {
        let mut v = vec![("cookie".to_string(), cookie.to_string())];
        if let Some(c) = csrf {
            v.push(("x-csrf-token".into(), c.to_string()));
        }
        v
    };
    let forged = "qi_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let cases: Vec<(&str, Headers, StatusCode, &str)> = vec![
        (
            "viewer's write",
            viewer.headers(),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "forged cookie",
            h(forged, Some(&op.csrf)),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "no CSRF token",
            h(&op.cookie, None),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "wrong CSRF token",
            h(&op.cookie, Some("x")),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        // The viewer's CSRF token with the operator's cookie: tokens are per session.
        (
            "another session's CSRF",
            h(&op.cookie, Some(&viewer.csrf)),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        // The operator's token with the viewer's cookie is still the viewer.
        (
            "other user's cookie",
            h(&viewer.cookie, Some(&op.csrf)),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (what, headers, status, kind) in cases {
        let (s, body) = call(&stack, "POST", write, &headers).await?;
        assert_eq!(
            (s, body["error"].as_str()),
            (status, Some(kind)),
            "{what}: {body}"
        );
        assert!(is_error_body(&body), "{what}: {body}");
    }
    assert_eq!(
        written(&stack, &op.headers()).await?,
        before,
        "a refused request wrote or audited something"
    );
    // Idle past session_idle_s: the cookie no longer works, even for reads.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (s, body) = call(&stack, "GET", "/api/v1/devices", &op.headers()).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("expired"),
        "{body}"
    );
    // Logout revokes: the cookie is dead afterwards, and logout needs the CSRF token too.
    let op = agent_auth::login(&base, agent_auth::USER, agent_auth::PASSWORD).await?;
    let (s, _) = call(&stack, "POST", "/api/v1/logout", &h(&op.cookie, None)).await?;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&stack, "POST", "/api/v1/logout", &op.headers()).await?;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&stack, "GET", "/api/v1/devices", &op.headers()).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Removing a user ends their sessions at once, without a restart.
    let viewer = agent_auth::login(&base, VIEWER.0, VIEWER.1).await?;
    let out = std::process::Command::new(e2e_tests::bin("edge-agent")?)
        .arg("--config")
        .arg(config(&stack))
        .args(["user", "remove", VIEWER.0])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, body) = call(&stack, "GET", "/api/v1/devices", &viewer.headers()).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let log = stack.agent.as_ref().context("agent")?.log_text();
    for secret in [agent_auth::PASSWORD, VIEWER.1, &op.csrf, &op.cookie[11..]] {
        assert!(!log.contains(secret), "a secret is in the log");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_stopped_per_address_and_counted() -> Result<()> {
    let stack = chamber_stack("login_max_failures = 3\nlogin_window_s = 60").await?;
    let base = stack.agent_url();
    for _ in 0..3 {
        let e = agent_auth::login(&base, agent_auth::USER, "guess")
            .await
            .err();
        assert!(format!("{e:?}").contains("401"), "{e:?}");
    }
    // Now even the right password is refused from this address, with Retry-After.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": agent_auth::USER, "password": agent_auth::PASSWORD}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .context("Retry-After")?
        .to_str()?
        .parse()?;
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await?;
    assert_eq!(body["error"], "rate_limited", "{body}");
    // Another address is not braked (all of 127/8 is this host's loopback).
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()?;
    agent_auth::login_with(&other, &base, agent_auth::USER, agent_auth::PASSWORD).await?;
    // The harness's session (logged in before) still works: only logins are braked.
    let text = e2e_tests::http::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    for (line, want) in [
        ("edge_auth_logins_total{result=\"bad_credentials\"}", " 3"),
        ("edge_auth_logins_total{result=\"rate_limited\"}", " 1"),
        ("edge_audit_events_total{action=\"login_failed\"}", " 3"),
    ] {
        let l = text
            .lines()
            .find(|l| l.starts_with(line))
            .with_context(|| line.to_string())?;
        assert!(l.ends_with(want), "{l}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_users_every_protected_route_refuses_and_the_log_says_how_to_add_one() -> Result<()>
{
    let mut stack = Stack::edge_only()?;
    let cfg = stack.agent_config_with("")?;
    stack.agent = Some(e2e_tests::Proc::spawn(
        "edge-agent",
        &e2e_tests::bin("edge-agent")?,
        &["--config".as_ref(), cfg.as_os_str()],
        &stack.log_path("agent"),
    )?);
    let health = format!("{}/health", stack.agent_url());
    wait_for("agent /health", Duration::from_secs(20), || async {
        Ok(reqwest::get(&health)
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ()))
    })
    .await?;
    for (method, path, access) in PERMISSIONS {
        if *access == Access::Open {
            continue;
        }
        let (s, body) = call(&stack, method, path, &[]).await?;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains("user add"),
            "{body}"
        );
    }
    let e = agent_auth::login(&stack.agent_url(), "admin", "admin")
        .await
        .err();
    assert!(format!("{e:?}").contains("no_users"), "{e:?}");
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert_eq!(log.matches("no local users").count(), 1, "{log}");
    assert!(log.contains("user add NAME --role"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_metrics_with_the_configured_token_only() -> Result<()> {
    use sha2::Digest;
    let token = "scrape-token-for-prometheus";
    let hash: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stack = chamber_stack(&format!("metrics_token_sha256 = \"{hash}\"")).await?;
    let bearer = |t: &str| vec![("authorization".to_string(), format!("Bearer {t}"))];
    let (s, body) = call(&stack, "GET", "/metrics", &bearer(token)).await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body.as_str().unwrap_or("").contains("edge_buffer_backlog"));
    let (s, body) = call(&stack, "GET", "/metrics", &bearer("wrong")).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // The token opens /metrics only.
    let (s, _) = call(&stack, "GET", "/api/v1/devices", &bearer(token)).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    Ok(())
}

/// HTTPS with a certificate made at test time; curl (a TLS client nobody
/// here wrote) logs in and sees the cookie marked Secure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_configured_certificate_and_secure_cookies() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let ca = e2e_tests::pki::TestCa::new(&dir, "gateway-web")?;
    let leaf = ca.issue(&dir, "gateway-web", &["localhost", "127.0.0.1"])?;
    let cfg = stack.agent_config_with("")?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        "[http]\n",
        &format!(
            "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            leaf.cert.display(),
            leaf.key.display()
        ),
    );
    std::fs::write(&cfg, text)?;
    agent_auth::add_user(&cfg, agent_auth::USER, "operator", agent_auth::PASSWORD)?;
    stack.agent = Some(e2e_tests::Proc::spawn(
        "edge-agent",
        &e2e_tests::bin("edge-agent")?,
        &["--config".as_ref(), cfg.as_os_str()],
        &stack.log_path("agent"),
    )?);
    let base = format!("https://localhost:{}", stack.agent_http_port);
    let curl = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-i", "--cacert"])
            .arg(&ca.cert_path)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let health = format!("{base}/health");
    wait_for("agent over HTTPS", Duration::from_secs(20), || async {
        Ok(curl(&[&health]).ok())
    })
    .await
    .with_context(|| stack.logs())?;
    let body = format!(
        "{{\"username\":\"{}\",\"password\":\"{}\"}}",
        agent_auth::USER,
        agent_auth::PASSWORD
    );
    let login = curl(&[
        "-H",
        "content-type: application/json",
        "--data",
        &body,
        &format!("{base}/api/v1/login"),
    ])?;
    let cookie_line = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .with_context(|| login.clone())?;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(cookie_line.contains(attr), "{cookie_line}");
    }
    let cookie = cookie_line
        .split_once(':')
        .and_then(|(_, v)| v.trim().split(';').next())
        .context("cookie")?;
    let devices = curl(&[
        "-H",
        &format!("cookie: {cookie}"),
        &format!("{base}/api/v1/devices"),
    ])?;
    assert!(devices.starts_with("HTTP/1.1 200"), "{devices}");
    // Plain HTTP on the TLS port gets no API answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/health", stack.agent_http_port)).await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    // A client that does not trust the certificate is refused by TLS itself.
    let untrusted = std::process::Command::new("curl")
        .args(["-sS", &health])
        .output()?;
    assert!(!untrusted.status.success());
    Ok(())
}

/// Sessions live in the agent's memory: a restart ends them (docs/security.md
/// says why); the users file survives, so logging in again works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_sessions_but_keeps_users() -> Result<()> {
    let mut stack = chamber_stack("").await?;
    let base = stack.agent_url();
    let before = agent_auth::login(&base, agent_auth::USER, agent_auth::PASSWORD).await?;
    let (s, _) = call(&stack, "GET", "/api/v1/devices", &before.headers()).await?;
    assert_eq!(s, StatusCode::OK);
    stack
        .agent
        .take()
        .context("agent")?
        .terminate(Duration::from_secs(10))?;
    stack.start_agent(&config(&stack)).await?;
    let (s, body) = call(&stack, "GET", "/api/v1/devices", &before.headers()).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let after = agent_auth::login(&base, agent_auth::USER, agent_auth::PASSWORD).await?;
    let (s, _) = call(&stack, "GET", "/api/v1/devices", &after.headers()).await?;
    assert_eq!(s, StatusCode::OK);
    Ok(())
}
