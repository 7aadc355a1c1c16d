//! Certificates (issue #15) against a real hub and PostgreSQL, with runs
//! reported as a gateway reports them (tests/src/runs.rs): issuing is
//! refused for failing, unapproved and simulated-without-consent runs and
//! for viewers and operators; an issued certificate is accepted by
//! Debian's xmlsec1, by Python's jwcrypto and by `cloud-hub certificate
//! verify`; one changed byte, a swapped signature or another key makes all
//! of them refuse; revocation and supersession reach the offline verifier
//! through the signed list; expiry is refused; the public endpoint answers
//! without login and shows only the certificate.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::Stack;
use e2e_tests::certs::{
    IssuingPki, bundle_with, evaluated, get_bytes, jwcrypto_verify, login, offline_verify,
    provisional_tc200, send, uuid, write, xmlsec1_verify,
};
use e2e_tests::certs::{T0, refused};
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::runs::{Run, stc};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_for_passing_runs_verified_by_others_revoked_and_superseded()
-> Result<()> {
    let mut stack = Stack::new().await?;
    let dir = stack.dir.path().to_path_buf();
    let pki = IssuingPki::new(&dir, "lab")?;
    stack.hub_after = pki.hub_table(
        "validity_days = 400\nlab_name = \"PV Test & Calibration Lab\"\nlab_country = \"DE\"\n\
         id_prefix = \"LAB-T\"\nverify_base_url = \"https://verify.example/qi/\"",
    );
    stack.start_hub().await?;
    let pool = stack.db().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let operator = new_key(&stack, Role::Operator, None).await?;
    let erin = login(&url, &admin, "erin", "engineer").await?;
    let emil = login(&url, &admin, "emil", "engineer").await?;

    // A service request with its samples.
    let (s, sr) = call(
        Method::POST,
        &format!("{url}/api/v1/service-requests"),
        Some(&operator),
        Some(
            &json!({"customer": "Solar <GmbH> & Co", "module_type": "SG-400M",
                     "protocols": ["stc-power", "tc200", "stc-power"]}),
        ),
    )
    .await?;
    assert_eq!(s, 201, "{sr}");
    let sr_id = sr["request_id"].as_str().context("id")?.to_string();
    for serial in ["MOD-P", "MOD-F", "MOD-S", "MOD-Q"] {
        let (s, v) = call(
            Method::POST,
            &format!("{url}/api/v1/service-requests/{sr_id}/samples"),
            Some(&operator),
            Some(&json!({"serial_number": serial})),
        )
        .await?;
        assert_eq!(s, 201, "{v}");
    }
    // Passing, failing and simulated STC runs.
    let (pass, fail, sim) = (uuid(1), uuid(2), uuid(3));
    let mut r = Run::new(&pass, 1, T0);
    stc(&mut r, "sample:MOD-P", 395.0, "erin")?;
    send(&stack, &r).await?;
    let mut r = Run::new(&fail, 100, T0);
    stc(&mut r, "sample:MOD-F", 350.0, "erin")?;
    send(&stack, &r).await?;
    let mut r = Run::new(&sim, 200, T0);
    stc(&mut r, "sample:MOD-S", 399.0, "erin")?;
    if let Some(st) = &mut r.events[0].start {
        st.time_scale = 60.0;
    }
    send(&stack, &r).await?;
    for id in [&pass, &fail, &sim] {
        evaluated(&url, &viewer, id, |_| true).await?;
    }

    let certs = format!("{url}/api/v1/certificates");
    let issue = |token: &str, body: Value| {
        let (certs, token) = (certs.clone(), token.to_string());
        async move { call(Method::POST, &certs, Some(&token), Some(&body)).await }
    };
    // Who may issue: engineers, not viewers or operators.
    for t in [&viewer, &operator] {
        let (s, v) = issue(t, json!({"sample": "sample:MOD-P"})).await?;
        assert_eq!(s, 403, "{v}");
    }
    let (s, v) = issue(&erin, json!({"sample": "sample:MOD-F"})).await?;
    assert_eq!(s, 409, "{v}");
    refused(&v, "verdict is fail, not pass");
    let (s, v) = issue(&erin, json!({"sample": "sample:MOD-S"})).await?;
    assert_eq!(s, 409, "{v}");
    refused(&v, "allow_simulated");
    let (s, v) = issue(&erin, json!({"sample": "sample:MOD-P", "runs": [fail]})).await?;
    assert_eq!(s, 409, "another sample's run: {v}");
    let (s, v) = issue(&erin, json!({"sample": "not a sample"})).await?;
    assert_eq!(s, 422, "{v}");
    let (s, v) = issue(&erin, json!({"sample": "sample:NOWHERE"})).await?;
    assert_eq!(s, 409, "{v}");
    refused(&v, "not a sample of a service request");
    // Unapproved: the TC200 run is provisional until a second engineer decides.
    let tc = provisional_tc200(&stack, &pool, "sample:MOD-Q").await?;
    let e = evaluated(&url, &viewer, &tc, |e| e["verdict"] == "provisional").await?;
    assert_eq!(e["computed"], "pass", "{e}");
    let (s, v) = issue(&erin, json!({"sample": "sample:MOD-Q", "runs": [tc]})).await?;
    assert_eq!(s, 409, "{v}");
    refused(&v, "awaits an engineer's approval");
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/runs/{tc}/approval"),
        Some(&emil),
        Some(&json!({"decision": "approve", "comment": "no visual defects"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let refusals: i64 = sqlx::query_scalar("SELECT count(*) FROM certificates")
        .fetch_one(&pool)
        .await?;
    assert_eq!(refusals, 0, "nothing was stored for a refusal");

    // Issued.
    let (s, v) = issue(&erin, json!({"sample": "sample:MOD-P"})).await?;
    assert_eq!(s, 201, "{v}");
    let c = &v["certificate"];
    let id = c["certificate_id"].as_str().context("id")?.to_string();
    assert!(
        id.starts_with("LAB-T-20") && id.ends_with("-000001"),
        "{id}"
    );
    assert_eq!(
        (c["state"].as_str(), c["simulated"].as_bool()),
        (Some("valid"), Some(false))
    );
    let issued = chrono::DateTime::parse_from_rfc3339(c["issued_at"].as_str().context("t")?)?;
    let expires = chrono::DateTime::parse_from_rfc3339(c["expires_at"].as_str().context("t")?)?;
    assert_eq!(
        (expires - issued).num_days(),
        400,
        "certificates.validity_days"
    );
    let xml = get_bytes(&format!("{certs}/{id}/document.xml"), &viewer).await?;
    let json_doc = get_bytes(&format!("{certs}/{id}/document.json"), &viewer).await?;
    let jws = get_bytes(&format!("{certs}/{id}/document.jws"), &viewer).await?;
    let bundle: Value =
        serde_json::from_slice(&get_bytes(&format!("{certs}/{id}/bundle"), &viewer).await?)?;
    let text = String::from_utf8(xml.clone())?;
    for part in [
        "<dcc:digitalCalibrationCertificate xmlns:dcc=\"https://ptb.de/dcc\"",
        &format!("<dcc:uniqueIdentifier>{id}</dcc:uniqueIdentifier>"),
        "<dcc:countryCodeISO3166_1>DE</dcc:countryCodeISO3166_1>",
        "PV Test &amp; Calibration Lab",
        "Solar &lt;GmbH&gt; &amp; Co",
        "<si:value>395.0</si:value><si:unit>\\watt</si:unit>",
        &format!("https://verify.example/qi/api/v1/verify/{id}"),
        &pass,
        // No calibration recorded for the run's instruments (docs/calibration.md).
        "calibration: none recorded at the run's start",
        "<dcc:period>P400D</dcc:period>",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    assert!(!text.contains("SIMULATED"), "{text}");
    let mirror: Value = serde_json::from_slice(&json_doc)?;
    assert_eq!(mirror["item"]["serial_number"], "MOD-P");
    assert_eq!(mirror["customer"]["service_request"], sr_id.as_str());
    assert_eq!(bundle["xml"].as_str(), Some(text.as_str()));
    assert_eq!(
        bundle["log"]["index"], 0,
        "the first entry of the log: {bundle}"
    );
    assert_eq!(bundle["log"]["tree_head"]["tree_size"], 1, "{bundle}");

    // Three verifiers accept it.
    let xml_path = write(&dir, "cert.xml", &xml)?;
    let json_path = write(&dir, "cert.json", &json_doc)?;
    let jws_path = write(&dir, "cert.jws", &jws)?;
    let bundle_path = write(&dir, "cert.bundle.json", &serde_json::to_vec(&bundle)?)?;
    let (ok, out) = xmlsec1_verify(&xml_path, &pki.ca)?;
    assert!(ok && out.contains("OK"), "xmlsec1: {out}");
    let (ok, out) = jwcrypto_verify(&jws_path, &json_path, &pki.ca)?;
    assert!(ok, "jwcrypto: {out}");
    let (ok, out) = offline_verify(&bundle_path, &pki.ca, &[])?;
    assert!(
        ok && out.contains(&format!("VALID: {id}")),
        "offline: {out}"
    );

    // One digit changed in the XML: xmlsec1 and ours refuse.
    let bad_xml = text.replacen("<si:value>395.0<", "<si:value>396.0<", 1);
    assert_ne!(bad_xml, text);
    let p = write(&dir, "bad.xml", bad_xml.as_bytes())?;
    let (ok, out) = xmlsec1_verify(&p, &pki.ca)?;
    assert!(!ok, "xmlsec1 accepted a changed XML: {out}");
    let p = write(
        &dir,
        "bad-xml.bundle",
        &bundle_with(&bundle, "xml", &bad_xml),
    )?;
    let (ok, out) = offline_verify(&p, &pki.ca, &[])?;
    assert!(
        !ok && out.contains("INVALID (xml_signature)") && out.contains("digest"),
        "{out}"
    );
    // One digit changed in the JSON: jwcrypto and ours refuse.
    let json_text = String::from_utf8(json_doc.clone())?;
    let bad_json = json_text.replacen("395.0", "396.0", 1);
    assert_ne!(bad_json, json_text);
    let p = write(&dir, "bad.json", bad_json.as_bytes())?;
    let (ok, out) = jwcrypto_verify(&jws_path, &p, &pki.ca)?;
    assert!(!ok, "jwcrypto accepted a changed JSON: {out}");
    let p = write(
        &dir,
        "bad-json.bundle",
        &bundle_with(&bundle, "json", &bad_json),
    )?;
    let (ok, out) = offline_verify(&p, &pki.ca, &[])?;
    assert!(!ok && out.contains("INVALID (jws)"), "{out}");
    // The signature value swapped for another certificate's.
    let (s, v) = issue(
        &erin,
        json!({"sample": "sample:MOD-S", "allow_simulated": true}),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let sim_id = v["certificate"]["certificate_id"]
        .as_str()
        .context("id")?
        .to_string();
    assert_eq!(v["certificate"]["simulated"], true);
    let sim_xml =
        String::from_utf8(get_bytes(&format!("{certs}/{sim_id}/document.xml"), &viewer).await?)?;
    assert!(
        sim_xml.contains("refType=\"qi_simulated\"") && sim_xml.contains("NOT a real test"),
        "{sim_xml}"
    );
    let sig = |x: &str| -> Result<String> {
        let a = x.find("<ds:SignatureValue>").context("sig")?;
        let b = x.find("</ds:SignatureValue>").context("sig")?;
        Ok(x[a..b].to_string())
    };
    let swapped = text.replacen(&sig(&text)?, &sig(&sim_xml)?, 1);
    let p = write(&dir, "swapped.xml", swapped.as_bytes())?;
    let (ok, out) = xmlsec1_verify(&p, &pki.ca)?;
    assert!(!ok, "xmlsec1 accepted a swapped signature: {out}");
    let p = write(
        &dir,
        "swapped.bundle",
        &bundle_with(&bundle, "xml", &swapped),
    )?;
    let (ok, out) = offline_verify(&p, &pki.ca, &[])?;
    assert!(!ok && out.contains("INVALID (xml_signature)"), "{out}");
    // Re-signed (both renderings) by a key the trusted CA never certified.
    let rogue = IssuingPki::new(&dir, "rogue")?.issuing_key()?;
    let root = cloud_hub::certificates::dsig::verify(&text)
        .map_err(anyhow::Error::msg)?
        .unsigned_root;
    let forged_xml = cloud_hub::certificates::dsig::sign(&root, &rogue)?;
    let forged_jws = cloud_hub::certificates::jws::sign_detached(&json_doc, &rogue)?;
    let p = write(&dir, "forged.xml", forged_xml.as_bytes())?;
    let (ok, out) = xmlsec1_verify(&p, &pki.ca)?;
    assert!(!ok, "xmlsec1 accepted another key: {out}");
    let p = write(&dir, "forged.jws", forged_jws.as_bytes())?;
    let (ok, out) = jwcrypto_verify(&p, &json_path, &pki.ca)?;
    assert!(!ok, "jwcrypto accepted another key: {out}");
    let mut forged = bundle.clone();
    forged["xml"] = Value::String(forged_xml);
    forged["jws"] = Value::String(forged_jws);
    let p = write(&dir, "forged.bundle", &serde_json::to_vec(&forged)?)?;
    let (ok, out) = offline_verify(&p, &pki.ca, &[])?;
    assert!(!ok && out.contains("INVALID (chain)"), "{out}");
    // Expired: verified as of a day after its expiry.
    let after = (expires + chrono::Duration::days(1)).to_rfc3339();
    let (ok, out) = offline_verify(&bundle_path, &pki.ca, &["--at", &after])?;
    assert!(!ok && out.contains("INVALID (expired)"), "{out}");
    // The transparency log: the bundle's inclusion proof against a head
    // fetched independently (without login) verifies; a changed root, a
    // head of another size, or a bundle without its proof are refused.
    let head_url = format!("{url}/api/v1/log/head");
    let (s, head) = call(Method::GET, &head_url, None, None).await?;
    assert_eq!(s, 200, "{head}");
    let head_path = write(&dir, "head.json", &serde_json::to_vec(&head)?)?;
    let hp = head_path.to_str().context("p")?;
    let fresh: Value = serde_json::from_slice(
        &get_bytes(
            &format!("{certs}/{id}/bundle?tree_size={}", head["tree_size"]),
            &viewer,
        )
        .await?,
    )?;
    let fresh_path = write(&dir, "fresh.bundle", &serde_json::to_vec(&fresh)?)?;
    let (ok, out) = offline_verify(&fresh_path, &pki.ca, &["--log-head", hp])?;
    assert!(
        ok && out.contains("in the transparency log at index"),
        "{out}"
    );
    let mut forked = head.clone();
    forked["root_hash"] = Value::String("ab".repeat(32));
    let p = write(&dir, "forked-head.json", &serde_json::to_vec(&forked)?)?;
    let (ok, out) = offline_verify(
        &fresh_path,
        &pki.ca,
        &["--log-head", p.to_str().context("p")?],
    )?;
    assert!(
        !ok && out.contains("INVALID (log)") && out.contains("does not verify"),
        "{out}"
    );
    // The bundle fetched before the simulated certificate was logged is for
    // a smaller tree: the verifier says how to get the matching proof.
    let (ok, out) = offline_verify(&bundle_path, &pki.ca, &["--log-head", hp])?;
    assert!(
        !ok && out.contains("INVALID (log)") && out.contains("?tree_size="),
        "{out}"
    );
    let mut unlogged = fresh.clone();
    unlogged["log"] = Value::Null;
    let p = write(&dir, "unlogged.bundle", &serde_json::to_vec(&unlogged)?)?;
    let (ok, out) = offline_verify(&p, &pki.ca, &["--log-head", hp])?;
    assert!(!ok && out.contains("not in the log"), "{out}");
    let mut moved = fresh.clone();
    moved["log"]["index"] = json!(fresh["log"]["index"].as_u64().context("index")? + 1);
    let p = write(&dir, "moved.bundle", &serde_json::to_vec(&moved)?)?;
    let (ok, out) = offline_verify(&p, &pki.ca, &["--log-head", hp])?;
    assert!(!ok && out.contains("INVALID (log)"), "{out}");

    // The public endpoint: no login, the certificate's own content only.
    let (s, v) = call(
        Method::GET,
        &format!("{url}/api/v1/verify/{id}"),
        None,
        None,
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "valid");
    assert_eq!(v["certificate"], mirror, "exactly the signed JSON");
    let keys: Vec<&str> = v
        .as_object()
        .context("object")?
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "certificate",
            "certificate_id",
            "document_sha256",
            "revoked_at",
            "status",
            "superseded_by"
        ]
    );
    let (s, v) = call(
        Method::GET,
        &format!("{url}/api/v1/verify/LAB-T-2020-999999"),
        None,
        None,
    )
    .await?;
    assert_eq!((s, v["status"].as_str()), (200, Some("unknown")), "{v}");
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/verify/bad%20id"),
        None,
        None,
    )
    .await?;
    assert_eq!(s, 400);
    let (s, _) = call(Method::GET, &format!("{certs}/{id}"), None, None).await?;
    assert_eq!(s, 401, "the certificate's record needs a login");

    // Revoked: the signed list makes the offline verifier refuse.
    let revoke = format!("{certs}/{id}/revoke");
    let reason = json!({"reason": "wrong module type on the request"});
    let (s, _) = call(Method::POST, &revoke, Some(&viewer), Some(&reason)).await?;
    assert_eq!(s, 403);
    let (s, v) = call(
        Method::POST,
        &revoke,
        Some(&emil),
        Some(&json!({"reason": " "})),
    )
    .await?;
    assert_eq!(s, 422, "{v}");
    let (s, v) = call(Method::POST, &revoke, Some(&emil), Some(&reason)).await?;
    assert_eq!(
        (s, v["certificate"]["state"].as_str()),
        (200, Some("revoked")),
        "{v}"
    );
    let (s, _) = call(Method::POST, &revoke, Some(&emil), Some(&reason)).await?;
    assert_eq!(s, 409, "revoked once");
    let (s, list) = call(Method::GET, &format!("{certs}/revocations"), None, None).await?;
    assert_eq!(s, 200, "{list}");
    let list_path = write(&dir, "revocations.json", &serde_json::to_vec(&list)?)?;
    let lp = list_path.to_str().context("p")?;
    let (ok, out) = offline_verify(&bundle_path, &pki.ca, &["--revocations", lp])?;
    assert!(
        !ok && out.contains("INVALID (revoked)") && out.contains("wrong module type"),
        "{out}"
    );
    // A list whose entry was dropped keeps no valid signature.
    let mut doctored = list.clone();
    doctored["payload"] = Value::String(
        list["payload"]
            .as_str()
            .context("payload")?
            .replace(&id, "LAB-T-1999-000000"),
    );
    let p = write(&dir, "doctored.json", &serde_json::to_vec(&doctored)?)?;
    let (ok, out) = offline_verify(
        &bundle_path,
        &pki.ca,
        &["--revocations", p.to_str().context("p")?],
    )?;
    assert!(!ok && out.contains("INVALID (revocation_list)"), "{out}");
    let (_, v) = call(
        Method::GET,
        &format!("{url}/api/v1/verify/{id}"),
        None,
        None,
    )
    .await?;
    assert_eq!(v["status"], "revoked", "{v}");
    assert!(v.get("revocation_reason").is_none(), "{v}");

    // Approved TC200 plus the rest of MOD-Q: issued with its approver, then superseded.
    let (s, v) = issue(&erin, json!({"sample": "sample:MOD-Q"})).await?;
    assert_eq!(s, 201, "{v}");
    let q = v["certificate"]["certificate_id"]
        .as_str()
        .context("id")?
        .to_string();
    let q_json: Value =
        serde_json::from_slice(&get_bytes(&format!("{certs}/{q}/document.json"), &viewer).await?)?;
    assert_eq!(q_json["runs"].as_array().map(Vec::len), Some(4), "{q_json}");
    assert!(
        q_json["responsible_persons"]
            .as_array()
            .context("persons")?
            .iter()
            .any(|p| p["name"] == "emil" && p["role"] == "approver"),
        "{q_json}"
    );
    let (s, v) = call(
        Method::POST,
        &format!("{certs}/{q}/supersede"),
        Some(&erin),
        Some(&json!({"reason": "the customer's name was misspelt", "runs": [tc]})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let q2 = v["certificate"]["certificate_id"]
        .as_str()
        .context("id")?
        .to_string();
    assert_eq!(v["certificate"]["supersedes"], q.as_str());
    let (_, old) = call(Method::GET, &format!("{certs}/{q}"), Some(&viewer), None).await?;
    assert_eq!(
        (
            old["certificate"]["state"].as_str(),
            old["certificate"]["superseded_by"].as_str()
        ),
        (Some("superseded"), Some(q2.as_str()))
    );
    let (_, list) = call(Method::GET, &format!("{certs}/revocations"), None, None).await?;
    let lp = write(&dir, "revocations2.json", &serde_json::to_vec(&list)?)?;
    let lp = lp.to_str().context("p")?;
    let b_old = write(
        &dir,
        "q.bundle",
        &get_bytes(&format!("{certs}/{q}/bundle"), &viewer).await?,
    )?;
    let b_new = write(
        &dir,
        "q2.bundle",
        &get_bytes(&format!("{certs}/{q2}/bundle"), &viewer).await?,
    )?;
    let (ok, out) = offline_verify(&b_old, &pki.ca, &["--revocations", lp])?;
    assert!(
        !ok && out.contains("INVALID (superseded)") && out.contains(&q2),
        "{out}"
    );
    let (ok, out) = offline_verify(&b_new, &pki.ca, &["--revocations", lp])?;
    assert!(ok && out.contains("not revoked as of"), "{out}");

    // Expired at the hub: the public endpoint says so.
    sqlx::query(
        "UPDATE certificates SET expires_at = now() - interval '1 day' WHERE certificate_id = $1",
    )
    .bind(&q2)
    .execute(&pool)
    .await?;
    let (_, v) = call(
        Method::GET,
        &format!("{url}/api/v1/verify/{q2}"),
        None,
        None,
    )
    .await?;
    assert_eq!(v["status"], "expired", "{v}");

    // Listing, and the audit trail.
    let (s, v) = call(
        Method::GET,
        &format!("{certs}?subject=sample:MOD-Q&limit=1"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!((s, v["count"].as_i64()), (200, Some(1)), "{v}");
    assert_eq!(
        v["certificates"][0]["certificate_id"],
        q2.as_str(),
        "newest first"
    );
    let before = v["next_before"].as_i64().context("next_before")?;
    let (_, v) = call(
        Method::GET,
        &format!("{certs}?subject=sample:MOD-Q&before={before}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(v["certificates"][0]["certificate_id"], q.as_str());
    // Each issue and each revocation or supersession is a leaf: 4 + 2.
    let (_, head) = call(Method::GET, &head_url, None, None).await?;
    assert_eq!(head["tree_size"], 6, "{head}");
    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, actor FROM audit_log WHERE action LIKE 'certificate.%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await?;
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "certificate.issue",
            "certificate.issue",
            "certificate.revoke",
            "certificate.issue",
            "certificate.supersede",
            "certificate.issue"
        ],
        "{audited:?}"
    );
    Ok(())
}

/// Without `[certificates]` the hub starts and refuses to issue, saying
/// what to configure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_an_issuing_key_starts_and_says_what_to_configure() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/certificates"),
        Some(&admin),
        Some(&json!({"sample": "sample:MOD-1"})),
    )
    .await?;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("not_configured")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("certificates.key_file"),
        "{v}"
    );
    let (s, v) = call(
        Method::GET,
        &format!("{url}/api/v1/certificates/revocations"),
        None,
        None,
    )
    .await?;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("not_configured")),
        "{v}"
    );
    Ok(())
}
