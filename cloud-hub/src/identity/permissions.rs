//! Roles, permissions and the one table that says what each operation of the
//! REST API requires. docs/security.md shows the same table; the role-matrix
//! test (tests/tests/role_matrix.rs) calls every operation of the OpenAPI
//! document with every role and checks the answers against [`required`].

use serde::Serialize;

/// Roles, weakest first (one definition for hub and gateways).
pub use qi_common::role::Role;

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Nobody needs to be signed in (health probes, login, the public keys).
    Public,
    /// Any signed-in principal (its own identity).
    SignedIn,
    /// Readings, devices, live state, analytics.
    ReadData,
    /// The hub's Prometheus metrics.
    ReadMetrics,
    /// Commands that write to field devices.
    SendCommands,
    /// Acknowledge alarms (the people at the benches and in the control room).
    HandleAlarms,
    /// The lab's work flow: service requests, their samples, inspections
    /// and photos (the people at intake and at the benches).
    ManageLab,
    /// The asset registry: twins, types, relations, desired state, alarm rules.
    ManageTwins,
    /// Users, API keys, gateway sites.
    ManageIdentity,
    /// The audit trail.
    ReadAudit,
    /// Re-evaluate protocol runs and approve or reject provisional verdicts.
    EvaluateRuns,
    /// Issue, revoke and supersede certificates (signed in the lab's name).
    IssueCertificates,
}

impl Permission {
    /// Whether `role` has this permission.
    pub fn allows(self, role: Role) -> bool {
        self.min_role().is_none_or(|min| role >= min)
    }

    /// The weakest role that has it; None for `Public` and `SignedIn`.
    pub fn min_role(self) -> Option<Role> {
        match self {
            Permission::Public | Permission::SignedIn => None,
            Permission::ReadData | Permission::ReadMetrics => Some(Role::Viewer),
            Permission::SendCommands | Permission::HandleAlarms | Permission::ManageLab => {
                Some(Role::Operator)
            }
            Permission::ManageTwins | Permission::EvaluateRuns | Permission::IssueCertificates => {
                Some(Role::Engineer)
            }
            Permission::ManageIdentity | Permission::ReadAudit => Some(Role::Admin),
        }
    }
}

/// Which gateways an operation touches, for principals limited to sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Not about gateways (its own identity, public routes).
    None,
    /// The gateway named by the `{gateway}` path segment or the `gateway`
    /// query parameter; a site-limited caller must name one of its sites'.
    Gateway,
    /// The gateways of the series named by `{id}` or the `series` parameter.
    Series,
    /// The gateway of the command `{id}`.
    Command,
    /// The whole fleet or the hub itself: unscoped principals only.
    Fleet,
    /// The twin named by `{id}`: a site-limited caller must name a twin in
    /// one of its sites (`twin_site`, migration 0008).
    Twin,
    /// A listing or stream the handler itself narrows to the caller's
    /// sites (`Principal::sites`): what lies outside is left out, not refused.
    Filtered,
}

/// One operation of the API: method, path as in the OpenAPI document, what
/// it needs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
    pub scope: Scope,
}

const fn rule(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    scope: Scope,
) -> Rule {
    Rule {
        method,
        path,
        permission,
        scope,
    }
}

use Permission as P;
use Scope as S;

/// Every operation the hub serves. A route missing here is refused to
/// everyone (fail closed), and a unit test keeps this table, the router and
/// openapi.json in step.
pub const RULES: &[Rule] = &[
    rule("GET", "/health", P::Public, S::None),
    rule("GET", "/live", P::Public, S::None),
    rule("GET", "/ready", P::Public, S::None),
    rule("GET", "/api/v1/openapi.json", P::Public, S::None),
    rule("GET", "/api/v1/auth/jwks.json", P::Public, S::None),
    rule("POST", "/api/v1/auth/login", P::Public, S::None),
    rule("POST", "/api/v1/auth/refresh", P::Public, S::None),
    rule("POST", "/api/v1/auth/logout", P::Public, S::None),
    rule("GET", "/api/v1/auth/me", P::SignedIn, S::None),
    rule("GET", "/metrics", P::ReadMetrics, S::Fleet),
    rule("GET", "/api/v1/readings", P::ReadData, S::Gateway),
    rule("GET", "/api/v1/devices", P::ReadData, S::Gateway),
    rule("GET", "/api/v1/series", P::ReadData, S::Gateway),
    rule("GET", "/api/v1/latest", P::ReadData, S::Gateway),
    rule("GET", "/api/v1/aggregates", P::ReadData, S::Series),
    rule(
        "GET",
        "/api/v1/series/{id}/downsample",
        P::ReadData,
        S::Series,
    ),
    rule("GET", "/api/v1/series/{id}/stats", P::ReadData, S::Series),
    rule(
        "GET",
        "/api/v1/series/{id}/anomalies",
        P::ReadData,
        S::Series,
    ),
    rule(
        "POST",
        "/api/v1/gateways/{gateway}/commands",
        P::SendCommands,
        S::Gateway,
    ),
    rule("GET", "/api/v1/commands/{id}", P::ReadData, S::Command),
    rule(
        "PUT",
        "/api/v1/gateways/{gateway}/site",
        P::ManageIdentity,
        S::Fleet,
    ),
    rule("GET", "/api/v1/users", P::ManageIdentity, S::Fleet),
    rule("POST", "/api/v1/users", P::ManageIdentity, S::Fleet),
    rule(
        "GET",
        "/api/v1/users/{username}",
        P::ManageIdentity,
        S::Fleet,
    ),
    rule(
        "PATCH",
        "/api/v1/users/{username}",
        P::ManageIdentity,
        S::Fleet,
    ),
    rule(
        "DELETE",
        "/api/v1/users/{username}",
        P::ManageIdentity,
        S::Fleet,
    ),
    rule("GET", "/api/v1/keys", P::ManageIdentity, S::Fleet),
    rule("POST", "/api/v1/keys", P::ManageIdentity, S::Fleet),
    rule("DELETE", "/api/v1/keys/{id}", P::ManageIdentity, S::Fleet),
    rule("GET", "/api/v1/audit", P::ReadAudit, S::Fleet),
    rule("GET", "/api/v1/twins", P::ReadData, S::Filtered),
    rule("POST", "/api/v1/twins", P::ManageTwins, S::Filtered),
    rule("GET", "/api/v1/twins/{id}", P::ReadData, S::Twin),
    rule("PATCH", "/api/v1/twins/{id}", P::ManageTwins, S::Twin),
    rule("DELETE", "/api/v1/twins/{id}", P::ManageTwins, S::Twin),
    rule("GET", "/api/v1/twins/{id}/ancestors", P::ReadData, S::Twin),
    rule(
        "GET",
        "/api/v1/twins/{id}/descendants",
        P::ReadData,
        S::Twin,
    ),
    rule("GET", "/api/v1/twins/{id}/relations", P::ReadData, S::Twin),
    rule("GET", "/api/v1/twins/{id}/history", P::ReadData, S::Twin),
    rule("POST", "/api/v1/relations", P::ManageTwins, S::Filtered),
    rule(
        "DELETE",
        "/api/v1/relations/{id}",
        P::ManageTwins,
        S::Filtered,
    ),
    rule("GET", "/api/v1/twin-types", P::ReadData, S::None),
    rule("POST", "/api/v1/twin-types", P::ManageTwins, S::Fleet),
    rule("GET", "/api/v1/twin-types/{id}", P::ReadData, S::None),
    rule("PUT", "/api/v1/twin-types/{id}", P::ManageTwins, S::Fleet),
    rule(
        "DELETE",
        "/api/v1/twin-types/{id}",
        P::ManageTwins,
        S::Fleet,
    ),
    rule("GET", "/api/v1/twins/{id}/desired", P::ReadData, S::Twin),
    rule(
        "PUT",
        "/api/v1/twins/{id}/desired/{point}",
        P::ManageTwins,
        S::Twin,
    ),
    rule(
        "DELETE",
        "/api/v1/twins/{id}/desired/{point}",
        P::ManageTwins,
        S::Twin,
    ),
    rule("GET", "/api/v1/aas/shells", P::ReadData, S::Filtered),
    rule("GET", "/api/v1/aas/shells/{id}", P::ReadData, S::Filtered),
    rule("GET", "/api/v1/aas/submodels", P::ReadData, S::Filtered),
    rule(
        "GET",
        "/api/v1/aas/submodels/{id}",
        P::ReadData,
        S::Filtered,
    ),
    rule("GET", "/api/v1/aas/export", P::ReadData, S::Filtered),
    rule("GET", "/api/v1/twins/stream", P::ReadData, S::Filtered),
    rule("GET", "/api/v1/alarm-rules", P::ManageTwins, S::Filtered),
    rule("POST", "/api/v1/alarm-rules", P::ManageTwins, S::Filtered),
    rule(
        "GET",
        "/api/v1/alarm-rules/{id}",
        P::ManageTwins,
        S::Filtered,
    ),
    rule(
        "PUT",
        "/api/v1/alarm-rules/{id}",
        P::ManageTwins,
        S::Filtered,
    ),
    rule(
        "DELETE",
        "/api/v1/alarm-rules/{id}",
        P::ManageTwins,
        S::Filtered,
    ),
    rule("GET", "/api/v1/alarms", P::ReadData, S::Filtered),
    rule(
        "POST",
        "/api/v1/alarms/{id}/acknowledge",
        P::HandleAlarms,
        S::Filtered,
    ),
    rule("GET", "/api/v1/service-requests", P::ReadData, S::Fleet),
    rule("POST", "/api/v1/service-requests", P::ManageLab, S::Fleet),
    rule(
        "GET",
        "/api/v1/service-requests/{id}",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "POST",
        "/api/v1/service-requests/{id}/transitions",
        P::ManageLab,
        S::Fleet,
    ),
    rule(
        "POST",
        "/api/v1/service-requests/{id}/samples",
        P::ManageLab,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/samples/{id}/inspections",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "POST",
        "/api/v1/samples/{id}/inspections",
        P::ManageLab,
        S::Fleet,
    ),
    rule("GET", "/api/v1/inspections/{id}", P::ReadData, S::Fleet),
    rule(
        "POST",
        "/api/v1/inspections/{id}/photos",
        P::ManageLab,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/inspections/{id}/photos/{no}",
        P::ReadData,
        S::Fleet,
    ),
    rule("GET", "/api/v1/runs", P::ReadData, S::Filtered),
    rule("GET", "/api/v1/runs/{id}", P::ReadData, S::Filtered),
    rule("GET", "/api/v1/runs/{id}/events", P::ReadData, S::Filtered),
    rule(
        "GET",
        "/api/v1/runs/{id}/readings",
        P::ReadData,
        S::Filtered,
    ),
    rule(
        "POST",
        "/api/v1/runs/{id}/evaluate",
        P::EvaluateRuns,
        S::Filtered,
    ),
    rule(
        "POST",
        "/api/v1/runs/{id}/approval",
        P::EvaluateRuns,
        S::Filtered,
    ),
    // Data exports (docs/exports.md): read like the run or request itself.
    rule(
        "GET",
        "/api/v1/runs/{id}/export.csv",
        P::ReadData,
        S::Filtered,
    ),
    rule(
        "GET",
        "/api/v1/runs/{id}/export.xlsx",
        P::ReadData,
        S::Filtered,
    ),
    rule(
        "GET",
        "/api/v1/runs/{id}/export.json",
        P::ReadData,
        S::Filtered,
    ),
    rule(
        "GET",
        "/api/v1/service-requests/{id}/export.csv",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/service-requests/{id}/export.xlsx",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/service-requests/{id}/export.json",
        P::ReadData,
        S::Fleet,
    ),
    rule("GET", "/api/v1/certificates", P::ReadData, S::Fleet),
    rule(
        "POST",
        "/api/v1/certificates",
        P::IssueCertificates,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/certificates/revocations",
        P::Public,
        S::None,
    ),
    rule("GET", "/api/v1/certificates/{id}", P::ReadData, S::Fleet),
    rule(
        "GET",
        "/api/v1/certificates/{id}/document.xml",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/certificates/{id}/document.json",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/certificates/{id}/document.jws",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/certificates/{id}/bundle",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "POST",
        "/api/v1/certificates/{id}/revoke",
        P::IssueCertificates,
        S::Fleet,
    ),
    rule(
        "POST",
        "/api/v1/certificates/{id}/supersede",
        P::IssueCertificates,
        S::Fleet,
    ),
    // PDF reports (docs/reports.md): whoever may read the certificate or
    // the run; the QR code is as public as the verification URL it encodes.
    rule(
        "GET",
        "/api/v1/certificates/{id}/report.pdf",
        P::ReadData,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/certificates/{id}/qr.svg",
        P::Public,
        S::None,
    ),
    rule(
        "GET",
        "/api/v1/runs/{id}/report.pdf",
        P::ReadData,
        S::Filtered,
    ),
    rule("GET", "/api/v1/verify/{id}", P::Public, S::None),
    // Instrument calibration (docs/calibration.md).
    rule(
        "GET",
        "/api/v1/twins/{id}/calibrations",
        P::ReadData,
        S::Twin,
    ),
    rule(
        "POST",
        "/api/v1/twins/{id}/calibrations",
        P::ManageTwins,
        S::Twin,
    ),
    rule("GET", "/api/v1/calibrations/due", P::ReadData, S::Fleet),
    rule(
        "POST",
        "/api/v1/calibrations/{id}/certificate",
        P::IssueCertificates,
        S::Fleet,
    ),
    // The transparency log: anyone may check it (docs/transparency-log.md).
    rule("GET", "/api/v1/log/head", P::Public, S::None),
    rule("GET", "/api/v1/log/key", P::Public, S::None),
    rule("GET", "/api/v1/log/proof/inclusion", P::Public, S::None),
    rule("GET", "/api/v1/log/proof/consistency", P::Public, S::None),
    rule("GET", "/api/v1/log/entries", P::Public, S::None),
    // Webhooks carry the lab's data out of the hub and hold signing
    // secrets: admins only, like API keys (docs/webhooks.md).
    rule("GET", "/api/v1/webhooks", P::ManageIdentity, S::Fleet),
    rule("POST", "/api/v1/webhooks", P::ManageIdentity, S::Fleet),
    rule(
        "DELETE",
        "/api/v1/webhooks/{id}",
        P::ManageIdentity,
        S::Fleet,
    ),
    rule(
        "GET",
        "/api/v1/webhooks/dead-letters",
        P::ManageIdentity,
        S::Fleet,
    ),
    rule(
        "POST",
        "/api/v1/webhooks/dead-letters/{id}/replay",
        P::ManageIdentity,
        S::Fleet,
    ),
    rule("GET", "/api/v1/nonconformances", P::ReadData, S::Fleet),
    rule("GET", "/api/v1/nonconformances/{id}", P::ReadData, S::Fleet),
    rule(
        "POST",
        "/api/v1/nonconformances/{id}/close",
        P::EvaluateRuns,
        S::Fleet,
    ),
];

/// The rule of an operation, by method and matched route path.
pub fn required(method: &str, path: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_inherit() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Engineer);
        assert!(Role::Engineer < Role::Admin);
        assert!(!Permission::SendCommands.allows(Role::Viewer));
        assert!(Permission::SendCommands.allows(Role::Operator));
        assert!(!Permission::ManageIdentity.allows(Role::Engineer));
        assert!(Permission::ReadAudit.allows(Role::Admin));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    /// docs/security.md shows this table; its rows must say what the code does.
    #[test]
    fn the_documented_table_is_this_one() {
        let doc = include_str!("../../../docs/security.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
        for r in RULES {
            let least = match r.permission {
                Permission::Public => "public",
                Permission::SignedIn => "signed in",
                p => p.min_role().map_or("?", Role::as_str),
            };
            let op = format!("| `{} {}` |", r.method, r.path);
            let row = rows
                .iter()
                .find(|l| l.starts_with(&op))
                .unwrap_or_else(|| panic!("docs/security.md has no row for {op}"));
            assert!(
                row.contains(&format!("| {least} |")),
                "docs/security.md says {row:?}; the code says {least}"
            );
        }
        let documented = rows.iter().filter(|l| l.contains(" /")).count();
        assert_eq!(
            documented,
            RULES.len(),
            "rows for operations that have no rule"
        );
    }

    #[test]
    fn each_operation_has_one_rule() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RULES {
            assert!(
                seen.insert((r.method, r.path)),
                "two rules for {} {}",
                r.method,
                r.path
            );
        }
    }
}
