//! A run's evaluation waits for its readings (issue #14, found by CI): the
//! hub writes two batches of a stream at once, so the batch holding a run's
//! COMPLETED event can commit before the batch holding its measurements.
//! Here the measurements' batch is held back by a lock on `series` (a real
//! PostgreSQL lock, taken by the test) while the COMPLETED batch commits; the
//! run must still be evaluated once, from all its readings, and pass.

use anyhow::{Context, Result};
use e2e_tests::grpc::{Client, exchange, hello};
use e2e_tests::hub_auth::{admin_token, call};
use e2e_tests::runs::{Run, stc};
use e2e_tests::{Stack, wait_for};
use qi_proto::v1::{RunEventKind, hub_message};
use reqwest::Method;
use sqlx::Connection;
use std::time::Duration;

const T0: i64 = 1_780_000_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_batch_committed_before_the_readings_is_evaluated_after_them() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let pool = stack.db().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);

    let run_id = "5d1e3c9a-0b6f-4e2d-9c1a-7f3b2a1e0001";
    let mut run = Run::new(run_id, 1, T0);
    stc(&mut run, "sample:ORDER-1", 400.0, "erin")?;
    let completed = run
        .events
        .iter()
        .find(|e| e.kind == RunEventKind::Completed as i32)
        .context("a COMPLETED event")?
        .seq;
    // Everything but the COMPLETED event, then the COMPLETED event alone.
    let (first, second) = (
        run.batch(0..=completed - 1),
        run.batch(completed..=completed),
    );

    // Hold the run's new series (and so the first batch's write) back.
    let mut lock = sqlx::PgConnection::connect(&stack.pg_url()?).await?;
    let mut held = lock.begin().await?;
    sqlx::query("LOCK TABLE series IN EXCLUSIVE MODE")
        .execute(&mut *held)
        .await?;

    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let sending =
        tokio::spawn(
            async move { exchange(&client, vec![hello("gw-order"), first, second]).await },
        );

    // The COMPLETED batch commits on its own while the first one waits.
    wait_for(
        "the COMPLETED batch committed ahead of the readings",
        Duration::from_secs(20),
        || async {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM runs WHERE run_id = $1::uuid")
                    .bind(run_id)
                    .fetch_optional(&pool)
                    .await?;
            Ok((state.as_deref() == Some("completed")).then_some(()))
        },
    )
    .await?;
    // Time enough for an evaluation started at that commit to be stored.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run_evaluations WHERE run_id = $1::uuid")
            .bind(run_id)
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        early, 0,
        "evaluated before the run's readings were committed"
    );
    held.commit().await?;

    let (got, err) = sending.await??;
    assert!(err.is_none(), "{err:?}");
    let acks = got
        .iter()
        .filter(|m| matches!(m, hub_message::Kind::Ack(_)))
        .count();
    assert_eq!(acks, 2, "{got:?}");

    let v = wait_for("the run evaluated", Duration::from_secs(20), || async {
        let (s, v) = call(
            Method::GET,
            &format!("{url}/api/v1/runs/{run_id}"),
            Some(&admin),
            None,
        )
        .await?;
        anyhow::ensure!(s == 200, "{s} {v}");
        Ok((!v["evaluation"].is_null()).then_some(v))
    })
    .await?;
    assert_eq!(v["evaluation"]["verdict"], "pass", "{v}");
    // Once: the readings' batch found the run completed and evaluated it;
    // the COMPLETED batch acknowledged right after it did not again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM run_evaluations WHERE run_id = $1::uuid")
        .bind(run_id)
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 1, "evaluations of the run");
    Ok(())
}
