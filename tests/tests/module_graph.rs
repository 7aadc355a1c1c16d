//! No crate of the workspace has an import circle between its top-level
//! modules (see `e2e_tests::module_graph`).
// qi-test: tier-independent (the source tree): scripts/test.sh runs it once, on tier none.

use e2e_tests::module_graph::{crate_references, find_cycle, module_graph};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn the_parser_sees_paths_and_groups() {
    let code = "use crate::a::B;\nuse crate::{c::D, e};\nlet x = crate::f::g();\n\
                // crate::comment::ignored\nuse crate::{h::{I, J}, k::L};\n";
    let got: Vec<String> = crate_references(code).into_iter().collect();
    assert_eq!(got, ["a", "c", "e", "f", "h", "k"]);
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&g).map(|c| c.join(" -> ")).as_deref(),
        Some("a -> b -> c -> a")
    );
}

fn check(crate_name: &str, expect: &[&str]) {
    let graph = module_graph(&e2e_tests::workspace_root().join(crate_name));
    for m in expect {
        assert!(graph.contains_key(*m), "{crate_name}: {graph:?}");
    }
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph
            .iter()
            .map(|(m, ts)| {
                format!(
                    "  {m} -> {}",
                    ts.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        panic!(
            "{crate_name}: import circle: {}\nmodule graph:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn no_module_of_the_agent_imports_one_that_imports_it_back() {
    check(
        "edge-agent",
        &["sources", "buffer", "mqtt", "local_api", "identity"],
    );
}

#[test]
fn no_module_of_the_hub_imports_one_that_imports_it_back() {
    check("cloud-hub", &["api", "analytics", "storage", "ingest"]);
}

#[test]
fn no_module_of_the_other_crates_imports_one_that_imports_it_back() {
    check("device-profile", &[]);
    check("protocol", &["expr", "units", "validate"]);
    check("common", &[]);
    check("simulator", &[]);
}
