//! The open loop's scheduler, accounting and flags, against a real HTTP
//! server on a loopback socket. No timed assertions: the checks hold on a
//! machine of any speed (deadlines are generous; a request that never gets
//! an answer times out whatever the clock does).

use super::Args;
use super::engine::{Paths, Plan, crossing, quantile, run};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;

fn plan(rate: f64, warm_ms: u64, window_ms: u64, conns: usize, timeout_s: u64) -> Plan {
    Plan {
        rate,
        warm: Duration::from_millis(warm_ms),
        window: Duration::from_millis(window_ms),
        max_connections: conns,
        timeout: Duration::from_secs(timeout_s),
    }
}

async fn server() -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/fail", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/stall", get(std::future::pending::<&'static str>));
    e2e_tests::bench::serve(app)
        .await
        .expect("a loopback server")
}

#[test]
fn schedule_is_evenly_spaced_and_counts_the_window_only() {
    let p = plan(200.0, 100, 500, 4, 1);
    assert_eq!(p.due(0), Duration::ZERO);
    assert_eq!(p.due(200), Duration::from_secs(1));
    assert_eq!(p.due(1), Duration::from_millis(5));
    // 600 ms at 200/s: 120 requests, the first 20 in the warm-up.
    assert_eq!(p.count(), (120, 20));
}

#[test]
fn quantiles_nearest_rank_and_timeouts_stay_in_the_tail() {
    let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(quantile(&mut v, 0.5), 50.0);
    assert_eq!(quantile(&mut v, 0.99), 99.0);
    assert_eq!(quantile(&mut v, 1.0), 100.0);
    assert_eq!(quantile(&mut v, 0.0), 1.0);
    v[3] = f64::INFINITY;
    v[7] = f64::INFINITY;
    assert_eq!(quantile(&mut v, 0.98), 100.0);
    assert!(quantile(&mut v, 0.99).is_infinite());
    assert!(quantile(&mut [], 0.5).is_nan());
}

#[test]
fn crossing_is_the_lowest_rate_over_the_goal() {
    let points = [
        (3000.0, 450.0),
        (500.0, 20.0),
        (2000.0, 210.0),
        (1000.0, 40.0),
    ];
    assert_eq!(crossing(&points, 200.0), Some(2000.0));
    assert_eq!(crossing(&points[1..2], 200.0), None);
    // No answer at all (NaN) does not meet the goal.
    assert_eq!(crossing(&[(100.0, f64::NAN)], 200.0), Some(100.0));
}

#[test]
fn flags_parse_with_defaults_and_bad_input_is_refused() {
    let a = |s: &str| Args::parse(s.split_whitespace().map(String::from));
    let got = a("--rates 500,1000 --seconds 5").expect("valid flags");
    assert_eq!(got.rates, vec![500.0, 1000.0]);
    assert_eq!(
        (got.seconds, got.max_connections, got.timeout_s),
        (5, 256, 10)
    );
    assert_eq!(got.ingest_rows_per_s, 20_000.0);
    assert!(a("--seconds 5").is_err(), "rates are required");
    assert!(a("--rates 0").is_err());
    assert!(a("--rates 100,x").is_err());
    assert!(a("--rates 100 --bogus 1").is_err());
    assert!(a("--rates 100 --seconds").is_err());
}

/// Every scheduled request is accounted for (answered or failed), the
/// latency from the due time is never below the latency from the send, and
/// no more connections than allowed are used.
#[tokio::test]
async fn every_request_is_accounted_from_its_due_time() {
    let base = server().await;
    let paths: Paths = Arc::new(|i| {
        let k = (i % 2) as usize;
        (k, ["/ok", "/fail"][k].to_string())
    });
    let p = plan(200.0, 100, 500, 4, 60);
    let mut warmed = 0;
    let (o, ()) = run(&reqwest::Client::new(), &base, 2, &paths, &p, || {
        warmed += 1;
    })
    .await;
    assert_eq!(warmed, 1);
    let (total, first) = p.count();
    assert_eq!(o.scheduled, total - first);
    assert_eq!(o.ok + o.errors + o.timeouts, o.scheduled);
    // Odd requests are /fail: half of the window (first is even).
    assert_eq!(o.errors, (total - first) / 2);
    assert_eq!(o.timeouts, 0);
    assert!(o.first_error.as_deref().is_some_and(|e| e.contains("503")));
    assert!(o.by_route[1].is_empty(), "failures carry no latency");
    assert_eq!(o.by_route[0].len() as u64, o.ok);
    assert!(o.peak_in_flight >= 1 && o.peak_in_flight <= 4);
    let (mut due, mut sent) = (o.latencies(), o.service_ms.clone());
    for q in [0.5, 0.9, 0.99, 1.0] {
        assert!(quantile(&mut due, q) >= quantile(&mut sent, q));
    }
    assert!(o.achieved_per_s > 0.0);
}

/// A server that never answers: every connection stays busy, so requests
/// due meanwhile start late, and each one times out from its due time.
#[tokio::test]
async fn a_stalled_server_gives_late_starts_and_timeouts() {
    let base = server().await;
    let paths: Paths = Arc::new(|_| (0, "/stall".to_string()));
    let p = plan(100.0, 0, 200, 2, 2);
    let (o, ()) = run(&reqwest::Client::new(), &base, 1, &paths, &p, || ()).await;
    assert_eq!(o.scheduled, 20);
    assert_eq!((o.ok, o.errors, o.timeouts), (0, 0, 20));
    // Requests 0 and 1 hold both connections for their 2 s: request 2,
    // due at 20 ms, finds none free.
    assert!(o.late_starts >= 1, "{o:?}");
    assert_eq!(o.peak_in_flight, 2);
    let mut l = o.latencies();
    assert!(quantile(&mut l, 0.5).is_infinite());
    assert_eq!(o.achieved_per_s, 0.0);
}
