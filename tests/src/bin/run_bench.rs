//! Protocol runs end to end (BENCHMARKS.md, "Protocol runs (issue #14)"):
//! PostgreSQL, the hub, `pv-rig-sim` at TIME_SCALE, an `instrument-sim`
//! SDM630 and one agent polling all seven devices (the rig's six every
//! 200 ms, the meter every 1 s, as a site gateway next to a rig would) with
//! the rig's bench and `runs.time_scale` = TIME_SCALE.
//!
//! 1. Polling alone for ALONE_S seconds: the agent's CPU and RSS.
//! 2. An stc-power run on the sample (the `before.pmax` of the TC run).
//! 3. A TC run of CYCLES cycles (the shipped tc200 for 200, else a copy with
//!    `count = CYCLES` and id `tcCYCLES`) through the agent's local API:
//!    wall time from start to COMPLETED against the nominal duration /
//!    TIME_SCALE, the agent's CPU and RSS while run and polling go on.
//! 4. At the hub: the readings the run recorded (samples of its run series),
//!    their arrival lag (received_at - ts: both this machine's clock), when
//!    the COMPLETED event and the last reading were stored, when the
//!    evaluation was stored after COMPLETED arrived.
//! 5. An stc-power run after: the TC run's re-evaluation with `after.pmax`.
//!
//! Run it through `scripts/bench-runs.sh [CYCLES] [TIME_SCALE] [ALONE_S]`
//! (release builds); binaries come from `QI_BIN_DIR` (default
//! target/debug, as the tests). Output: one line per figure, then one
//! `json: {...}` line with all of them (the smoke test reads it).
use anyhow::{Context, Result, bail, ensure};
use e2e_tests::bench::{cpu_s, rss_mib, vm_hwm_mib};
use e2e_tests::pv_rig::RigSim;
use e2e_tests::{Stack, wait_for, workspace_root};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SAMPLE: &str = "sample:BENCH-1";

/// CPU and memory of one process over a window, sampled by the caller.
struct Window {
    pid: u32,
    t0: Instant,
    cpu0: f64,
    rss_max: f64,
}

impl Window {
    fn start(pid: u32) -> Window {
        Window {
            pid,
            t0: Instant::now(),
            cpu0: cpu_s(pid),
            rss_max: rss_mib(pid),
        }
    }

    fn sample(&mut self) {
        self.rss_max = self.rss_max.max(rss_mib(self.pid));
    }

    /// (seconds, CPU % of one core, max RSS sampled, RSS now), MiB.
    fn finish(mut self) -> (f64, f64, f64, f64) {
        self.sample();
        let s = self.t0.elapsed().as_secs_f64();
        let cpu = (cpu_s(self.pid) - self.cpu0) / s * 100.0;
        (s, cpu, self.rss_max, rss_mib(self.pid))
    }
}

/// The protocols offered: stc-power as shipped and the TC run's template.
/// Returns the directory and the TC protocol id.
fn protocols(dir: &Path, cycles: u32) -> Result<(PathBuf, String)> {
    let p = dir.join("protocols");
    std::fs::create_dir_all(&p)?;
    let root = workspace_root().join("protocols");
    std::fs::copy(root.join("stc-power.toml"), p.join("stc-power.toml"))?;
    let tc200 = std::fs::read_to_string(root.join("tc200.toml"))?;
    if cycles == 200 {
        std::fs::write(p.join("tc200.toml"), tc200)?;
        return Ok((p, "tc200".into()));
    }
    let id = format!("tc{cycles}");
    let text = tc200
        .replace("id = \"tc200\"", &format!("id = \"{id}\""))
        .replace("count = 200", &format!("count = {cycles}"));
    // A template edited elsewhere must not silently give a 200-cycle run.
    ensure!(
        text.contains(&format!("count = {cycles}\n")) && text.contains(&id),
        "protocols/tc200.toml no longer has `count = 200` and its id: fix the copy here"
    );
    std::fs::write(p.join(format!("{id}.toml")), text)?;
    Ok((p, id))
}

/// The agent's config: the meter, then the rig's devices and bench with
/// their real ports, the protocols and the time scale.
fn agent_config(stack: &Stack, rig: &RigSim, protocols: &Path, scale: f64) -> Result<PathBuf> {
    let example =
        std::fs::read_to_string(workspace_root().join("examples/pv-rig/devices-and-bench.toml"))?;
    ensure!(
        example.contains("time_scale = 1000\n"),
        "examples/pv-rig/devices-and-bench.toml changed its time_scale line"
    );
    let rig_part = example
        .replace("127.0.0.1:5021", &rig.modbus.to_string())
        .replace("127.0.0.1:5025", &rig.scpi.to_string())
        .replace(
            "/usr/share/edge-agent/protocols",
            &protocols.display().to_string(),
        )
        .replace("time_scale = 1000\n", &format!("time_scale = {scale}\n"));
    let meter = format!(
        "[[devices]]\nid = \"meter-1\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{}\" }}\npoll_interval_ms = 1000\n\n",
        stack.sim_port
    );
    stack.agent_config_with(&format!("{meter}{rig_part}"))
}

/// One request to the agent's local API (the harness's operator session).
async fn agent(stack: &Stack, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
    let c = e2e_tests::http::Client::new();
    let url = format!("{}{path}", stack.agent_url());
    let rb = match body {
        Some(b) => c.post(&url).json(&b),
        None => c.get(&url),
    };
    let r = rb.send().await.with_context(|| format!("agent {path}"))?;
    let s = r.status();
    let text = r.text().await?;
    Ok((
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Starts a run; returns its id.
async fn start_run(stack: &Stack, protocol: &str, parameters: Value) -> Result<String> {
    let body = json!({"protocol": protocol, "bench": "pv-rig", "sample_id": SAMPLE, "parameters": parameters});
    let (s, run) = agent(stack, "/api/v1/runs", Some(body)).await?;
    ensure!(s == StatusCode::CREATED, "start {protocol}: {s} {run}");
    Ok(run["id"].as_str().context("run id")?.to_string())
}

/// The run as the agent shows it.
async fn agent_run(stack: &Stack, id: &str) -> Result<Value> {
    let (s, v) = agent(stack, &format!("/api/v1/runs/{id}"), None).await?;
    ensure!(s == StatusCode::OK, "GET run {id}: {s} {v}");
    Ok(v)
}

/// Waits for a short run to complete (else fails with its state).
async fn complete_short(stack: &Stack, id: &str) -> Result<Value> {
    let v = wait_for("a short run to end", Duration::from_secs(120), || async {
        let v = agent_run(stack, id).await?;
        Ok((v["state"] != "running" && v["state"] != "paused").then_some(v))
    })
    .await
    .with_context(|| stack.logs())?;
    ensure!(v["state"] == "completed", "run {id} ended {}", v["state"]);
    Ok(v)
}

fn event_at(run: &Value, kind: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    run["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["kind"] == kind)
        .and_then(|e| e["at"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
}

/// Seconds of a PostgreSQL interval computed in SQL.
type Secs = Option<f64>;

#[tokio::main]
async fn main() -> Result<()> {
    let arg = |i: usize, d: f64| -> Result<f64> {
        Ok(std::env::args()
            .nth(i)
            .map(|s| s.parse::<f64>())
            .transpose()
            .with_context(|| format!("argument {i} is not a number"))?
            .unwrap_or(d))
    };
    let cycles = arg(1, 200.0)? as u32;
    let scale = arg(2, 1000.0)?;
    let alone_s = arg(3, 60.0)?;
    ensure!(
        (1..=200).contains(&cycles),
        "CYCLES must be 1..=200 (the template's count limit)"
    );
    ensure!(scale >= 1.0, "TIME_SCALE must be >= 1");
    let bin_dir = e2e_tests::bin("edge-agent")?
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();

    let mut stack = Stack::new().await?;
    eprintln!("logs and configs in {}", stack.dir.path().display());
    stack.start_hub().await?;
    let scale_arg = scale.to_string();
    let rig = RigSim::start(&stack.log_path("rig"), &["--time-scale", &scale_arg]).await?;
    stack.start_sim(false).await?;
    let (pdir, tc) = protocols(stack.dir.path(), cycles)?;
    let cfg = agent_config(&stack, &rig, &pdir, scale)?;
    stack.start_agent(&cfg).await?;
    wait_for("all 7 devices online", Duration::from_secs(60), || async {
        let h = stack.agent_health().await?;
        let d = h["devices"].as_array().context("devices")?;
        Ok((d.len() == 7 && d.iter().all(|d| d["state"] == "online")).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    let pid = stack.agent.as_ref().context("agent")?.pid();
    let (_, offered) = agent(&stack, "/api/v1/protocols", None).await?;
    let nominal_s = offered["protocols"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == tc.as_str()))
        .and_then(|p| p["nominal_duration_s"].as_f64())
        .with_context(|| format!("{tc} not offered: {offered}"))?;

    // 1. Polling alone.
    eprintln!("polling alone for {alone_s} s");
    let mut w = Window::start(pid);
    let until = Instant::now() + Duration::from_secs_f64(alone_s);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.sample();
    }
    let alone = w.finish();
    let hwm_alone = vm_hwm_mib(pid);

    // 2. STC before.
    let stc = json!({"rated_pmax": 400});
    let before = start_run(&stack, "stc-power", stc.clone()).await?;
    let before_v = complete_short(&stack, &before).await?;

    // 3. The TC run, with polling going on.
    eprintln!(
        "{tc}: nominal {:.1} h, expected {:.0} s of wall time at {scale}x",
        nominal_s / 3600.0,
        nominal_s / scale
    );
    let mut w = Window::start(pid);
    let id = start_run(&stack, &tc, json!({"area_m2": 1.6})).await?;
    let limit = Duration::from_secs_f64(nominal_s / scale * 3.0 + 600.0);
    let mut last_note = Instant::now();
    let done = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.sample();
        let v = agent_run(&stack, &id).await.with_context(|| stack.logs())?;
        if v["state"] != "running" && v["state"] != "paused" {
            break v;
        }
        if last_note.elapsed() >= Duration::from_secs(60) {
            last_note = Instant::now();
            eprintln!(
                "{:.0} s: step {} ({}/{} steps), {:.1} simulated h, agent RSS {:.1} MiB",
                w.t0.elapsed().as_secs_f64(),
                v["step"],
                v["steps_done"],
                v["executed_steps"],
                v["elapsed_s"].as_f64().unwrap_or(0.0) / 3600.0,
                rss_mib(pid)
            );
        }
        if w.t0.elapsed() > limit {
            bail!("{tc} still {} after {limit:?}: {v}", v["state"]);
        }
    };
    let run = w.finish();
    let hwm_run = vm_hwm_mib(pid);
    ensure!(
        done["state"] == "completed",
        "{tc} ended {}: {}",
        done["state"],
        done["message"]
    );
    // The view keeps the newest 200 events: STARTED is gone after a long
    // run, its time stays in `started_at`.
    let started = done["started_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let wall_s = match (started, event_at(&done, "completed")) {
        (Some(a), Some(b)) => (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => run.0,
    };
    let sim_s = done["elapsed_s"].as_f64().unwrap_or(0.0);

    // 4. At the hub: everything delivered, the run completed there.
    let t_done = Instant::now();
    let hub_run = format!("{}/api/v1/runs/{id}", stack.hub_url());
    let hub_seen_s = wait_for(
        "the hub's run completed and the agent's backlog acknowledged",
        Duration::from_secs(300),
        || async {
            let (_, h) = e2e_tests::get_json(&hub_run).await?;
            let backlog = stack.agent_health().await?["buffer"]["backlog_high"].clone();
            Ok((h["run"]["state"] == "completed" && backlog == 0)
                .then(|| t_done.elapsed().as_secs_f64()))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let pool = stack.db().await?;
    let (n, p50, p99, max_lag, last_after_completed): (i64, Secs, Secs, Secs, Secs) =
        sqlx::query_as(
            "WITH x AS (SELECT extract(epoch FROM s.received_at - s.ts)::float8 AS lag, s.received_at
                          FROM samples s JOIN series r USING (series_id) WHERE r.run_id = $1::uuid)
             SELECT count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag),
                    extract(epoch FROM max(received_at) - (SELECT ts FROM run_events
                        WHERE run_id = $1::uuid AND kind = 'completed'))::float8
               FROM x",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await?;
    let per_series: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.run_series, count(*) FROM samples s JOIN series r USING (series_id)
          WHERE r.run_id = $1::uuid GROUP BY 1 ORDER BY 1",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await?;
    let (events, completed_lag): (i64, Secs) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM max(received_at - ts) FILTER (WHERE kind = 'completed'))::float8
           FROM run_events WHERE run_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await?;
    // The first evaluation (its own task at the hub): `evaluated_at` is its
    // transaction's start, so this is when it began.
    let (verdict, eval_after): (String, Secs) = wait_for(
        "the hub's evaluation of the run",
        Duration::from_secs(120),
        || async {
            Ok(sqlx::query_as(
                "SELECT e.verdict, extract(epoch FROM e.evaluated_at - c.received_at)::float8
                   FROM run_evaluations e, run_events c
                  WHERE e.run_id = $1::uuid AND c.run_id = e.run_id AND c.kind = 'completed'
                  ORDER BY e.evaluation_id LIMIT 1",
            )
            .bind(&id)
            .fetch_optional(&pool)
            .await?)
        },
    )
    .await?;

    // 5. STC after: the TC run is evaluated again with after.pmax. The run
    // ends with the chamber's setpoint back at 25 Cel; the module must be
    // there too, or the sweep measures a cold module's higher Pmax.
    wait_for(
        "the module back at 25 Cel",
        Duration::from_secs(120),
        || async {
            let t = rig.state().await?["module"]["temperature"].as_f64();
            Ok(t.filter(|t| (t - 25.0).abs() <= 0.5).map(|_| ()))
        },
    )
    .await?;
    let after = start_run(&stack, "stc-power", stc).await?;
    let after_v = complete_short(&stack, &after).await?;
    let (re_verdict, results): (String, Value) = wait_for(
        "the TC run re-evaluated with after.pmax",
        Duration::from_secs(120),
        || async {
            Ok(sqlx::query_as(
                "SELECT verdict, results FROM run_evaluations WHERE run_id = $1::uuid
                  ORDER BY evaluation_id DESC LIMIT 1",
            )
            .bind(&id)
            .fetch_optional(&pool)
            .await?
            .filter(|(_, r): &(String, Value)| {
                r.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|c| c["id"] == "pmax-degradation" && c["verdict"] != "no_verdict")
                })
            }))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let criteria: Vec<String> = results
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| format!("{} {}", c["id"].as_str().unwrap_or("?"), c["verdict"]))
                .collect()
        })
        .unwrap_or_default();
    let metrics = e2e_tests::http::get(format!("{}/metrics", stack.hub_url()))
        .await?
        .text()
        .await?;
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let (eval_sum, eval_n) = (
        metric("hub_run_evaluation_seconds_sum"),
        metric("hub_run_evaluation_seconds_count"),
    );
    let agent_metrics = e2e_tests::http::get(format!("{}/metrics", stack.agent_url()))
        .await?
        .text()
        .await?;
    let missed = agent_metrics
        .lines()
        .find(|l| l.starts_with("edge_run_record_missed_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("?")
        .to_string();
    let rig_state = rig.state().await?;
    let machine = std::thread::available_parallelism().map_or(0, |n| n.get());

    let pmax = |v: &Value| v["values"]["stc.pmax"].as_f64().unwrap_or(f64::NAN);
    let f = |v: Secs| v.unwrap_or(f64::NAN);
    println!("machine: {machine} cores; binaries: {bin_dir}");
    println!(
        "run: {tc} ({cycles} cycles) at {scale}x; agent polls 7 devices (rig 6 x 200 ms, SDM630 1 s)"
    );
    println!(
        "wall time start -> COMPLETED: {wall_s:.1} s (nominal {:.1} h / {scale} = {:.1} s; ratio {:.3}); the engine's simulated elapsed {:.2} h / {scale} = {:.1} s (waits last longer than nominal while the module lags)",
        nominal_s / 3600.0,
        nominal_s / scale,
        wall_s / (nominal_s / scale),
        sim_s / 3600.0,
        sim_s / scale
    );
    println!(
        "recorded at the hub: {n} readings in run series ({}; 3 records every simulated minute over {:.1} h give {}), {events} run events; agent: record samples missed (edge_run_record_missed_total) {missed}",
        per_series
            .iter()
            .map(|(s, c)| format!("{s} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        sim_s / 3600.0,
        3 * ((sim_s / 60.0).floor() as i64 + 1)
    );
    println!(
        "arrival at the hub (received_at - ts): p50 {:.3} s, p99 {:.3} s, max {:.3} s; COMPLETED stored {:.3} s after the agent's event, last reading stored {:.3} s after it; seen by this client (hub state completed + agent high lane acknowledged) {hub_seen_s:.1} s after the agent showed completed",
        f(p50),
        f(p99),
        f(max_lag),
        f(completed_lag),
        f(last_after_completed)
    );
    println!(
        "evaluation: the first began {:.3} s after COMPLETED was stored (verdict {verdict}); hub_run_evaluation_seconds mean {:.3} s over {eval_n} evaluations; after the STC after: verdict {re_verdict} [{}]",
        f(eval_after),
        eval_sum / eval_n,
        criteria.join(", ")
    );
    println!(
        "Pmax: before {:.1} W, after {:.1} W; rig degradation {} %, thermal cycles counted {}",
        pmax(&before_v),
        pmax(&after_v),
        rig_state["module"]["degradation_pct"],
        rig_state["stress"]["thermal_cycles"]
    );
    println!(
        "agent, polling alone ({:.0} s): CPU {:.1} % of one core, RSS max {:.1} MiB, end {:.1} MiB, VmHWM {hwm_alone:.1} MiB",
        alone.0, alone.1, alone.2, alone.3
    );
    println!(
        "agent, run + polling ({:.0} s): CPU {:.1} % of one core, RSS max {:.1} MiB, end {:.1} MiB, VmHWM {hwm_run:.1} MiB",
        run.0, run.1, run.2, run.3
    );
    let out = json!({
        "cycles": cycles, "time_scale": scale, "wall_s": wall_s, "nominal_s": nominal_s,
        "simulated_s": sim_s, "hub_readings": n, "hub_run_events": events,
        "lag_p50_s": p50, "lag_p99_s": p99, "lag_max_s": max_lag,
        "completed_lag_s": completed_lag, "last_reading_after_completed_s": last_after_completed,
        "hub_seen_s": hub_seen_s, "verdict": verdict, "evaluation_after_completed_s": eval_after,
        "reevaluated_verdict": re_verdict,
        "agent_alone": {"s": alone.0, "cpu_pct": alone.1, "rss_max_mib": alone.2, "rss_end_mib": alone.3, "hwm_mib": hwm_alone},
        "agent_run": {"s": run.0, "cpu_pct": run.1, "rss_max_mib": run.2, "rss_end_mib": run.3, "hwm_mib": hwm_run},
    });
    println!("json: {out}");
    Ok(())
}
