//! The protocol runs benchmark (`scripts/bench-runs.sh`, BENCHMARKS.md) in
//! its CI size: one thermal cycle at 1000x with 2 s of polling alone, on the
//! binaries the tests use. It must complete and report every figure with a
//! plausible value, so the full 200-cycle run is not the first to find a
//! broken benchmark.
// qi-test: tier-independent (the run benchmark at its smallest; edge only): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use serde_json::Value;

#[test]
fn the_runs_benchmark_reports_every_figure_for_a_one_cycle_run() -> Result<()> {
    let out = std::process::Command::new(e2e_tests::bin("run_bench")?)
        .args(["1", "1000", "2"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let j: Value = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("json: "))
            .context("no json line")?,
    )?;
    let num = |k: &str| j[k].as_f64().with_context(|| format!("{k}: {j}"));
    // The engine keeps up with its clock: wall time is the simulated time / scale.
    let (wall, sim) = (num("wall_s")?, num("simulated_s")?);
    assert!((wall - sim / 1000.0).abs() < 0.2 * wall + 2.0, "{j}");
    assert!(sim >= num("nominal_s")?, "waits never end early: {j}");
    // Three records every simulated minute reach the hub; at 1000x a minute
    // is 60 ms of wall time and the engine's loop may let one pass.
    let expected = 3.0 * ((sim / 60.0).floor() + 1.0);
    assert!(
        (num("hub_readings")? - expected).abs() <= 0.05 * expected,
        "{j}"
    );
    assert!(num("lag_p99_s")? >= 0.0 && num("lag_p99_s")? < 10.0, "{j}");
    assert!(num("evaluation_after_completed_s")? < 10.0, "{j}");
    // Insulation and inspection never ran here: no verdict, never a pass.
    assert_eq!(j["verdict"], "no_verdict", "{j}");
    for w in ["agent_alone", "agent_run"] {
        assert!(j[w]["cpu_pct"].as_f64().is_some_and(|c| c > 0.0), "{j}");
        assert!(j[w]["rss_max_mib"].as_f64().is_some_and(|r| r > 1.0), "{j}");
    }
    Ok(())
}
