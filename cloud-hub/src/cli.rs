//! The `cloud-hub` subcommands that act on the database directly, for the
//! operator on the hub's host: the first admin, API keys for scripts and
//! Prometheus, signing-key rotation, and the audit chain check. Each change
//! is audited with the operating-system user as actor (kind `cli`).

use crate::audit::{self, ActorKind, NewEntry};
use crate::config::Config;
use crate::identity::{Role, api_keys, passwords, signing::Signer, users};
use crate::storage::{Store, StoreOptions};
use anyhow::{Context, Result, bail};
use chrono::Utc;
use serde_json::json;
use std::time::Duration;

async fn store(cfg: &Config) -> Result<Store> {
    if cfg.database.url.is_empty() {
        bail!(
            "no database URL: set database.url in the config file, QI_HUB_DATABASE_URL, or --database-url"
        );
    }
    Store::open(&StoreOptions {
        url: cfg.database.url.clone(),
        // At most two, and no more than the hub itself may open (PGlite serves one).
        max_connections: cfg.database.max_connections.min(2),
        connect_timeout: Duration::from_secs(cfg.database.connect_timeout_s),
        tier: cfg.database.tier,
        ingest: cfg.database.ingest,
        retention: cfg.retention,
    })
    .await
    .context("cannot open the database")
}

fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn user_add(cfg: &Config, name: &str, role: Role, sites: Vec<String>) -> Result<()> {
    if !users::valid_username(name) {
        bail!("a username is 1-64 characters of letters, digits and ._@-");
    }
    let sites = (!sites.is_empty()).then_some(sites);
    if !users::valid_sites(&sites) {
        bail!(
            "site ids are 1-{} printable characters",
            qi_proto::limits::MAX_ID_LEN
        );
    }
    let hash = passwords::hash(&read_password()?).await?;
    let store = store(cfg).await?;
    let mut tx = store.pool().begin().await?;
    let user = users::create(&mut tx, name, &hash, role, &sites).await?;
    audit::append_in(
        &mut tx,
        NewEntry::new(
            ActorKind::Cli,
            operator(),
            "user.create",
            format!("user:{name}"),
        )
        .after(json!(user)),
    )
    .await?;
    tx.commit().await?;
    println!("user {name} created with role {role}");
    Ok(())
}

pub async fn user_passwd(cfg: &Config, name: &str) -> Result<()> {
    let hash = passwords::hash(&read_password()?).await?;
    let store = store(cfg).await?;
    let mut tx = store.pool().begin().await?;
    let patch = users::Patch {
        password_hash: Some(hash),
        ..Default::default()
    };
    let Some((before, _)) = users::update(&mut tx, name, &patch).await? else {
        bail!("no user {name:?}");
    };
    audit::append_in(
        &mut tx,
        NewEntry::new(
            ActorKind::Cli,
            operator(),
            "user.update",
            format!("user:{name}"),
        )
        .before(json!(before))
        .after(json!({"password": "changed"})),
    )
    .await?;
    tx.commit().await?;
    println!("password of {name} changed; its sessions are revoked");
    Ok(())
}

pub async fn key_create(
    cfg: &Config,
    name: &str,
    role: Role,
    sites: Vec<String>,
    expires_in_days: Option<u32>,
) -> Result<()> {
    let sites = (!sites.is_empty()).then_some(sites);
    if !users::valid_sites(&sites) {
        bail!(
            "site ids are 1-{} printable characters",
            qi_proto::limits::MAX_ID_LEN
        );
    }
    let store = store(cfg).await?;
    let mut tx = store.pool().begin().await?;
    let expires = expires_in_days.map(|d| Utc::now() + chrono::Duration::days(i64::from(d)));
    let by = operator();
    let (key, secret) =
        api_keys::create(&mut tx, name, role, &sites, expires, &format!("cli:{by}")).await?;
    audit::append_in(
        &mut tx,
        NewEntry::new(
            ActorKind::Cli,
            by,
            "api_key.create",
            format!("api_key:{}", key.id),
        )
        .after(json!(key)),
    )
    .await?;
    tx.commit().await?;
    // The key alone on stdout, so scripts can capture it; the rest on stderr.
    eprintln!(
        "API key {} ({name}, role {role}) created; it is shown once:",
        key.id
    );
    println!("{secret}");
    Ok(())
}

pub async fn key_revoke(cfg: &Config, id: &str) -> Result<()> {
    let store = store(cfg).await?;
    let mut tx = store.pool().begin().await?;
    let Some(before) = api_keys::revoke(&mut tx, id).await? else {
        bail!("no API key {id:?}");
    };
    audit::append_in(
        &mut tx,
        NewEntry::new(
            ActorKind::Cli,
            operator(),
            "api_key.revoke",
            format!("api_key:{id}"),
        )
        .before(json!(before)),
    )
    .await?;
    tx.commit().await?;
    println!("API key {id} revoked");
    Ok(())
}

pub async fn signing_key_rotate(cfg: &Config) -> Result<()> {
    let store = store(cfg).await?;
    let a = &cfg.auth;
    let signer = Signer::load(
        store.pool().clone(),
        a.issuer.clone(),
        a.audience.clone(),
        Duration::from_secs(a.access_token_ttl_s),
        Duration::from_secs(a.signing_key_rotation_days.saturating_mul(86_400)),
    )
    .await?;
    let kid = signer.rotate(true).await?;
    audit::append(
        store.pool(),
        NewEntry::new(
            ActorKind::Cli,
            operator(),
            "signing_key.rotate",
            format!("signing_key:{kid}"),
        ),
    )
    .await?;
    println!(
        "new signing key {kid}; tokens signed by the previous key stay valid until they expire"
    );
    Ok(())
}

/// Exit status 0 when the chain holds, 1 with each problem printed when not.
pub async fn audit_verify(cfg: &Config) -> Result<bool> {
    let store = store(cfg).await?;
    let r = audit::verify(store.pool()).await?;
    for p in &r.problems {
        println!("TAMPERED: {p}");
    }
    match (&r.head, r.problems.is_empty()) {
        (_, false) => println!(
            "audit chain BROKEN: {} problem(s) in {} entries",
            r.problems.len(),
            r.entries
        ),
        (Some(h), true) => println!("audit chain intact: {} entries, head {h}", r.entries),
        (None, true) => println!("audit chain empty"),
    }
    Ok(r.problems.is_empty())
}

/// `cloud-hub certificate verify`: offline, no config, no database. Prints
/// what was checked; Ok(false) (exit status 1) with the reason when the
/// certificate does not verify.
pub fn certificate_verify(
    file: &std::path::Path,
    trust: &std::path::Path,
    revocations: Option<&std::path::Path>,
    log_head: Option<&std::path::Path>,
    at: Option<&str>,
) -> Result<bool> {
    use crate::certificates::{pki, verify};
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let bundle = read(file)?;
    let trusted = pki::certs_from_pem(&read(trust)?)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--trust {}", trust.display()))?;
    let revocations: Option<verify::SignedRevocations> = revocations
        .map(|p| -> Result<_> {
            serde_json::from_slice(&read(p)?).with_context(|| {
                format!(
                    "--revocations {}: not a revocation list as GET /api/v1/certificates/revocations serves it",
                    p.display()
                )
            })
        })
        .transpose()?;
    let head: Option<serde_json::Value> = log_head
        .map(|p| -> Result<_> {
            serde_json::from_slice(&read(p)?)
                .with_context(|| format!("--log-head {}: not JSON", p.display()))
        })
        .transpose()?;
    let now = match at {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("--at {t:?}: not an RFC 3339 time"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let o = verify::Options {
        trusted: &trusted,
        revocations: revocations.as_ref(),
        log_head: head.as_ref(),
        now,
    };
    match verify::verify_bundle(&bundle, &o) {
        Ok(v) => {
            println!(
                "VALID: {} ({} certificate of {}), issued {}, expires {}{}",
                v.id,
                v.kind,
                v.subject,
                v.issued_at,
                v.expires_at,
                if v.simulated { "; SIMULATED runs" } else { "" }
            );
            println!(
                "  XML signature and JWS verified; issuer {}",
                v.issuer_fingerprint
            );
            match &v.revocations_as_of {
                Some(t) => println!("  not revoked as of the signed list of {t}"),
                None => println!("  revocation NOT checked (no --revocations list)"),
            }
            match v.log {
                crate::certificates::log::LogStatus::NotChecked => {
                    println!("  transparency log NOT checked (no --log-head)")
                }
                crate::certificates::log::LogStatus::Included { index, tree_size } => {
                    println!(
                        "  in the transparency log at index {index} of the trusted head's {tree_size} entries"
                    )
                }
            }
            Ok(true)
        }
        Err(e) => {
            println!("INVALID ({}): {e}", e.reason());
            Ok(false)
        }
    }
}
