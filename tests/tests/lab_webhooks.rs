//! Outbound webhooks to the lab's systems (issue #15) against a real hub and
//! PostgreSQL, runs reported over gRPC as a gateway reports them, and a
//! receiver in the test suite (tests/src/webhook_receiver.rs) that checks
//! every signature and records every Idempotency-Key: a failing STC run
//! reaches the QMS as a non-conformance with the failed criterion's
//! explanation (and a record at the hub), a passing one only the LIMS as a
//! result; a receiver answering 500 three times gets the event on the
//! fourth attempt with the same key; one that never answers in time does
//! not hold up issuing a certificate and ends in the dead letters, which an
//! admin replays; deliveries pending when the hub is killed are sent after
//! it restarts; no more deliveries are in flight than webhooks.concurrency.
//! Access and SSRF: lab_webhooks_access.rs.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::certs::{IssuingPki, T0, evaluated, login, provisional_tc200, send, uuid};
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::runs::{Run, stc};
use e2e_tests::webhook_receiver::{Mode, Receiver};
use e2e_tests::{Stack, wait_for};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

/// `[webhooks]` for a receiver on this machine, with fast retries.
fn webhooks_table(max_attempts: u32, timeout_s: u64, concurrency: u32) -> String {
    format!(
        "[webhooks]\nallow_http = true\nallow_private_targets = true\nmax_attempts = {max_attempts}\n\
         backoff_base_ms = 200\nbackoff_max_ms = 1000\ntimeout_s = {timeout_s}\nconcurrency = {concurrency}\n"
    )
}

/// Subscribes `r` to `events`; gives the receiver the secret. Returns the id.
async fn subscribe(
    url: &str,
    admin: &str,
    name: &str,
    r: &Receiver,
    events: &[&str],
) -> Result<i64> {
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/webhooks"),
        Some(admin),
        Some(&json!({"name": name, "url": r.url, "events": events})),
    )
    .await?;
    anyhow::ensure!(s == 201, "subscribe: {s} {v}");
    r.set_secret(v["secret"].as_str().context("secret")?);
    v["subscription"]["subscription_id"].as_i64().context("id")
}

/// A service request with samples of these serial numbers; returns its id.
async fn service_request(url: &str, token: &str, serials: &[&str]) -> Result<String> {
    let (s, sr) = call(
        Method::POST,
        &format!("{url}/api/v1/service-requests"),
        Some(token),
        Some(&json!({"customer": "Solar GmbH", "module_type": "SG-400M",
                     "protocols": ["stc-power", "tc200"]})),
    )
    .await?;
    anyhow::ensure!(s == 201, "{sr}");
    let id = sr["request_id"].as_str().context("id")?.to_string();
    for serial in serials {
        let (s, v) = call(
            Method::POST,
            &format!("{url}/api/v1/service-requests/{id}/samples"),
            Some(token),
            Some(&json!({"serial_number": serial})),
        )
        .await?;
        anyhow::ensure!(s == 201, "{v}");
    }
    Ok(id)
}

async fn transition(url: &str, token: &str, sr: &str, to: &str) -> Result<()> {
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/service-requests/{sr}/transitions"),
        Some(token),
        Some(&json!({"to": to, "comment": "webhook test"})),
    )
    .await?;
    anyhow::ensure!(s == 200, "transition to {to}: {s} {v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_runs_reach_the_qms_passing_ones_the_lims_signed_and_retried_with_one_key()
-> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_after = webhooks_table(6, 5, 4);
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let operator = new_key(&stack, Role::Operator, None).await?;
    let emil = login(&url, &admin, "emil", "engineer").await?;

    // The LIMS answers 500 three times to each event before taking it.
    let lims = Receiver::start().await?;
    lims.set_mode(Mode::FailEachEvent(3));
    subscribe(
        &url,
        &admin,
        "LIMS",
        &lims,
        &[
            "run.evaluated",
            "run.decided",
            "service_request.state_changed",
        ],
    )
    .await?;
    let qms = Receiver::start().await?;
    subscribe(&url, &admin, "QMS", &qms, &["nonconformance.raised"]).await?;

    let sr = service_request(&url, &operator, &["MOD-P", "MOD-F", "MOD-Q"]).await?;
    transition(&url, &operator, &sr, "intake").await?;
    let (pass, fail) = (uuid(1), uuid(2));
    let mut r = Run::new(&pass, 1, T0);
    stc(&mut r, "sample:MOD-P", 395.0, "erin")?;
    send(&stack, &r).await?;
    let mut r = Run::new(&fail, 100, T0);
    stc(&mut r, "sample:MOD-F", 350.0, "erin")?;
    send(&stack, &r).await?;

    // The QMS: a non-conformance for the failing run, with the failed
    // criterion's explanation.
    let nc = qms
        .wait_accepted("nonconformance.raised", |b| b["data"]["run_id"] == fail)
        .await?;
    let d = &nc.body["data"];
    assert_eq!(d["cause"], "evaluation", "{d}");
    assert_eq!(d["service_request"], sr.as_str(), "{d}");
    assert_eq!(d["sample"], "sample:MOD-F");
    let failed = d["failed_criteria"].as_array().context("criteria")?;
    assert!(!failed.is_empty(), "{d}");
    assert!(
        failed.iter().all(|c| c["verdict"] == "fail"
            && c["explanation"]
                .as_str()
                .is_some_and(|e| e.contains("pmax"))),
        "{d}"
    );
    assert_eq!(nc.body["id"], nc.idempotency_key.as_str());
    let nc_id = d["nonconformance_id"]
        .as_str()
        .context("nc id")?
        .to_string();
    assert!(
        nc_id.starts_with("NC-20") && nc_id.ends_with("-000001"),
        "{nc_id}"
    );
    // The record at the hub says the same.
    let (s, v) = call(
        Method::GET,
        &format!("{url}/api/v1/nonconformances/{nc_id}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["nonconformance"]["state"], "open");
    assert_eq!(v["nonconformance"]["failed_criteria"], d["failed_criteria"]);

    // The LIMS: both results, each on its fourth attempt with one key and
    // the same bytes every time.
    for (run, verdict) in [(&pass, "pass"), (&fail, "fail")] {
        let got = lims
            .wait_accepted("run.evaluated", |b| b["data"]["run_id"] == run.as_str())
            .await?;
        assert_eq!(got.body["data"]["final_verdict"], verdict, "{}", got.body);
        assert_eq!(got.body["data"]["protocol"]["id"], "stc-power");
        assert_eq!(got.body["subject"]["service_request"], sr.as_str());
        let attempts = lims.attempts_of(&got.idempotency_key);
        assert_eq!(
            attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
            [500, 500, 500, 200],
            "{:?}",
            lims.summary()
        );
        assert!(attempts.iter().all(|a| a.raw == got.raw && a.authentic));
    }
    let moved = lims
        .wait_accepted("service_request.state_changed", |b| {
            b["data"]["to"] == "intake"
        })
        .await?;
    assert_eq!(moved.body["data"]["from"], "received");
    // The passing run raised nothing.
    assert!(
        qms.received()
            .iter()
            .all(|r| r.body["data"]["run_id"] == fail.as_str())
    );
    let (_, v) = call(
        Method::GET,
        &format!("{url}/api/v1/nonconformances?run={pass}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(v["count"], 0, "{v}");

    // Evaluated again and still failing: a result for the LIMS, no second
    // non-conformance (written in the same transaction as the result).
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/runs/{fail}/evaluate"),
        Some(&emil),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let again = v["evaluation"]["evaluation_id"]
        .as_i64()
        .context("evaluation id")?;
    lims.wait_accepted("run.evaluated", |b| b["data"]["evaluation_id"] == again)
        .await?;
    let (_, v) = call(
        Method::GET,
        &format!("{url}/api/v1/nonconformances?run={fail}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(v["count"], 1, "{v}");

    // A rejected provisional verdict raises one, with the decision.
    let pool = stack.db().await?;
    let tc = provisional_tc200(&stack, &pool, "sample:MOD-Q").await?;
    evaluated(&url, &viewer, &tc, |e| e["verdict"] == "provisional").await?;
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/runs/{tc}/approval"),
        Some(&emil),
        Some(&json!({"decision": "reject", "comment": "cracked cell in the EL image"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let nc2 = qms
        .wait_accepted("nonconformance.raised", |b| {
            b["data"]["run_id"] == tc.as_str()
        })
        .await?;
    assert_eq!(nc2.body["data"]["cause"], "approval", "{}", nc2.body);
    assert_eq!(
        nc2.body["data"]["decision"]["comment"],
        "cracked cell in the EL image"
    );
    lims.wait_accepted("run.decided", |b| {
        b["data"]["run_id"] == tc.as_str() && b["data"]["final_verdict"] == "fail"
    })
    .await?;

    // Closing: engineers, with a comment, audited; viewers may not.
    let close = format!("{url}/api/v1/nonconformances/{nc_id}/close");
    let (s, _) = call(
        Method::POST,
        &close,
        Some(&viewer),
        Some(&json!({"comment": "x"})),
    )
    .await?;
    assert_eq!(s, 403);
    let (s, v) = call(
        Method::POST,
        &close,
        Some(&emil),
        Some(&json!({"comment": ""})),
    )
    .await?;
    assert_eq!(s, 422, "{v}");
    let (s, v) = call(
        Method::POST,
        &close,
        Some(&emil),
        Some(&json!({"comment": "module returned to the customer"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["nonconformance"]["state"], "closed");
    let (s, _) = call(
        Method::POST,
        &close,
        Some(&emil),
        Some(&json!({"comment": "again"})),
    )
    .await?;
    assert_eq!(s, 409);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'nonconformance.close'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(audited, 1);
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/nonconformances/NC-1999-999999"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 404);

    // Every request either receiver got was signed right.
    assert!(
        lims.received()
            .iter()
            .chain(qms.received().iter())
            .all(|r| r.authentic)
    );
    let (_, m) = call(Method::GET, &format!("{url}/metrics"), Some(&admin), None).await?;
    let m = m.as_str().unwrap_or_default();
    assert!(
        m.contains("hub_webhook_deliveries_total{outcome=\"delivered\"}"),
        "{m}"
    );
    assert!(
        m.contains("hub_webhook_attempts_total{result=\"http_error\"}"),
        "{m}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hold_up_issuing_and_ends_in_replayable_dead_letters()
-> Result<()> {
    let mut stack = Stack::new().await?;
    let pki = IssuingPki::new(stack.dir.path(), "lab")?;
    // Three attempts of at most one second, one delivery at a time.
    stack.hub_after = format!(
        "{}\n{}",
        pki.hub_table("lab_name = \"PV Lab\"\nlab_country = \"DE\""),
        webhooks_table(3, 1, 1)
    );
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let operator = new_key(&stack, Role::Operator, None).await?;
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let erin = login(&url, &admin, "erin", "engineer").await?;

    let slow = Receiver::start().await?;
    slow.set_mode(Mode::Sleep(Duration::from_secs(4)));
    subscribe(
        &url,
        &admin,
        "LIMS",
        &slow,
        &["certificate.issued", "service_request.state_changed"],
    )
    .await?;
    let sr = service_request(&url, &operator, &["MOD-P"]).await?;
    let pass = uuid(1);
    let mut r = Run::new(&pass, 1, T0);
    stc(&mut r, "sample:MOD-P", 395.0, "erin")?;
    send(&stack, &r).await?;
    evaluated(&url, &viewer, &pass, |_| true).await?;

    // Issuing answers while the receiver sleeps through every attempt.
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/certificates"),
        Some(&erin),
        Some(&json!({"sample": "sample:MOD-P"})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let cert = v["certificate"]["certificate_id"]
        .as_str()
        .context("id")?
        .to_string();
    // Two more events for the same receiver.
    transition(&url, &operator, &sr, "intake").await?;
    transition(&url, &operator, &sr, "cancelled").await?;

    // Each event: three attempts with one key, then a dead letter.
    let dead = wait_for("three dead letters", Duration::from_secs(120), || async {
        let (s, v) = call(
            Method::GET,
            &format!("{url}/api/v1/webhooks/dead-letters"),
            Some(&admin),
            None,
        )
        .await?;
        anyhow::ensure!(s == 200, "{v}");
        Ok((v["count"] == 3).then_some(v))
    })
    .await
    .with_context(|| format!("{:?}", slow.summary()))?;
    let letters = dead["dead_letters"].as_array().context("letters")?;
    for l in letters {
        assert_eq!(l["attempts"], 3, "{l}");
        assert!(
            l["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("webhooks.timeout_s")),
            "{l}"
        );
        let key = l["event_id"].as_str().context("event id")?;
        assert_eq!(slow.attempts_of(key).len(), 3, "{:?}", slow.summary());
    }
    let issued = letters
        .iter()
        .find(|l| l["event_type"] == "certificate.issued")
        .context("the certificate's letter")?;

    // Replay: admins only, audited; once the receiver is fixed it arrives
    // with the key of the attempts before.
    slow.set_mode(Mode::Ok);
    let replay = |id: i64, token: String| {
        let url = url.clone();
        async move {
            call(
                Method::POST,
                &format!("{url}/api/v1/webhooks/dead-letters/{id}/replay"),
                Some(&token),
                None,
            )
            .await
        }
    };
    let id = issued["delivery_id"].as_i64().context("delivery id")?;
    for t in [&viewer, &operator, &erin] {
        let (s, _) = replay(id, t.to_string()).await?;
        assert_eq!(s, 403);
    }
    for l in letters {
        let (s, v) = replay(l["delivery_id"].as_i64().context("id")?, admin.clone()).await?;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["delivery"]["state"], "pending");
    }
    let (s, _) = replay(id, admin.clone()).await?;
    assert!(
        s == 409 || s == 200,
        "a replayed letter is no longer dead: {s}"
    );
    let (s, _) = replay(999_999, admin.clone()).await?;
    assert_eq!(s, 404);
    let got = slow
        .wait_accepted("certificate.issued", |b| {
            b["data"]["certificate_id"] == cert.as_str()
        })
        .await?;
    assert_eq!(
        got.idempotency_key,
        issued["event_id"].as_str().unwrap_or_default()
    );
    assert_eq!(got.body["data"]["sample"], "sample:MOD-P");
    for to in ["intake", "cancelled"] {
        slow.wait_accepted("service_request.state_changed", |b| b["data"]["to"] == to)
            .await?;
    }
    let (_, v) = call(
        Method::GET,
        &format!("{url}/api/v1/webhooks/dead-letters"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(v["count"], 0, "{v}");
    let pool = stack.db().await?;
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'webhook.replay'")
            .fetch_one(&pool)
            .await?;
    assert!(audited >= 3, "{audited}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_when_the_hub_is_killed_are_sent_after_it_restarts() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_after = webhooks_table(50, 2, 2);
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let lims = Receiver::start().await?;
    lims.set_mode(Mode::AlwaysFail);
    subscribe(
        &url,
        &admin,
        "LIMS",
        &lims,
        &["service_request.state_changed"],
    )
    .await?;
    let sr = service_request(&url, &admin, &[]).await?;
    transition(&url, &admin, &sr, "intake").await?;
    wait_for("a failed attempt", Duration::from_secs(60), || async {
        Ok((!lims.received().is_empty()).then_some(()))
    })
    .await?;
    stack.hub.take().context("hub")?.kill9()?;
    // A change made while the hub is down would be another hub's; this one
    // was committed, with its delivery, before the kill.
    lims.set_mode(Mode::Ok);
    stack.start_hub().await?;
    let got = lims
        .wait_accepted("service_request.state_changed", |b| {
            b["data"]["service_request"] == sr.as_str()
        })
        .await?;
    let attempts = lims.attempts_of(&got.idempotency_key);
    assert!(attempts.len() >= 2, "{:?}", lims.summary());
    assert!(attempts.iter().all(|a| a.raw == got.raw));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_deliveries_are_in_flight_than_webhooks_concurrency() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_after = webhooks_table(3, 60, 2);
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let lims = Receiver::start().await?;
    lims.set_mode(Mode::Hold);
    subscribe(
        &url,
        &admin,
        "LIMS",
        &lims,
        &["service_request.state_changed"],
    )
    .await?;
    for _ in 0..2 {
        let sr = service_request(&url, &admin, &[]).await?;
        transition(&url, &admin, &sr, "intake").await?;
        transition(&url, &admin, &sr, "cancelled").await?;
    }
    wait_for("two held requests", Duration::from_secs(60), || async {
        Ok((lims.held() == 2).then_some(()))
    })
    .await?;
    // While two are held the worker has claimed no third: two deliveries
    // have had an attempt, two none.
    let pool = stack.db().await?;
    let attempted: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM webhook_deliveries ORDER BY attempts")
            .fetch_all(&pool)
            .await?;
    assert_eq!(attempted, [0, 0, 1, 1]);
    assert_eq!(lims.received().len(), 2);
    lims.release();
    wait_for("all four delivered", Duration::from_secs(60), || async {
        Ok((lims.accepted().len() == 4).then_some(()))
    })
    .await?;
    Ok(())
}
