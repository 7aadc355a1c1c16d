//! docs/configuration.md names exactly the keys the two daemons accept, in
//! both directions: a key the code takes but the page does not explain is a
//! hidden switch, and a documented key the code refuses (or no longer has)
//! is a false promise.
//!
//! The keys the code accepts are read off the config types themselves with
//! serde-reflection (the same field names serde uses to deserialize); the
//! documented ones are the first column of the page's tables. Arrays of
//! tables and enums documented in one row (`mqtt.users`, `devices[].transport`)
//! must name each of their fields or variants in backticks in that row.
// qi-test: tier-independent (the documentation against the config parsers): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail};
use e2e_tests::bin;
use serde_reflection::{ContainerFormat, Format, Named, Registry, Tracer, TracerConfig};
use std::collections::BTreeMap;

/// Keys (dotted paths; `[]` for arrays of tables) with, for a struct or enum
/// reached through a key, the names inside it (fields or variants).
fn accepted<T: serde::de::DeserializeOwned>(
    enums: impl FnOnce(&mut Tracer) -> serde_reflection::Result<()>,
) -> Result<BTreeMap<String, Vec<String>>> {
    // Not human-readable: std's addresses then trace as plain structures
    // instead of strings the tracer has no sample for.
    let mut tracer = Tracer::new(TracerConfig::default().is_human_readable(false));
    tracer
        .trace_simple_type::<T>()
        .map_err(|e| anyhow::anyhow!("tracing the config type: {e}"))?;
    // A struct's tracing visits one variant of each enum in it; each enum
    // traced alone shows all of them.
    tracer
        .trace_simple_type::<std::net::SocketAddr>()
        .map_err(|e| anyhow::anyhow!("tracing SocketAddr: {e}"))?;
    tracer
        .trace_simple_type::<qi_common::logging::LogFormat>()
        .map_err(|e| anyhow::anyhow!("tracing LogFormat: {e}"))?;
    enums(&mut tracer).map_err(|e| anyhow::anyhow!("tracing the config's enums: {e}"))?;
    let registry = tracer
        .registry()
        .map_err(|e| anyhow::anyhow!("config registry (an enum not traced alone?): {e}"))?;
    let root = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .context("type name")?
        .to_string();
    let mut out = BTreeMap::new();
    walk(&registry, &root, "", &mut out)?;
    Ok(out)
}

fn inner(f: &Format) -> &Format {
    match f {
        Format::Option(x) => inner(x),
        other => other,
    }
}

fn walk(
    registry: &Registry,
    name: &str,
    prefix: &str,
    out: &mut BTreeMap<String, Vec<String>>,
) -> Result<()> {
    let Some(ContainerFormat::Struct(fields)) = registry.get(name) else {
        bail!("{name} is not a struct");
    };
    for Named { name: field, value } in fields {
        let key = format!("{prefix}{field}");
        let (target, child_prefix) = match inner(value) {
            // An array of tables: its tables' keys are `key[].field`.
            Format::Seq(x) => (inner(x), format!("{key}[].")),
            other => (other, format!("{key}.")),
        };
        let mut names = Vec::new();
        if let Format::TypeName(t) = target {
            match registry.get(t) {
                // Tables: their own keys, one level down.
                Some(ContainerFormat::Struct(_)) => {
                    walk(registry, t, &child_prefix, out)?;
                    if let Some(ContainerFormat::Struct(fs)) = registry.get(t) {
                        names = fs.iter().map(|f| f.name.clone()).collect();
                    }
                }
                // Addresses are values, not tables of keys.
                Some(_) if t.starts_with("SocketAddr") || t.starts_with("Ip") => {}
                Some(ContainerFormat::Enum(variants)) => {
                    for v in variants.values() {
                        names.push(v.name.clone());
                        // Variants carrying a table (serial = { device = ... }).
                        if let serde_reflection::VariantFormat::NewType(f) = &v.value
                            && let Format::TypeName(vt) = inner(f)
                            && let Some(ContainerFormat::Struct(fs)) = registry.get(vt)
                        {
                            names.extend(fs.iter().map(|f| f.name.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        out.insert(key, names);
    }
    Ok(())
}

/// The first-column keys of the tables between two headings, and each row's text.
fn documented(start: &str, end: &str) -> Result<BTreeMap<String, String>> {
    let page = std::fs::read_to_string(e2e_tests::workspace_root().join("docs/configuration.md"))?;
    let from = page.find(start).context("section start")?;
    let to = page[from..].find(end).map_or(page.len(), |i| from + i);
    let mut keys = BTreeMap::new();
    for line in page[from..to].lines() {
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let first = row.split(" |").next().unwrap_or("");
        for part in first.split(',') {
            let k = part.trim().trim_matches('`');
            // Rows of the local API's endpoint table are not keys.
            if !k.is_empty() && !k.contains(' ') {
                keys.insert(k.to_string(), line.to_string());
            }
        }
    }
    Ok(keys)
}

/// Does any backtick span of `row` hold `name` as a whole word?
fn names(row: &str, name: &str) -> bool {
    row.split('`').skip(1).step_by(2).any(|span| {
        span.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == name)
    })
}

/// Compares. A table (or array of tables) may be documented key by key, or
/// in one row that names each of its keys; an enum's row names its variants.
fn compare(accepted: &BTreeMap<String, Vec<String>>, documented: &BTreeMap<String, String>) {
    let mut problems = Vec::new();
    let children = |k: &str| {
        let (dot, arr) = (format!("{k}."), format!("{k}[]."));
        move |c: &&String| c.starts_with(&dot) || c.starts_with(&arr)
    };
    let mut inline: Vec<String> = Vec::new();
    for (key, inner_names) in accepted {
        if inline.iter().any(|p| children(p)(&key)) {
            continue;
        }
        let has_children = accepted.keys().any(|k| children(key)(&k));
        if has_children && documented.keys().any(|k| children(key)(&k)) {
            continue;
        }
        match documented.get(key) {
            None => problems.push(format!("`{key}` is accepted but not documented")),
            Some(row) => {
                for n in inner_names {
                    if !names(row, n) {
                        problems.push(format!("`{key}`: its row does not name `{n}`"));
                    }
                }
            }
        }
        if has_children {
            inline.push(key.clone());
        }
    }
    for key in documented.keys() {
        let known = accepted.contains_key(key) || accepted.keys().any(|k| children(key)(&k));
        if !known {
            problems.push(format!("`{key}` is documented but not accepted"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_agents_documented_keys_are_exactly_the_accepted_ones() -> Result<()> {
    let accepted = accepted::<edge_agent::config::Config>(|t| {
        t.trace_simple_type::<edge_agent::config::Compression>()?;
        t.trace_simple_type::<edge_agent::config::Transport>()?;
        t.trace_simple_type::<edge_agent::buffer::FullPolicy>()?;
        t.trace_simple_type::<device_profile::Parity>()?;
        Ok(())
    })?;
    // Sanity: the tracer saw nested tables.
    assert!(
        accepted.contains_key("mqtt.max_pending_connections"),
        "{accepted:?}"
    );
    assert!(accepted.contains_key("devices[].transport"), "{accepted:?}");
    compare(&accepted, &documented("## edge-agent", "## cloud-hub")?);
    Ok(())
}

#[test]
fn the_hubs_documented_keys_are_exactly_the_accepted_ones() -> Result<()> {
    let accepted = accepted::<cloud_hub::config::Config>(|t| {
        t.trace_simple_type::<cloud_hub::config::GatewayAuth>()?;
        t.trace_simple_type::<cloud_hub::storage::IngestMethod>()?;
        t.trace_simple_type::<cloud_hub::storage::TierChoice>()?;
        t.trace_simple_type::<cloud_hub::identity::oidc::MappedRole>()?;
        Ok(())
    })?;
    assert!(accepted.contains_key("database.url"), "{accepted:?}");
    compare(&accepted, &documented("## cloud-hub", "## instrument-sim")?);
    Ok(())
}

/// The shipped profiles pass `edge-agent profiles check`, which reports what
/// coalescing saves and points at the line of a bad profile.
#[test]
fn profiles_check_reports_errors_with_lines_and_coalescing_savings() -> Result<()> {
    let dir = e2e_tests::profiles_dir();
    let out = std::process::Command::new(bin("edge-agent")?)
        .args(["profiles", "check"])
        .arg(dir.join("eastron-sdm630.toml"))
        .arg(dir.join("sunspec-inverter-103.toml"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("3 Modbus requests per full cycle (13 without coalescing)"),
        "{stdout}"
    );
    let tmp = tempfile::tempdir()?;
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "format_version = 1\n[model]\nid = \"bad\"\nmanufacturer = \"x\"\nname = \"y\"\ndevice_type = \"z\"\n[modbus]\n[[points]]\nname = \"a\"\nregister = \"input\"\naddress = 70000\ntype = \"f32\"\n",
    )?;
    let out = std::process::Command::new(bin("edge-agent")?)
        .args(["profiles", "check"])
        .arg(&bad)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("line 11") && stdout.contains("address"),
        "{stdout}"
    );
    Ok(())
}

/// The example config the docs point technicians to passes `--check`.
#[test]
fn the_example_config_is_valid() -> Result<()> {
    let text =
        std::fs::read_to_string(e2e_tests::workspace_root().join("examples/edge-agent.toml"))?
            .replace(
                "/usr/share/edge-agent/firmware-profiles",
                &e2e_tests::profiles_dir().display().to_string(),
            );
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("edge-agent.toml");
    std::fs::write(&path, text)?;
    let out = std::process::Command::new(bin("edge-agent")?)
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
