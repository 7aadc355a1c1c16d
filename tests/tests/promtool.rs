//! Issue #17: Prometheus' own linter accepts what the daemons serve, and the
//! shipped alert rules and dashboards stand on real metrics.
//!
//! - `promtool check metrics` on both daemons' real `/metrics` after traffic
//!   (a gateway streaming readings to the hub);
//! - `promtool check rules` and `promtool test rules` on
//!   `packaging/prometheus/alerts.yml` and its test file;
//! - every metric name an alert or a Grafana dashboard in `packaging/grafana/`
//!   uses is listed in docs/metrics.md (whose tables the `metrics_docs` test
//!   keeps equal to the code's).
//!
//! promtool is the Debian package `prometheus` (scripts/setup-test-peers.sh).
// qi-test: tier-independent (alert rules and /metrics text): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::{Stack, wait_for, workspace_root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn promtool() -> Result<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("promtool");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("promtool not found: run scripts/setup-test-peers.sh (Debian package `prometheus`)")
}

/// `promtool check metrics` on `text`: (success, what it said).
fn check_metrics(text: &str) -> Result<(bool, String)> {
    use std::io::Write;
    let mut child = Command::new(promtool()?)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), said))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_both_daemons_metrics() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-prom", 200, "")?;
    stack.start_agent(&cfg).await?;
    // Traffic first: histograms and labelled series appear with their first event.
    let pool = stack.db().await?;
    wait_for("readings at the hub", Duration::from_secs(60), || async {
        Ok((e2e_tests::hub_count(&pool).await? >= 10).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    for (name, url) in [
        ("edge-agent", format!("{}/metrics", stack.agent_url())),
        ("cloud-hub", format!("{}/metrics", stack.hub_url())),
    ] {
        let resp = e2e_tests::http::get(&url).await?;
        ensure!(resp.status() == 200, "{name} /metrics: {}", resp.status());
        let text = resp.text().await?;
        ensure!(text.contains("# TYPE"), "{name}: no metrics:\n{text}");
        // The series the alert rules watch are there.
        let watched: &[&str] = if name == "edge-agent" {
            &[
                "edge_uplink_connected 1",
                "edge_device_online{device=\"meter-1\"} 1",
                "edge_buffer_oldest_pending_seconds",
            ]
        } else {
            &[
                "hub_gateways_connected 1",
                "hub_ingest_commit_seconds{quantile=\"0.99\"}",
            ]
        };
        for w in watched {
            ensure!(text.contains(w), "{name} /metrics lacks {w}:\n{text}");
        }
        let (ok, said) = check_metrics(&text)?;
        eprintln!("{name}: promtool check metrics: {}", said.trim());
        ensure!(
            ok && said.trim().is_empty(),
            "promtool check metrics on {name}:\n{said}"
        );
    }
    Ok(())
}

fn run_promtool(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new(promtool()?)
        .args(args)
        .current_dir(dir)
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {}:\n{said}", args.join(" "));
    Ok(said)
}

#[test]
fn alert_rules_check_and_pass_their_unit_tests() -> Result<()> {
    let dir = workspace_root().join("packaging/prometheus");
    let said = run_promtool(&["check", "rules", "alerts.yml"], &dir)?;
    ensure!(said.contains("SUCCESS"), "{said}");
    let said = run_promtool(&["test", "rules", "alerts_test.yml"], &dir)?;
    ensure!(said.contains("SUCCESS"), "{said}");
    Ok(())
}

/// Every metric name documented in docs/metrics.md (first column of its tables).
fn documented_names() -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(workspace_root().join("docs/metrics.md"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect())
}

/// PromQL's functions, aggregations and keywords: identifiers that are not metrics.
const PROMQL_WORDS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "deriv",
    "delta",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "by",
    "without",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "offset",
    "abs",
    "histogram_quantile",
    "label_values",
    "instance",
    "topk",
    "bottomk",
    "clamp_min",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "changes",
    "resets",
    "time",
];

/// Metric names in a PromQL expression: identifiers outside label matchers,
/// ranges, strings and `by (...)` lists, that are not PromQL words.
/// Histograms' `_bucket`/`_sum`/`_count` series count as their family.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut in_range = false;
    let mut in_str = false;
    for c in expr.chars() {
        match c {
            '"' if depth_brace == 0 && !in_range => in_str = !in_str,
            '{' if !in_str => depth_brace += 1,
            '}' if !in_str => depth_brace -= 1,
            '[' if !in_str => in_range = true,
            ']' if !in_str => in_range = false,
            _ if in_str || depth_brace > 0 || in_range => {}
            _ => {
                cleaned.push(c);
                continue;
            }
        }
        cleaned.push(' ');
    }
    // Grafana variables ($__rate_interval, $gateway).
    let cleaned: String = cleaned
        .split('$')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_string()
            } else {
                part.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_')
                    .to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    // `by (instance, reason)`: grouping labels, not metrics.
    let mut names = BTreeSet::new();
    let tokens: Vec<String> = cleaned
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '(' || c == ')'))
        .flat_map(|t| {
            t.replace('(', " ( ")
                .replace(')', " ) ")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut grouping = false;
    for t in &tokens {
        match t.as_str() {
            "by" | "without" | "on" | "ignoring" => grouping = true,
            ")" => grouping = false,
            "(" => {}
            w if grouping || PROMQL_WORDS.contains(&w) => {}
            w if w.starts_with(|c: char| c.is_ascii_lowercase()) => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| w.strip_suffix(s))
                    .unwrap_or(w);
                names.insert(family.to_string());
            }
            _ => {}
        }
    }
    names
}

/// Every `expr` string in a Grafana dashboard (targets and variable queries).
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

#[test]
fn dashboards_and_alerts_use_only_documented_metrics() -> Result<()> {
    assert_eq!(
        metric_names(
            "sum by (instance, reason) (rate(hub_ingest_rejected_total{instance=~\"$hub\"}[$__rate_interval])) and edge_x_bucket"
        ),
        ["edge_x", "hub_ingest_rejected_total"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let documented = documented_names()?;
    let mut used: Vec<(String, String)> = Vec::new();
    for name in ["edge-agent.json", "cloud-hub.json"] {
        let path = workspace_root().join("packaging/grafana").join(name);
        let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let mut exprs = Vec::new();
        dashboard_exprs(&dash, &mut exprs);
        ensure!(exprs.len() >= 10, "{name}: only {} queries", exprs.len());
        for e in exprs {
            used.extend(metric_names(&e).into_iter().map(|m| (name.to_string(), m)));
        }
    }
    let alerts = std::fs::read_to_string(workspace_root().join("packaging/prometheus/alerts.yml"))?;
    for line in alerts.lines() {
        if let Some(e) = line.trim().strip_prefix("expr:") {
            used.extend(
                metric_names(e)
                    .into_iter()
                    .map(|m| ("alerts.yml".to_string(), m)),
            );
        }
    }
    ensure!(used.len() > 30, "too few metric uses found: {used:?}");
    let unknown: Vec<_> = used
        .iter()
        .filter(|(_, m)| !documented.contains(m))
        .collect();
    ensure!(
        unknown.is_empty(),
        "metrics used but not in docs/metrics.md: {unknown:?}"
    );
    Ok(())
}
