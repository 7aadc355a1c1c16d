//! The router and the OpenAPI document describe the same API.

use std::collections::BTreeSet;

/// (method, path) of every route declared in the API's source files.
fn served() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for src in [
        include_str!("mod.rs"),
        include_str!("analytics.rs"),
        include_str!("twins.rs"),
        include_str!("twin_types.rs"),
        include_str!("desired.rs"),
        include_str!("aas.rs"),
        include_str!("lab.rs"),
        include_str!("runs.rs"),
        include_str!("certificates.rs"),
        include_str!("reports.rs"),
        include_str!("translog.rs"),
        include_str!("webhooks.rs"),
        include_str!("exports.rs"),
        include_str!("calibration.rs"),
    ] {
        for part in src.split(".route(").skip(1) {
            let Some(quoted) = part.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((path, rest)) = quoted.split_once('"') else {
                continue;
            };
            // The handlers of one route: up to the parenthesis closing `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let call = &rest[..end];
            for m in ["get", "post", "put", "patch", "delete"] {
                if call.contains(&format!("{m}(")) || call.contains(&format!(".{m}(")) {
                    out.insert((m.to_string(), path.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn the_router_and_the_openapi_document_list_the_same_operations() {
    let doc: serde_json::Value =
        serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let mut served = served();
    // The document itself is served, not described in itself.
    assert!(served.remove(&("get".into(), "/api/v1/openapi.json".into())));
    assert!(
        served.len() >= 13,
        "route parsing found too little: {served:?}"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in openapi.json: {undocumented:?}; in openapi.json but not served: {unserved:?}"
    );
}

/// The document's length limits are the code's: ids as the wire contract
/// (qi_proto::limits), usernames and passwords as the identity module.
#[test]
fn the_documents_length_limits_are_the_contracts() {
    let doc = super::OPENAPI;
    let limits: Vec<&str> = doc
        .split("\"maxLength\"")
        .skip(1)
        .filter_map(|rest| {
            rest.trim_start_matches([':', ' '])
                .split([',', '}', '\n'])
                .next()
        })
        .map(str::trim)
        .collect();
    assert!(!limits.is_empty());
    let known = [
        qi_proto::limits::MAX_ID_LEN,
        crate::identity::users::MAX_USERNAME_LEN,
        crate::identity::passwords::MAX_LEN,
        crate::twins::model::MAX_TEXT_LEN,
        crate::twins::model::MAX_QUERY_TEXT_LEN,
        crate::twins::model::MAX_CURSOR_LEN,
        crate::lab::MAX_TEXT_LEN,
        crate::certificates::MAX_ID_LEN,
        crate::nonconformance::MAX_ID_LEN,
        crate::webhooks::subscriptions::MAX_URL_LEN,
        // Calibration values' units and free text (crate::calibration).
        qi_proto::limits::MAX_UNIT_LEN,
        qi_proto::limits::MAX_TEXT_LEN,
    ]
    .map(|n| n.to_string());
    assert!(
        limits.iter().all(|l| known.iter().any(|k| k == l)),
        "{limits:?}"
    );
}

/// Every operation has exactly one rule in the permission table, and the
/// document's `security` says the same: public operations none, others bearer.
#[test]
fn every_operation_has_a_permission_rule_and_the_document_agrees() {
    use crate::identity::permissions::{Permission, RULES, required};
    let doc: serde_json::Value =
        serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let mut served = served();
    served.insert(("get".into(), "/api/v1/openapi.json".into()));
    for (m, p) in &served {
        assert!(
            required(m, p).is_some(),
            "{m} {p} has no rule in identity::permissions::RULES"
        );
    }
    assert_eq!(
        served.len(),
        RULES.len(),
        "rules for routes that are not served"
    );
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let rule = required(method, path).expect("rule");
            let security = op["security"]
                .as_array()
                .expect("every operation declares security");
            assert_eq!(
                security.is_empty(),
                rule.permission == Permission::Public,
                "{method} {path}: security {security:?} but rule {rule:?}"
            );
        }
    }
}

/// The document's pattern for AAS ids and cursors is what the hub decodes
/// (a schema-valid id is never refused as malformed).
#[test]
fn the_documents_aas_id_pattern_is_the_decoders() {
    let doc: serde_json::Value =
        serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON");
    let mut seen = 0;
    for path in [
        "/api/v1/aas/shells",
        "/api/v1/aas/shells/{id}",
        "/api/v1/aas/submodels",
        "/api/v1/aas/submodels/{id}",
    ] {
        for p in doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
        {
            if p["name"] == "id" || p["name"] == "cursor" {
                assert_eq!(p["schema"]["pattern"], crate::aas::ids::PATTERN, "{path}");
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 4);
}
