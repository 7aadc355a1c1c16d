//! A real OpenID Connect issuer for the single sign-on tests: npm's
//! `oidc-provider` (installed by `scripts/setup-test-peers.sh`) run by
//! `tests/peers/oidc/issuer.mjs` on a free port.

use crate::peers::{peer_script, peers_dir};
use crate::process::Proc;
use crate::wait_for;
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The resource (audience) the hub's tokens are issued for.
pub const HUB_AUDIENCE: &str = "urn:qi:hub";
/// Another resource of the same issuer: its tokens are not for the hub.
pub const OTHER_AUDIENCE: &str = "urn:qi:other";

pub struct Issuer {
    pub port: u16,
    /// The issuer identifier (`iss` of its tokens).
    pub url: String,
    name: String,
    dir: PathBuf,
    config: PathBuf,
    secrets: BTreeMap<String, String>,
    proc: Option<Proc>,
    http: reqwest::Client,
}

/// A fresh random client secret (the repository holds none).
fn secret() -> Result<String> {
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Issuer {
    /// Starts the issuer on `port` with `clients`: JSON objects as
    /// `issuer.mjs` describes them, without `client_secret` (made up here).
    pub async fn start(dir: &Path, name: &str, port: u16, clients: &[Value]) -> Result<Issuer> {
        let mut secrets = BTreeMap::new();
        let mut with_secrets = Vec::new();
        for c in clients {
            let id = c["client_id"]
                .as_str()
                .context("client without client_id")?
                .to_string();
            let s = secret()?;
            let mut c = c.clone();
            c["client_secret"] = json!(s);
            secrets.insert(id, s);
            with_secrets.push(c);
        }
        let config = dir.join(format!("{name}.json"));
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&json!({
                "port": port,
                "resources": [HUB_AUDIENCE, OTHER_AUDIENCE],
                "clients": with_secrets,
            }))?,
        )?;
        let mut issuer = Issuer {
            port,
            url: format!("http://127.0.0.1:{port}"),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            config,
            secrets,
            proc: None,
            http: reqwest::Client::new(),
        };
        issuer.restart().await?;
        Ok(issuer)
    }

    /// Starts the process again (after [`Issuer::stop`]), with new keys.
    pub async fn restart(&mut self) -> Result<()> {
        let modules = peers_dir().join("node/oidc/node_modules");
        if !modules.join("oidc-provider").exists() {
            bail!(
                "{} missing: run scripts/setup-test-peers.sh (scripts/test.sh does)",
                modules.join("oidc-provider").display()
            );
        }
        let script = peer_script("oidc/issuer.mjs");
        let p = Proc::spawn(
            &self.name,
            Path::new("node"),
            &[
                script.as_os_str(),
                "--modules".as_ref(),
                modules.as_os_str(),
                "--config".as_ref(),
                self.config.as_os_str(),
            ],
            &self.dir.join(format!("{}.log", self.name)),
        )
        .context("node not installed? run scripts/setup-test-peers.sh")?;
        let url = format!("{}/.well-known/openid-configuration", self.url);
        let http = self.http.clone();
        // Some(false): the process exited (no point waiting on).
        let up = wait_for(&self.name, Duration::from_secs(30), || {
            let (p, url, http) = (&p, url.clone(), http.clone());
            async move {
                if p.exit_status()?.is_some() {
                    return Ok(Some(false));
                }
                let up = http.get(&url).send().await.is_ok_and(|r| r.status() == 200);
                Ok(up.then_some(true))
            }
        })
        .await?;
        if !up {
            bail!("{} exited: {}", self.name, p.log_tail(30));
        }
        self.proc = Some(p);
        Ok(())
    }

    /// Stops the process (the issuer becomes unreachable).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.proc.take() {
            p.kill9()?;
        }
        Ok(())
    }

    /// An access token for `client_id` with `resource` as its audience,
    /// through the real client-credentials grant.
    pub async fn token(&self, client_id: &str, resource: &str) -> Result<String> {
        let secret = self.secrets.get(client_id).context("unknown client")?;
        let resp = self
            .http
            .post(format!("{}/token", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={client_id}&client_secret={secret}&resource={}&scope=api",
                resource.replace(':', "%3A")
            ))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        ensure!(status == 200, "token for {client_id}: {status} {body}");
        Ok(body["access_token"]
            .as_str()
            .context("no access_token")?
            .to_string())
    }

    /// A new signing key for `alg` ("RS256", "ES256", "EdDSA") goes in front;
    /// returns its kid. The previous key stays published.
    pub async fn rotate(&self, alg: &str) -> Result<String> {
        let body = self.admin("rotate", &format!("alg={alg}")).await?;
        Ok(body["kid"].as_str().context("no kid")?.to_string())
    }

    /// Stops publishing the key `kid`.
    pub async fn retire(&self, kid: &str) -> Result<()> {
        self.admin("retire", &format!("kid={kid}"))
            .await
            .map(|_| ())
    }

    /// How often the key set (`/jwks`) has been fetched.
    pub async fn jwks_requests(&self) -> Result<u64> {
        let v: Value = self
            .http
            .get(format!("{}/admin/stats", self.url))
            .send()
            .await?
            .json()
            .await?;
        v["jwks_requests"].as_u64().context("no jwks_requests")
    }

    /// The published key set.
    pub async fn jwks(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/jwks", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn admin(&self, what: &str, query: &str) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}/admin/{what}?{query}", self.url))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        ensure!(status == 200, "{what}: {status} {body}");
        Ok(body)
    }

    pub fn log_tail(&self) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(40))
            .unwrap_or_default()
    }
}

/// The `kid` in a token's header.
pub fn kid_of(token: &str) -> Result<String> {
    use base64::Engine;
    let h = token.split('.').next().context("empty token")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h)?;
    let v: Value = serde_json::from_slice(&bytes)?;
    Ok(v["kid"].as_str().context("no kid")?.to_string())
}

/// Claims of a token from `iss` that would pass the hub's checks (admin of
/// every site), for tests that forge tokens.
pub fn forgeable_claims(iss: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({"iss": iss, "aud": HUB_AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 300,
           "roles": ["qi-admin"], "sites": ["*"]})
}

/// A JWT with `header` and `claims` and an empty signature (`alg: none`
/// style, or a token nobody can check yet).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    )
}
