//! Issue #17: the daemons speak systemd's notification protocol to a real
//! `UnixDatagram` socket given as `$NOTIFY_SOCKET`, as systemd would.
//! `READY=1` comes once the ports answer, `STATUS=` lines carry the state,
//! `WATCHDOG=1` comes every half `$WATCHDOG_USEC` while the main loops make
//! progress and stops while one is stuck, and SIGTERM brings `STOPPING=1`.
//! The probes: the hub's `/ready` follows its database, the agent's `/ready`
//! stays 200 with the hub down (it buffers: that is its job).
// qi-test: tier-independent (the notification protocol of both daemons): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, ensure};
use e2e_tests::notify::{Manager, has_line};
use e2e_tests::{Stack, get_json, wait_for};
use std::time::Duration;

/// Two seconds: pings every second, a loop stuck for 2 s stops them.
const WATCHDOG_USEC: &str = "2000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_ready_status_watchdog_stall_and_stopping() -> Result<()> {
    let mut stack = Stack::new().await?;
    // Rollup passes every second: the background loop the stall below blocks.
    stack.hub_after = "[analytics]\nrollup_interval_s = 1\n".into();
    let manager = Manager::bind(stack.dir.path(), vec![stack.hub_http_port, stack.grpc_port])?;
    stack.hub_env = manager.env(WATCHDOG_USEC);
    stack.start_hub().await?;

    let ready = manager
        .wait("READY=1", 0, |t| has_line(t, "READY=1"))
        .await?;
    let first = &manager.messages()[ready];
    ensure!(
        first.ports_answered,
        "READY=1 came before the REST and gRPC ports answered"
    );
    ensure!(
        first.text.contains("STATUS=0 gateways connected"),
        "{first:?}"
    );
    // Pings keep coming while every loop moves.
    for n in 1..=3 {
        manager
            .wait(&format!("WATCHDOG=1 #{n}"), ready + n, |t| {
                has_line(t, "WATCHDOG=1")
            })
            .await?;
    }

    // A stuck rollup pass: its table locked by another session (as a stuck
    // migration or VACUUM FULL would hold it), the pass waits on the lock.
    let pool = stack.db().await?;
    let mut lock = pool.begin().await?;
    sqlx::query("LOCK TABLE samples IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;
    let stalled = manager
        .wait("a STATUS naming the stalled rollup", 0, |t| {
            t.contains("stalled: rollup pass")
        })
        .await
        .with_context(|| stack.logs())?;
    // Three more status refreshes, all while stalled, none a ping.
    wait_for(
        "three status refreshes while stalled",
        Duration::from_secs(60),
        || async {
            Ok((manager.count(stalled, |t| t.contains("stalled: rollup pass")) >= 4).then_some(()))
        },
    )
    .await?;
    let pings_while_stalled = manager
        .messages()
        .iter()
        .skip(stalled)
        .take_while(|m| m.text.contains("stalled:"))
        .filter(|m| has_line(&m.text, "WATCHDOG=1"))
        .count();
    ensure!(
        pings_while_stalled == 0,
        "WATCHDOG=1 sent while a loop was stalled: {:?}",
        manager.messages()
    );
    lock.rollback().await?;
    let back = manager.messages().len();
    manager
        .wait("WATCHDOG=1 again once the lock is gone", back, |t| {
            has_line(t, "WATCHDOG=1")
        })
        .await?;

    // SIGTERM: STOPPING=1 before the process ends.
    let before = manager.messages().len();
    let hub = stack.hub.take().context("hub")?;
    let st = hub.terminate(Duration::from_secs(30))?;
    ensure!(st.success(), "hub exit: {st}");
    manager
        .wait("STOPPING=1", before, |t| has_line(t, "STOPPING=1"))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_ready_follows_its_database() -> Result<()> {
    if e2e_tests::pg::skip_on_shared_server(
        "hub_ready_follows_its_database",
        "stops and starts PostgreSQL",
    ) {
        return Ok(());
    }
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let url = format!("{}/ready", stack.hub_url());
    let live = format!("{}/live", stack.hub_url());
    let (s, body) = get_json(&url).await?;
    ensure!(s == 200 && body["status"] == "ready", "{s} {body}");

    stack.pg.as_mut().context("pg")?.stop()?;
    let body = wait_for("hub /ready 503", Duration::from_secs(60), || async {
        let (s, b) = get_json(&url).await?;
        Ok((s == 503).then_some(b))
    })
    .await?;
    ensure!(
        body["reason"] == "database_unreachable",
        "a fixed reason word, nothing of the driver's error: {body}"
    );
    let (s, b) = get_json(&live).await?;
    ensure!(s == 200 && b["status"] == "alive", "/live {s} {b}");

    stack.pg.as_mut().context("pg")?.start_again().await?;
    wait_for("hub /ready 200 again", Duration::from_secs(60), || async {
        let (s, _) = get_json(&url).await?;
        Ok((s == 200).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ready_with_the_hub_down_watchdog_reload_and_stopping() -> Result<()> {
    // No hub at all: the uplink keeps retrying, the agent buffers.
    let mut stack = Stack::edge_only()?;
    stack.start_sim(false).await?;
    let manager = Manager::bind(stack.dir.path(), vec![stack.agent_http_port])?;
    stack.agent_env = manager.env(WATCHDOG_USEC);
    let cfg = stack.write_agent_config("gw-notify", 200, "")?;
    stack.start_agent(&cfg).await?;

    let ready = manager
        .wait("READY=1", 0, |t| has_line(t, "READY=1"))
        .await?;
    ensure!(
        manager.messages()[ready].ports_answered,
        "READY=1 came before the local API answered"
    );
    manager
        .wait("a STATUS with the device online", ready, |t| {
            t.contains("STATUS=uplink ") && t.contains("1/1 devices online")
        })
        .await?;
    for n in 1..=3 {
        manager
            .wait(
                &format!("WATCHDOG=1 #{n} with the hub down"),
                ready + n,
                |t| has_line(t, "WATCHDOG=1"),
            )
            .await
            .with_context(|| stack.logs())?;
    }

    let (s, b) = get_json(&format!("{}/ready", stack.agent_url())).await?;
    ensure!(
        s == 200 && b["status"] == "ready",
        "the agent is ready with the hub down: {s} {b}"
    );
    let (s, b) = get_json(&format!("{}/live", stack.agent_url())).await?;
    ensure!(
        s == 200 && b == serde_json::json!({"status": "alive"}),
        "{s} {b}"
    );

    // systemctl reload: ExecReload sends SIGHUP.
    let agent = stack.agent.as_ref().context("agent")?;
    agent.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_for("the reload on SIGHUP", Duration::from_secs(30), || async {
        Ok(agent
            .log_text()
            .contains("SIGHUP: configuration reloaded")
            .then_some(()))
    })
    .await?;
    wait_for(
        "/ready 200 after the reload",
        Duration::from_secs(30),
        || async {
            let (s, _) = get_json(&format!("{}/ready", stack.agent_url())).await?;
            Ok((s == 200).then_some(()))
        },
    )
    .await?;

    let before = manager.messages().len();
    let agent = stack.agent.take().context("agent")?;
    let st = agent.terminate(Duration::from_secs(30))?;
    ensure!(st.success(), "agent exit: {st}");
    manager
        .wait("STOPPING=1", before, |t| has_line(t, "STOPPING=1"))
        .await?;
    Ok(())
}
