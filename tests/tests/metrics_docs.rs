//! docs/metrics.md, the metric-name modules and what `/metrics` serves agree
//! (issue #11): the agent's table has exactly the names, types and labels of
//! `edge_agent::metric_names::ALL`, a running agent exposes no family the page
//! does not list (each with a `# HELP` line), the hub's table has exactly the
//! names of `cloud_hub::metric_names::ALL`, and no metric call names its
//! metric with a string literal, so the one-definition rule stays true.
// qi-test: tier-independent (the documentation against the metric names): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::mqtt_raw::{Connect, Raw};
use e2e_tests::{Stack, free_port, wait_for, workspace_root};
use qi_common::metric_names::{COMMON, Metric};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// One documented row: type and label keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    kind: String,
    labels: Vec<String>,
}

/// The page's tables, by section heading (`## edge-agent` -> "edge-agent").
fn documented() -> Result<BTreeMap<String, BTreeMap<String, Row>>> {
    let path = workspace_root().join("docs/metrics.md");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
            continue;
        }
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", name, type, labels, meaning, ""
        ensure!(
            cells.len() == 6,
            "docs/metrics.md:{}: expected 4 columns: {line}",
            i + 1
        );
        let name = cells[1].trim_matches('`').to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        ensure!(
            !cells[4].is_empty(),
            "docs/metrics.md:{}: {name} has no meaning",
            i + 1
        );
        let row = Row {
            kind: cells[2].to_string(),
            labels,
        };
        let dup = out
            .entry(section.clone())
            .or_default()
            .insert(name.clone(), row);
        ensure!(
            dup.is_none(),
            "docs/metrics.md: {name} listed twice in {section}"
        );
    }
    Ok(out)
}

fn rows_of(table: &[Metric]) -> BTreeMap<String, Row> {
    table
        .iter()
        .map(|m| {
            let row = Row {
                kind: m.kind.as_str().to_string(),
                labels: m.labels.iter().map(|l| l.to_string()).collect(),
            };
            (m.name.to_string(), row)
        })
        .collect()
}

/// Differences between what the code declares and what the page says.
fn compare(what: &str, code: &BTreeMap<String, Row>, doc: &BTreeMap<String, Row>) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, row) in code {
        match doc.get(name) {
            None => errors.push(format!("{what}: {name} is not in docs/metrics.md")),
            Some(d) if d != row => errors.push(format!(
                "{what}: {name} is {row:?} in the code but {d:?} in docs/metrics.md"
            )),
            Some(_) => {}
        }
    }
    for name in doc.keys().filter(|n| !code.contains_key(*n)) {
        errors.push(format!(
            "{what}: docs/metrics.md lists {name}, which the code does not declare"
        ));
    }
    errors
}

#[test]
fn the_page_lists_exactly_the_metrics_the_daemons_and_qi_common_declare() -> Result<()> {
    let doc = documented()?;
    let section = |s: &str| doc.get(s).cloned().unwrap_or_default();
    let mut errors = compare(
        "edge-agent",
        &rows_of(edge_agent::metric_names::ALL),
        &section("edge-agent"),
    );
    errors.extend(compare(
        "cloud-hub",
        &rows_of(cloud_hub::metric_names::ALL),
        &section("cloud-hub"),
    ));
    errors.extend(compare(
        "qi-common",
        &rows_of(COMMON),
        &section("Both daemons (qi-common)"),
    ));
    ensure!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// `(file:line, name)` of every `counter!(` / `gauge!(` / `histogram!(`
/// (with or without `metrics::`, `describe_` included) whose first argument
/// is a string literal.
fn inline_names(dir: &str) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    rust_files(&workspace_root().join(dir), &mut files)?;
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        for mac in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(mac) {
                let rest = text[at + mac.len()..].trim_start();
                if let Some(lit) = rest.strip_prefix('"') {
                    let name = lit.split('"').next().unwrap_or_default().to_string();
                    let line = text[..at].lines().count();
                    found.push((format!("{}:{line}", f.display()), name));
                }
            }
        }
    }
    Ok(found)
}

#[test]
fn no_metric_is_named_inline() -> Result<()> {
    let mut errors: Vec<String> = Vec::new();
    for dir in ["edge-agent/src", "cloud-hub/src", "common/src"] {
        for (at, name) in inline_names(dir)? {
            errors.push(format!(
                "{at}: metric \"{name}\" named inline; use its constant"
            ));
        }
    }
    // Nor as a literal handed on elsewhere (e.g. a poll counter's name given
    // to the shared poller core): the module is the only place a name is spelled.
    for (dir, all) in [
        ("edge-agent/src", edge_agent::metric_names::ALL),
        ("cloud-hub/src", cloud_hub::metric_names::ALL),
    ] {
        let mut files = Vec::new();
        rust_files(&workspace_root().join(dir), &mut files)?;
        for f in files.iter().filter(|f| !f.ends_with("metric_names.rs")) {
            let text = std::fs::read_to_string(f)?;
            for m in all {
                if text.contains(&format!("\"{}\"", m.name)) {
                    errors.push(format!(
                        "{}: \"{}\" spelled outside metric_names.rs",
                        f.display(),
                        m.name
                    ));
                }
            }
        }
    }
    ensure!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// Families of a Prometheus text page: name -> type (from `# TYPE`), the
/// names with a `# HELP` line, and the metric name of every sample line.
struct Exposition {
    types: BTreeMap<String, String>,
    helped: BTreeSet<String>,
    samples: BTreeSet<String>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition {
        types: BTreeMap::new(),
        helped: BTreeSet::new(),
        samples: BTreeSet::new(),
    };
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                e.types.insert(name.to_string(), kind.to_string());
            }
            (Some("#"), Some("HELP"), Some(name), _) => {
                e.helped.insert(name.to_string());
            }
            (Some(s), ..) if !s.starts_with('#') => {
                let name = s.split('{').next().unwrap_or(s);
                e.samples.insert(name.to_string());
            }
            _ => {}
        }
    }
    e
}

/// The family a sample line belongs to (summaries add `_sum` / `_count`,
/// histograms also `_bucket`).
fn family_of<'a>(sample: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(sample) {
        return sample;
    }
    for suffix in ["_sum", "_count", "_bucket"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && types.contains_key(base)
        {
            return base;
        }
    }
    sample
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_exposes_only_documented_metrics_each_with_help() -> Result<()> {
    let doc = documented()?;
    let mut listed: BTreeMap<String, Row> = BTreeMap::new();
    for s in ["edge-agent", "Both daemons (qi-common)"] {
        listed.extend(doc.get(s).cloned().unwrap_or_default());
    }

    // One Modbus device on the simulator, the MQTT bus on, no hub (the
    // uplink keeps failing, which it counts): most parts have recorded.
    let mut stack = Stack::edge_only()?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-metrics", 200, "")?;
    let mqtt_port = free_port();
    let mut text = std::fs::read_to_string(&cfg)?;
    text.push_str(&format!(
        "\n[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\nsite = \"s1\"\n\n[[mqtt.users]]\nname = \"sensor\"\npassword_hash = \"{}\"\npublish = [\"site/s1/+/+/telemetry\"]\n",
        edge_agent::mqtt::auth::hash_password("pw", 1000)
    ));
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    let metrics_url = format!("{}/metrics", stack.agent_url());
    wait_for("polls counted", Duration::from_secs(20), || async {
        let text = e2e_tests::http::get(&metrics_url).await?.text().await?;
        Ok(text
            .lines()
            .any(|l| l.starts_with("edge_readings_total{") && !l.ends_with(" 0"))
            .then_some(()))
    })
    .await?;
    let bad_login = Connect {
        client_id: "metrics-1",
        login: Some(("sensor", "wrong")),
        ..Connect::default()
    };
    let (_, code) = Raw::login(([127, 0, 0, 1], mqtt_port).into(), &bad_login).await?;
    ensure!(code != 0, "a wrong password must be refused");
    let status = e2e_tests::http::get(format!("{}/api/v1/devices/nope", stack.agent_url()))
        .await?
        .status();
    ensure!(status == 404, "unknown device: {status}");
    e2e_tests::http::get(format!("{}/health", stack.agent_url())).await?;

    let page = e2e_tests::http::get(&metrics_url).await?.text().await?;
    let e = parse(&page);
    let mut errors = Vec::new();
    for sample in &e.samples {
        let family = family_of(sample, &e.types);
        if !listed.contains_key(family) {
            errors.push(format!("{family} exposed but not in docs/metrics.md"));
        }
    }
    for (name, kind) in &e.types {
        match listed.get(name) {
            None => errors.push(format!(
                "{name} ({kind}) exposed but not in docs/metrics.md"
            )),
            Some(row) => {
                let ok = match row.kind.as_str() {
                    "histogram" => kind == "summary" || kind == "histogram",
                    k => k == kind,
                };
                if !ok {
                    errors.push(format!(
                        "{name}: exposed as {kind}, documented as {}",
                        row.kind
                    ));
                }
            }
        }
        if !e.helped.contains(name) {
            errors.push(format!("{name} exposed without # HELP"));
        }
    }
    // describe() at start creates every unlabelled counter at zero.
    for (name, row) in &listed {
        if row.kind == "counter" && row.labels.is_empty() && !e.types.contains_key(name) {
            errors.push(format!(
                "{name}: an unlabelled counter missing from /metrics"
            ));
        }
    }
    if !errors.is_empty() {
        bail!("{}\n--- /metrics ---\n{page}", errors.join("\n"));
    }
    println!(
        "/metrics: {} families exposed, all documented with # HELP; {} listed for the agent",
        e.types.len(),
        listed.len()
    );
    Ok(())
}
