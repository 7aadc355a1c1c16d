//! Helpers of the certificate tests (issue #15): an issuing PKI generated
//! now (rcgen, ECDSA P-256; never committed), the hub's `[certificates]`
//! table for it, and the verifiers nobody here wrote (Debian's `xmlsec1`,
//! Python's jwcrypto) next to the hub's own offline command.

use crate::Stack;
use crate::grpc::{Client, exchange, hello};
use crate::hub_auth::call;
use crate::peers::{peer_script, python};
use crate::runs::{Run, stc};
use anyhow::{Context, Result, bail};
use qi_proto::v1::RunEventKind;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A CA and an issuing key with its certificate, as PEM files.
pub struct IssuingPki {
    pub ca: PathBuf,
    pub key: PathBuf,
    pub chain: PathBuf,
}

impl IssuingPki {
    pub fn new(dir: &Path, name: &str) -> Result<IssuingPki> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name
            .push(DnType::CommonName, format!("{name} certificate issuer"));
        let leaf = leaf.signed_by(&key, &ca)?;
        let pki = IssuingPki {
            ca: dir.join(format!("{name}-ca.pem")),
            key: dir.join(format!("{name}-issuer.key")),
            chain: dir.join(format!("{name}-issuer-chain.pem")),
        };
        std::fs::write(&pki.ca, ca.pem())?;
        std::fs::write(&pki.key, key.serialize_pem())?;
        std::fs::write(&pki.chain, format!("{}{}", leaf.pem(), ca.pem()))?;
        Ok(pki)
    }

    /// The hub's `[certificates]` table for this key, with `extra` keys.
    pub fn hub_table(&self, extra: &str) -> String {
        format!(
            "[certificates]\nkey_file = \"{}\"\nchain_file = \"{}\"\n{extra}\n",
            self.key.display(),
            self.chain.display()
        )
    }

    /// The issuing key, for re-signing a document in a test.
    pub fn issuing_key(&self) -> Result<cloud_hub::certificates::pki::IssuingKey> {
        cloud_hub::certificates::pki::IssuingKey::from_pem(
            &std::fs::read(&self.key)?,
            &std::fs::read(&self.chain)?,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn run(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Debian's `xmlsec1 --verify` of an enveloped signature, trusting `ca`.
pub fn xmlsec1_verify(xml: &Path, ca: &Path) -> Result<(bool, String)> {
    if Command::new("xmlsec1").arg("--version").output().is_err() {
        bail!("xmlsec1 missing: run scripts/setup-test-peers.sh (Debian package xmlsec1)");
    }
    run(Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(ca)
        .arg(xml))
}

/// jwcrypto (PyPI) verifying a detached JWS over `payload`, its x5c leaf
/// checked against `ca` (tests/peers/jws_verify.py).
pub fn jwcrypto_verify(jws: &Path, payload: &Path, ca: &Path) -> Result<(bool, String)> {
    run(Command::new(python()?)
        .arg(peer_script("jws_verify.py"))
        .arg(jws)
        .arg(payload)
        .arg(ca))
}

/// `cloud-hub certificate verify` with these arguments (no config, no
/// database): (exit 0, output).
pub fn offline_verify(bundle: &Path, ca: &Path, extra: &[&str]) -> Result<(bool, String)> {
    run(Command::new(crate::bin("cloud-hub")?)
        .args(["--config", "/nonexistent/hub.toml", "certificate", "verify"])
        .arg(bundle)
        .arg("--trust")
        .arg(ca)
        .args(extra))
}

/// The bytes of a GET with a bearer token.
pub async fn get_bytes(url: &str, token: &str) -> Result<Vec<u8>> {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await?;
    let s = r.status().as_u16();
    let b = r.bytes().await?.to_vec();
    if s != 200 {
        bail!("GET {url}: {s} {}", String::from_utf8_lossy(&b));
    }
    Ok(b)
}

// The certificate tests' run fixtures (tests/tests/certificates.rs).

pub const T0: i64 = 1_780_000_000_000_000;

pub fn uuid(n: u32) -> String {
    format!("5c3e1a2b-9f1d-4c3b-8a2e-{n:012x}")
}

pub async fn send(stack: &Stack, run: &Run) -> Result<()> {
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let (_, err) = exchange(&client, vec![hello("gw-cert"), run.all()]).await?;
    anyhow::ensure!(err.is_none(), "{err:?}");
    Ok(())
}

/// The run's latest evaluation once it satisfies `pred`.
pub async fn evaluated(
    url: &str,
    token: &str,
    run: &str,
    pred: fn(&Value) -> bool,
) -> Result<Value> {
    crate::wait_for(
        &format!("run {run} evaluated"),
        Duration::from_secs(30),
        || async {
            let (s, v) = call(
                Method::GET,
                &format!("{url}/api/v1/runs/{run}"),
                Some(token),
                None,
            )
            .await?;
            anyhow::ensure!(s == 200, "{v}");
            Ok(Some(v["evaluation"].clone()).filter(|e| !e.is_null() && pred(e)))
        },
    )
    .await
}

pub async fn login(url: &str, admin: &str, name: &str, role: &str) -> Result<String> {
    let pw = "certificate test password 1";
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/users"),
        Some(admin),
        Some(&json!({"username": name, "password": pw, "role": role})),
    )
    .await?;
    anyhow::ensure!(s == 201, "{v}");
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/auth/login"),
        None,
        Some(&json!({"username": name, "password": pw})),
    )
    .await?;
    anyhow::ensure!(s == 200, "{v}");
    Ok(v["access_token"].as_str().context("token")?.to_string())
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, bytes)?;
    Ok(p)
}

/// A bundle with its XML or JSON (and JWS) replaced.
pub fn bundle_with(b: &Value, key: &str, value: &str) -> Vec<u8> {
    let mut b = b.clone();
    b[key] = Value::String(value.to_string());
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The tc200 sequence of hub_runs.rs on one sample, not simulated: STC
/// before, TC200, STC after, insulation, an observation; the TC200 run's
/// verdict ends provisional (its visual inspection needs approval).
pub async fn provisional_tc200(stack: &Stack, pool: &sqlx::PgPool, sample: &str) -> Result<String> {
    let mut seq = 1000;
    let mut r = Run::new(&uuid(20), seq, T0 + 3_600_000_000);
    stc(&mut r, sample, 400.0, "erin")?;
    seq = r.seq;
    send(stack, &r).await?;
    let tc = uuid(21);
    let mut r = Run::new(&tc, seq, T0 + 7_200_000_000);
    r.start("tc200", sample, "erin", &[("area_m2", 1.6)], 1.0)?;
    r.event(RunEventKind::StepStarted, "0");
    for i in 0..400 {
        let t = if i % 2 == 0 { -41.0 } else { 86.0 };
        r.reading("module_temperature", "module", "temperature", "Cel", t)
            .reading("open_circuit", "bias", "open_circuit", "1", 0.0);
    }
    r.event(RunEventKind::StepFinished, "0")
        .event(RunEventKind::Completed, "");
    seq = r.seq;
    let tc_ended = r.t_us;
    send(stack, &r).await?;
    let mut r = Run::new(&uuid(22), seq, tc_ended + 3_600_000_000);
    stc(&mut r, sample, 390.0, "erin")?;
    seq = r.seq;
    send(stack, &r).await?;
    let mut r = Run::new(&uuid(23), seq, tc_ended + 7_200_000_000);
    r.start(
        "insulation-wet-leakage",
        sample,
        "erin",
        &[("area_m2", 1.6)],
        1.0,
    )?;
    r.event(RunEventKind::StepStarted, "1")
        .reading("dielectric.breakdown", "hipot", "breakdown", "1", 0.0)
        .reading("insulation.r_iso", "hipot", "r_iso", "MOhm", 500.0)
        .reading("wet.r_iso", "hipot", "r_iso", "MOhm", 450.0)
        .event(RunEventKind::Completed, "");
    send(stack, &r).await?;
    crate::wait_for(
        "the insulation run evaluated",
        Duration::from_secs(30),
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM run_evaluations WHERE run_id = $1::uuid")
                    .bind(uuid(23))
                    .fetch_one(pool)
                    .await?;
            Ok((n > 0).then_some(()))
        },
    )
    .await?;
    let observed = chrono::DateTime::from_timestamp_micros(tc_ended + 60_000_000).context("t")?;
    sqlx::query(
        "INSERT INTO sample_observations (sample_id, name, value, unit, observed_at, source, recorded_by)
         VALUES ($1, 'major_visual_defects', 0, '1', $2, 'inspection:1', 'ivy')",
    )
    .bind(sample)
    .bind(observed)
    .execute(pool)
    .await?;
    cloud_hub::runs::reevaluate_sample(pool, sample, "observation recorded", None).await?;
    Ok(tc)
}

/// Asserts an API error's message says `what`.
pub fn refused(v: &Value, what: &str) {
    assert!(
        v["message"].as_str().unwrap_or_default().contains(what),
        "{what}: {v}"
    )
}

/// Issue #15's acceptance on a sample whose runs passed: a certificate is
/// issued; `xmlsec1` and the offline verifier accept it; one byte flipped
/// in a measured value makes both refuse; its PDF renders and reads right
/// (`expect` texts, the verification URL, the QR code decoded from the
/// rendered page); revoked, the offline verifier refuses it with the signed
/// revocation list. Returns the certificate id.
pub async fn certify_and_challenge(
    stack: &Stack,
    pki: &IssuingPki,
    engineer: &str,
    sample: &str,
    expect: &[&str],
) -> Result<String> {
    let url = stack.hub_url();
    let certs = format!("{url}/api/v1/certificates");
    let dir = stack.dir.path().join("acceptance-certificate");
    std::fs::create_dir_all(&dir)?;
    let (s, v) = call(
        Method::POST,
        &certs,
        Some(engineer),
        Some(&json!({"sample": sample, "allow_simulated": true})),
    )
    .await?;
    anyhow::ensure!(s == 201, "issuing for {sample}: {s} {v}");
    let id = v["certificate"]["certificate_id"]
        .as_str()
        .context("certificate id")?
        .to_string();
    let bundle: Value =
        serde_json::from_slice(&get_bytes(&format!("{certs}/{id}/bundle"), engineer).await?)?;
    let xml = bundle["xml"].as_str().context("bundle xml")?.to_string();
    let xml_path = write(&dir, "cert.xml", xml.as_bytes())?;
    let bundle_path = write(&dir, "cert.bundle.json", &serde_json::to_vec(&bundle)?)?;
    let (ok, out) = xmlsec1_verify(&xml_path, &pki.ca)?;
    anyhow::ensure!(ok && out.contains("OK"), "xmlsec1 refused {id}: {out}");
    let (ok, out) = offline_verify(&bundle_path, &pki.ca, &[])?;
    anyhow::ensure!(
        ok && out.contains(&format!("VALID: {id}")),
        "offline verifier: {out}"
    );

    // One byte: the first digit of the first measured value.
    let at = xml.find("<si:value>").context("a measured value")? + "<si:value>".len();
    let digit = xml[at..]
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit())
        .map(|(i, c)| (at + i, c))
        .context("a digit")?;
    let flipped_char = if digit.1 == '9' {
        '8'
    } else {
        (digit.1 as u8 + 1) as char
    };
    let mut flipped = xml.clone();
    flipped.replace_range(digit.0..digit.0 + 1, &flipped_char.to_string());
    let p = write(&dir, "flipped.xml", flipped.as_bytes())?;
    let (ok, out) = xmlsec1_verify(&p, &pki.ca)?;
    anyhow::ensure!(!ok, "xmlsec1 accepted a flipped byte: {out}");
    let p = write(
        &dir,
        "flipped.bundle",
        &bundle_with(&bundle, "xml", &flipped),
    )?;
    let (ok, out) = offline_verify(&p, &pki.ca, &[])?;
    anyhow::ensure!(
        !ok && out.contains("INVALID (xml_signature)"),
        "offline verifier on a flipped byte: {out}"
    );

    // The PDF, read as a person would.
    let pdf = get_bytes(&format!("{certs}/{id}/report.pdf"), engineer).await?;
    let pdf_path = write(&dir, "cert.pdf", &pdf)?;
    let (text, _) = crate::pdf::text(&pdf_path)?;
    let verify_url = bundle_json(&bundle)?["verification_url"]
        .as_str()
        .context("verification_url")?
        .to_string();
    for want in expect.iter().copied().chain([id.as_str(), "PASS"]) {
        anyhow::ensure!(text.contains(want), "{want:?} missing in the PDF: {text}");
    }
    let pages = crate::pdf::pngs(&pdf_path, 100)?;
    let first = pages.first().context("a rendered page")?;
    let codes = crate::pdf::qr_codes(first)?;
    anyhow::ensure!(
        codes.iter().any(|c| c == &verify_url),
        "the QR code says {codes:?}, not {verify_url}"
    );

    // Revoked: the signed list makes the offline verifier refuse.
    let (s, v) = call(
        Method::POST,
        &format!("{certs}/{id}/revoke"),
        Some(engineer),
        Some(&json!({"reason": "acceptance: revoked to test the list"})),
    )
    .await?;
    anyhow::ensure!(s == 200, "revoke: {s} {v}");
    let (s, list) = call(Method::GET, &format!("{certs}/revocations"), None, None).await?;
    anyhow::ensure!(s == 200, "revocations: {list}");
    let list_path = write(&dir, "revocations.json", &serde_json::to_vec(&list)?)?;
    let (ok, out) = offline_verify(
        &bundle_path,
        &pki.ca,
        &["--revocations", list_path.to_str().context("path")?],
    )?;
    anyhow::ensure!(
        !ok && out.contains("INVALID (revoked)"),
        "offline verifier with the revocation list: {out}"
    );
    Ok(id)
}

/// The JSON mirror inside a bundle.
fn bundle_json(bundle: &Value) -> Result<Value> {
    match &bundle["json"] {
        Value::String(s) => Ok(serde_json::from_str(s)?),
        Value::Object(_) => Ok(bundle["json"].clone()),
        other => bail!("bundle json: {other}"),
    }
}
