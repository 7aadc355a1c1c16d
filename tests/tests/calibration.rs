//! Instrument calibration (issue #15) against a real hub and PostgreSQL:
//! calibrations are recorded (engineers only, checked), listed, shown in the
//! instrument twin's state and in the due listing; an expired one raises a
//! major alarm on the twin that a new calibration clears, one due within
//! `calibration.warn_days` a warning; a calibration certificate for our own
//! calibration is accepted by Debian's xmlsec1 and by `cloud-hub
//! certificate verify`, and one flipped byte makes both refuse; another
//! laboratory's calibration and a second certificate are refused.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::certs::{IssuingPki, get_bytes, login, offline_verify, write, xmlsec1_verify};
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::{Stack, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

fn days(n: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(n))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn calibration(calibrated: i64, due: i64) -> Value {
    json!({
        "calibrated_at": days(calibrated),
        "due_at": days(due),
        "method": "comparison with reference cell RC-7 under STC",
        "measured": [
            {"name": "Isc", "value": 9.81, "unit": "A", "expanded_uncertainty": 0.05, "coverage_factor": 2.0},
            {"name": "Voc", "value": 49.2, "unit": "V", "expanded_uncertainty": 0.12}
        ],
        "conditions": [{"name": "ambient temperature", "value": 23.1, "unit": "Cel"}]
    })
}

/// The active alarms of a twin (`state=active`).
async fn active_alarms(url: &str, token: &str, twin: &str) -> Result<Vec<Value>> {
    let (s, v) = call(
        Method::GET,
        &format!("{url}/api/v1/alarms?state=active&twin={twin}"),
        Some(token),
        None,
    )
    .await?;
    anyhow::ensure!(s == 200, "alarms: {s} {v}");
    Ok(v["alarms"].as_array().cloned().unwrap_or_default())
}

async fn alarm_becomes(
    url: &str,
    token: &str,
    twin: &str,
    want: Option<&str>,
) -> Result<Vec<Value>> {
    wait_for(
        &format!("{twin}'s calibration alarm to be {want:?}"),
        Duration::from_secs(60),
        || async {
            let a = active_alarms(url, token, twin).await?;
            let sev: Vec<&str> = a.iter().filter_map(|a| a["severity"].as_str()).collect();
            let ok = match want {
                None => sev.is_empty(),
                Some(w) => sev == [w],
            };
            Ok(ok.then_some(a.clone()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibrations_are_recorded_listed_alarmed_and_certified() -> Result<()> {
    let mut stack = Stack::new().await?;
    let dir = stack.dir.path().to_path_buf();
    let pki = IssuingPki::new(&dir, "lab")?;
    stack.hub_after = format!(
        "{}\n[calibration]\nwarn_days = 30\ncheck_interval_s = 1\n",
        pki.hub_table("lab_name = \"PV Test & Calibration Lab\"\nlab_country = \"DE\"")
    );
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let operator = new_key(&stack, Role::Operator, None).await?;
    let erin = login(&url, &admin, "erin", "engineer").await?;

    for (id, dev) in [
        ("instrument:gw-cal:smu", "smu"),
        ("instrument:gw-cal:pyr", "pyr"),
    ] {
        let (s, v) = call(
            Method::POST,
            &format!("{url}/api/v1/twins"),
            Some(&erin),
            Some(&json!({"twin_id": id, "kind": "instrument", "name": dev,
                         "gateway_id": "gw-cal", "device_id": dev})),
        )
        .await?;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/twins"),
        Some(&erin),
        Some(&json!({"twin_id": "site:lab", "kind": "site", "name": "lab"})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let smu = "instrument:gw-cal:smu";
    let cals = format!("{url}/api/v1/twins/{smu}/calibrations");

    // Nothing yet: status none.
    let (s, v) = call(Method::GET, &cals, Some(&viewer), None).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"]["status"], "none", "{v}");

    // Who may record, and what is refused.
    for t in [&viewer, &operator] {
        let (s, v) = call(Method::POST, &cals, Some(t), Some(&calibration(-1, 365))).await?;
        assert_eq!(s, 403, "{v}");
    }
    for (body, status, what) in [
        (calibration(-1, -2), 409, "`due_at` must be after"),
        (calibration(2, 365), 409, "in the future"),
        (
            {
                let mut b = calibration(-1, 365);
                b["measured"][0]["expanded_uncertainty"] = json!(-0.1);
                b
            },
            422,
            "expanded_uncertainty",
        ),
        (
            {
                let mut b = calibration(-1, 365);
                b["external"] = json!(true);
                b
            },
            409,
            "external laboratory's certificate",
        ),
    ] {
        let (s, v) = call(Method::POST, &cals, Some(&erin), Some(&body)).await?;
        assert_eq!(s, status, "{v}");
        assert!(v["message"].as_str().unwrap_or("").contains(what), "{v}");
    }
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/twins/site:lab/calibrations"),
        Some(&erin),
        Some(&calibration(-1, 365)),
    )
    .await?;
    assert_eq!(s, 409, "a site is not an instrument: {v}");
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/twins/instrument:nowhere:x/calibrations"),
        Some(&erin),
        Some(&calibration(-1, 365)),
    )
    .await?;
    assert_eq!(s, 404, "{v}");

    // An expired calibration: the twin shows it, the listing has it, a
    // major alarm is raised on the twin.
    let (s, v) = call(
        Method::POST,
        &cals,
        Some(&erin),
        Some(&calibration(-400, -10)),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"]["status"], "expired", "{v}");
    let expired_id = v["calibration"]["calibration_id"].as_i64().context("id")?;
    let (s, t) = call(
        Method::GET,
        &format!("{url}/api/v1/twins/{smu}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["state"]["calibration"]["status"], "expired", "{t}");
    assert_eq!(t["state"]["calibration"]["calibration_id"], expired_id);
    let a = alarm_becomes(&url, &viewer, smu, Some("major")).await?;
    assert_eq!(a[0]["metric"], "calibration", "{a:?}");
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM audit_log WHERE action = 'calibration.record' AND actor = 'erin'",
    )
    .fetch_all(&stack.db().await?)
    .await?;
    assert_eq!(audited, [format!("twin:{smu}")], "audited");

    // Due within warn_days on another instrument: due_soon, a warning.
    let pyr = "instrument:gw-cal:pyr";
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/twins/{pyr}/calibrations"),
        Some(&erin),
        Some(&calibration(-345, 20)),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"]["status"], "due_soon", "warn_days = 30: {v}");
    alarm_becomes(&url, &viewer, pyr, Some("warning")).await?;

    let due = |n: &str| {
        let (url, viewer) = (url.clone(), viewer.clone());
        let n = n.to_string();
        async move {
            call(
                Method::GET,
                &format!("{url}/api/v1/calibrations/due?within_days={n}"),
                Some(&viewer),
                None,
            )
            .await
        }
    };
    let (s, v) = due("30").await?;
    assert_eq!(s, 200, "{v}");
    let listed: Vec<(&str, &str)> = v["due"]
        .as_array()
        .context("due")?
        .iter()
        .map(|i| {
            (
                i["twin_id"].as_str().unwrap_or(""),
                i["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(smu, "expired"), (pyr, "due_soon")],
        "soonest first: {v}"
    );
    let (_, v) = due("5").await?;
    assert_eq!(v["count"], 1, "only the expired one within 5 days: {v}");
    let (s, v) = due("99999").await?;
    assert_eq!(s, 400, "{v}");

    // A new calibration clears the alarm.
    let (s, v) = call(
        Method::POST,
        &cals,
        Some(&erin),
        Some(&calibration(-1, 365)),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"]["status"], "valid", "{v}");
    let valid_id = v["calibration"]["calibration_id"].as_i64().context("id")?;
    alarm_becomes(&url, &viewer, smu, None).await?;
    let (_, v) = call(Method::GET, &cals, Some(&viewer), None).await?;
    assert_eq!(v["count"], 2, "{v}");
    assert_eq!(
        v["calibrations"][0]["calibration_id"], valid_id,
        "latest first"
    );

    // The calibration certificate: engineers only; not for an expired or
    // another laboratory's calibration; once.
    let certify = |id: i64, token: &str| {
        let (url, token) = (url.clone(), token.to_string());
        async move {
            call(
                Method::POST,
                &format!("{url}/api/v1/calibrations/{id}/certificate"),
                Some(&token),
                None,
            )
            .await
        }
    };
    let (s, v) = certify(valid_id, &viewer).await?;
    assert_eq!(s, 403, "{v}");
    let (s, v) = certify(expired_id, &erin).await?;
    assert_eq!(s, 409, "{v}");
    let (s, v) = certify(987654, &erin).await?;
    assert_eq!(s, 404, "{v}");
    let mut ext = calibration(-1, 365);
    ext["external"] = json!(true);
    ext["laboratory"] = json!("DAkkS lab D-K-12345");
    ext["external_certificate"] = json!("D-K-12345-2026-0042");
    let (s, v) = call(Method::POST, &cals, Some(&erin), Some(&ext)).await?;
    assert_eq!(s, 201, "{v}");
    let ext_id = v["calibration"]["calibration_id"].as_i64().context("id")?;
    let (s, v) = certify(ext_id, &erin).await?;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("D-K-12345-2026-0042"),
        "{v}"
    );

    let (s, v) = certify(valid_id, &erin).await?;
    assert_eq!(s, 201, "{v}");
    let c = &v["certificate"];
    assert_eq!(c["kind"], "calibration", "{c}");
    assert_eq!(c["subject"], smu, "{c}");
    let id = c["certificate_id"].as_str().context("id")?.to_string();
    let (s, v) = certify(valid_id, &erin).await?;
    assert_eq!(s, 409, "once: {v}");
    let (_, v) = call(Method::GET, &cals, Some(&viewer), None).await?;
    let certified = v["calibrations"]
        .as_array()
        .context("list")?
        .iter()
        .find(|c| c["calibration_id"] == valid_id)
        .context("the valid one")?;
    assert_eq!(certified["certificate_id"], id.as_str());

    let xml = get_bytes(
        &format!("{url}/api/v1/certificates/{id}/document.xml"),
        &viewer,
    )
    .await?;
    let text = String::from_utf8(xml.clone())?;
    for part in [
        "<dcc:value>calibration</dcc:value>",
        "<si:value>9.81</si:value><si:unit>\\ampere</si:unit><si:expandedUnc><si:uncertainty>0.05</si:uncertainty><si:coverageFactor>2.0</si:coverageFactor>",
        "<dcc:influenceCondition refType=\"qi_condition\">",
        "due for calibration again on",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    let xml_path = write(&dir, "cal.xml", &xml)?;
    let (ok, out) = xmlsec1_verify(&xml_path, &pki.ca)?;
    assert!(ok, "xmlsec1 refused the calibration certificate: {out}");
    let bundle = get_bytes(&format!("{url}/api/v1/certificates/{id}/bundle"), &viewer).await?;
    let bundle_path = write(&dir, "cal.bundle.json", &bundle)?;
    let (ok, out) = offline_verify(&bundle_path, &pki.ca, &[])?;
    assert!(ok, "the offline verifier refused: {out}");
    assert!(out.contains("calibration"), "{out}");
    // One digit changed in the measured value: both refuse.
    let flipped = text.replacen("<si:value>9.81</si:value>", "<si:value>9.91</si:value>", 1);
    let bad_xml = write(&dir, "cal-bad.xml", flipped.as_bytes())?;
    let (ok, out) = xmlsec1_verify(&bad_xml, &pki.ca)?;
    assert!(!ok, "xmlsec1 accepted a changed value: {out}");
    let mut b: Value = serde_json::from_slice(&bundle)?;
    b["xml"] = json!(flipped);
    let bad_bundle = write(&dir, "cal-bad.bundle.json", &serde_json::to_vec(&b)?)?;
    let (ok, out) = offline_verify(&bad_bundle, &pki.ca, &[])?;
    assert!(!ok, "the offline verifier accepted a changed value: {out}");

    // The certificate expires when the calibration is due: in the listing
    // within a year, not within 30 days.
    let (_, v) = due("400").await?;
    assert!(
        v["due"]
            .as_array()
            .context("due")?
            .iter()
            .any(|i| i["kind"] == "certificate" && i["certificate_id"] == id.as_str()),
        "{v}"
    );
    Ok(())
}
