//! From a verified token's claims to the hub's roles and sites.

use super::{MappedRole, OidcError};
use serde_json::Value;
use std::collections::BTreeMap;

/// The value at a dotted path (`realm_access.roles`). A claim whose own name
/// holds a dot (some providers namespace claims as URLs) is found too, since
/// the whole path is tried as one key first.
pub(super) fn at_path<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// A claim holding a list of strings, or one string of space-separated
/// values (as `scope` is written). Anything else is no list.
pub(super) fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(s.split_whitespace().map(str::to_string).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// The hub roles the token's role claim maps to, highest first, each once.
pub(super) fn roles(
    claims: &Value,
    path: &str,
    map: &BTreeMap<String, MappedRole>,
) -> Result<Vec<String>, OidcError> {
    let values =
        at_path(claims, path)
            .and_then(strings)
            .ok_or_else(|| OidcError::MissingClaim {
                claim: path.to_string(),
            })?;
    let mut mapped: Vec<MappedRole> = values.iter().filter_map(|v| map.get(v).copied()).collect();
    // Highest first.
    mapped.sort_by(|a, b| b.cmp(a));
    mapped.dedup();
    if mapped.is_empty() {
        return Err(OidcError::NoRole {
            claim: path.to_string(),
            values: values.join(" "),
        });
    }
    Ok(mapped.iter().map(|r| r.as_str().to_string()).collect())
}

/// The sites the user is limited to: `None` for all (the claim lists `*`).
/// A configured claim that is missing refuses the token: failing open would
/// give every site to a user whose provider forgot the claim.
pub(super) fn sites(claims: &Value, path: &str) -> Result<Option<Vec<String>>, OidcError> {
    let values =
        at_path(claims, path)
            .and_then(strings)
            .ok_or_else(|| OidcError::MissingClaim {
                claim: path.to_string(),
            })?;
    if values.iter().any(|s| s == "*") {
        return Ok(None);
    }
    Ok(Some(values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_and_lists() {
        let c = json!({
            "realm_access": {"roles": ["a", "b"]},
            "https://qi.example/roles": "x y",
            "n": 3
        });
        assert_eq!(
            at_path(&c, "realm_access.roles").and_then(strings),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            at_path(&c, "https://qi.example/roles").and_then(strings),
            Some(vec!["x".to_string(), "y".to_string()])
        );
        assert_eq!(at_path(&c, "n").and_then(strings), None);
        assert!(at_path(&c, "realm_access.nope").is_none());
    }

    #[test]
    fn unmapped_values_are_ignored_and_none_mapped_is_refused() {
        let map = BTreeMap::from([
            ("ops".to_string(), MappedRole::Viewer),
            ("eng".to_string(), MappedRole::Engineer),
        ]);
        let c = json!({"roles": ["ops", "other", "eng", "ops"]});
        assert_eq!(
            roles(&c, "roles", &map).ok(),
            Some(vec!["engineer".to_string(), "viewer".to_string()])
        );
        let c = json!({"roles": ["other"]});
        assert_eq!(
            roles(&c, "roles", &map).map_err(|e| e.reason()),
            Err("no_role")
        );
        assert_eq!(
            roles(&json!({}), "roles", &map).map_err(|e| e.reason()),
            Err("missing_claim")
        );
    }

    #[test]
    fn a_star_means_every_site() {
        assert_eq!(sites(&json!({"s": ["*"]}), "s").ok(), Some(None));
        assert_eq!(
            sites(&json!({"s": ["a"]}), "s").ok(),
            Some(Some(vec!["a".to_string()]))
        );
        assert!(sites(&json!({}), "s").is_err());
    }
}
