//! Issuing a test certificate for a sample from its runs: only when every
//! included run's verdict that stands (`final_verdict`: an approval's, or
//! the evaluation's) is pass; a simulated run (time_scale != 1) only with
//! the caller's consent, and then the document says SIMULATED. Rendered,
//! signed twice, stored, appended to the transparency log and audited in
//! one transaction.

use super::document::{
    self, Approval, Certificate, Check, Criterion, Customer, Instrument, Item, Laboratory, Person,
    Quantity, RunResult, Software, si_unit,
};
use super::xml::clean;
use super::{CertError, Issuer, dsig, jws, log, pki};
use crate::audit::{NewEntry, Origin};
use crate::identity::Principal;
use crate::runs::evaluation::{Evaluation, latest};
use crate::runs::{RunRow, run_columns};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::time::Instant;

/// Most runs one certificate covers.
pub const MAX_RUNS: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The sample twin, `sample:<serial>`.
    pub sample: String,
    /// The runs to certify; absent: every completed run of the sample.
    #[serde(default)]
    pub runs: Option<Vec<String>>,
    /// Consent to a certificate marked SIMULATED when a run was simulated.
    #[serde(default)]
    pub allow_simulated: bool,
}

/// A stored certificate's identity and state, as the API shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Summary {
    pub certificate_id: String,
    pub uuid: String,
    pub kind: String,
    pub subject: String,
    pub service_request: Option<String>,
    pub runs: Value,
    pub simulated: bool,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub issued_by: String,
    pub state: String,
    pub revocation_reason: Option<String>,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub superseded_by: Option<String>,
    pub supersedes: Option<String>,
    pub document_sha256: String,
    pub issuer_fingerprint: String,
    pub log_entry: Option<Value>,
    #[serde(skip)]
    pub certificate_no: i64,
}

pub const SUMMARY_COLUMNS: &str = "certificate_id, uuid::text AS uuid, kind, subject, service_request, \
    runs, simulated, issued_at, expires_at, issued_by, state, revocation_reason, revoked_by, \
    revoked_at, superseded_by, supersedes, document_sha256, issuer_fingerprint, log_entry, certificate_no";

fn check_sample(s: &str) -> Result<(), CertError> {
    let ok = s.starts_with("sample:")
        && s.len() > "sample:".len()
        && s.len() <= qi_proto::limits::MAX_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CertError::Invalid(
            "`sample` is a sample twin id, `sample:<serial number>` (A-Z a-z 0-9 . _ : @ -)".into(),
        ))
    }
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Everything of one run the document needs.
struct RunFacts {
    run: RunRow,
    evaluation: Evaluation,
    /// run series -> unit, and the devices that recorded them.
    series: Vec<(String, String, String)>,
    /// Each instrument (device) of the run and what its calibration said
    /// when the run started.
    instruments: BTreeMap<String, String>,
}

/// The devices of a run: those that recorded its series and those its
/// bench binds.
fn devices(run: &RunRow, series: &[(String, String, String)]) -> Vec<String> {
    let mut devices: Vec<String> = series.iter().map(|(_, _, d)| d.clone()).collect();
    if let Some(b) = run.bindings.as_array() {
        devices.extend(
            b.iter()
                .filter_map(|p| p["device_id"].as_str().map(String::from)),
        );
    }
    devices.sort();
    devices.dedup();
    devices
}

async fn run_facts(conn: &mut PgConnection, run: RunRow) -> Result<RunFacts, CertError> {
    let id = run.run_id.clone();
    let evaluation = latest(conn, &id)
        .await?
        .ok_or_else(|| CertError::Refused(format!("run {id} has not been evaluated")))?;
    let series: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT run_series, unit, device_id FROM series WHERE run_id = $1::uuid ORDER BY run_series",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    let at = run.started_at.unwrap_or_else(Utc::now);
    let mut instruments = BTreeMap::new();
    for d in devices(&run, &series) {
        let c = crate::calibration::records::standing_at(conn, &run.gateway_id, &d, at).await?;
        instruments.insert(d, clean(&super::calibration::status_at(c.as_ref(), at)));
    }
    Ok(RunFacts {
        run,
        evaluation,
        series,
        instruments,
    })
}

/// Why a run cannot be certified, if it cannot.
fn refusal(f: &RunFacts) -> Option<String> {
    let id = &f.run.run_id;
    if f.run.state != "completed" {
        return Some(format!("run {id} is {}, not completed", f.run.state));
    }
    let e = &f.evaluation;
    match e.final_verdict.as_str() {
        "pass" => None,
        "provisional" => Some(format!(
            "run {id} awaits an engineer's approval of its provisional verdict (computed {})",
            e.computed
        )),
        v => Some(format!("run {id}'s verdict is {v}, not pass")),
    }
}

fn simulated(f: &RunFacts) -> bool {
    f.evaluation.simulated || f.run.time_scale.is_some_and(|t| t != 1.0)
}

/// Issues a certificate. `supersedes`: the certificate it corrects and why.
pub async fn issue(
    pool: &PgPool,
    issuer: &Issuer,
    who: &Principal,
    origin: &Origin,
    req: &IssueRequest,
    supersedes: Option<(&str, &str)>,
) -> Result<Summary, CertError> {
    let started = Instant::now();
    let key = issuer.key()?;
    check_sample(&req.sample)?;
    if let Some(runs) = &req.runs {
        if runs.is_empty() || runs.len() > MAX_RUNS {
            return Err(CertError::Invalid(format!(
                "`runs` names 1 to {MAX_RUNS} runs"
            )));
        }
        if let Some(bad) = runs
            .iter()
            .find(|r| !crate::runs::validate::valid_run_id(r))
        {
            return Err(CertError::Invalid(format!(
                "run id {bad:?} is not a lowercase hyphenated UUID"
            )));
        }
    }
    let mut tx = pool.begin().await?;
    let request: Option<(String, String, String)> = sqlx::query_as(
        "SELECT r.request_id, r.customer, r.module_type FROM service_request_samples s
           JOIN service_requests r USING (request_id) WHERE s.sample_id = $1",
    )
    .bind(&req.sample)
    .fetch_optional(&mut *tx)
    .await?;
    let (request_id, customer, module_type) = request.ok_or_else(|| {
        CertError::Refused(format!(
            "{} is not a sample of a service request: a certificate names its customer",
            req.sample
        ))
    })?;
    let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM runs
          WHERE ($1::uuid[] IS NULL AND sample_id = $2 AND state = 'completed')
             OR run_id = ANY($1::uuid[])
          ORDER BY started_at NULLS LAST, run_no",
        run_columns(true)
    )))
    .bind(req.runs.as_ref())
    .bind(&req.sample)
    .fetch_all(&mut *tx)
    .await?;
    if let Some(asked) = &req.runs
        && let Some(missing) = asked.iter().find(|a| !rows.iter().any(|r| &r.run_id == *a))
    {
        return Err(CertError::NotFound(format!("no run {missing}")));
    }
    if rows.is_empty() {
        return Err(CertError::Refused(format!(
            "{} has no completed run to certify",
            req.sample
        )));
    }
    let mut facts = Vec::new();
    for r in rows {
        if r.sample_id.as_deref() != Some(req.sample.as_str()) {
            return Err(CertError::Refused(format!(
                "run {} is of {}, not {}",
                r.run_id,
                r.sample_id.as_deref().unwrap_or("no sample"),
                req.sample
            )));
        }
        facts.push(run_facts(&mut tx, r).await?);
    }
    let refusals: Vec<String> = facts.iter().filter_map(refusal).collect();
    if !refusals.is_empty() {
        return Err(CertError::Refused(format!(
            "no certificate: {}",
            refusals.join("; ")
        )));
    }
    let sim: Vec<String> = facts
        .iter()
        .filter(|f| simulated(f))
        .map(|f| {
            format!(
                "run {} (time scale {})",
                f.run.run_id,
                f.run.time_scale.unwrap_or(1.0)
            )
        })
        .collect();
    if !sim.is_empty() && !req.allow_simulated {
        return Err(CertError::Refused(format!(
            "{} simulated faster than real time: a certificate for it would be marked SIMULATED; \
             send \"allow_simulated\": true to issue such a certificate",
            sim.join(", ")
        )));
    }
    let (id, uuid, now) = allocate(&mut tx, issuer).await?;
    let expires = now + chrono::Duration::days(i64::from(issuer.validity_days));
    let doc = build(
        issuer,
        &id,
        &uuid,
        now,
        expires,
        who,
        (&request_id, &customer, &module_type),
        &req.sample,
        &facts,
        supersedes.map(|s| s.0),
    );
    let xml = dsig::sign(&doc.to_xml(), key)?;
    let json = doc.to_json();
    let jws = jws::sign_detached(&json, key)?;
    let sha = pki::sha256_hex(xml.as_bytes());
    let runs_json: Vec<Value> = facts
        .iter()
        .map(|f| {
            json!({"run_id": f.run.run_id, "protocol_id": f.run.protocol_id,
                   "verdict": f.evaluation.final_verdict, "evaluation_id": f.evaluation.evaluation_id,
                   "simulated": simulated(f)})
        })
        .collect();
    let run_ids: Vec<String> = facts.iter().map(|f| f.run.run_id.clone()).collect();
    if let Some((old, reason)) = supersedes {
        super::store::mark_superseded(&mut tx, old, &id, who, reason).await?;
    }
    sqlx::query(
        "INSERT INTO certificates (certificate_id, uuid, kind, subject, service_request, runs,
            run_ids, simulated, issued_at, expires_at, issued_by, supersedes, document_xml,
            document_json, document_jws, document_sha256, issuer_fingerprint)
         VALUES ($1, $2::uuid, 'test', $3, $4, $5, $6::uuid[], $7, $8, $9, $10, $11, $12, $13, $14,
                 $15, $16)",
    )
    .bind(&id)
    .bind(&uuid)
    .bind(&req.sample)
    .bind(&request_id)
    .bind(Value::Array(runs_json.clone()))
    .bind(&run_ids)
    .bind(doc.simulated)
    .bind(now)
    .bind(expires)
    .bind(&who.id)
    .bind(supersedes.map(|s| s.0))
    .bind(xml.as_bytes())
    .bind(&json)
    .bind(&jws)
    .bind(&sha)
    .bind(key.fingerprint())
    .execute(&mut *tx)
    .await?;
    let leaf = log::LogLeaf {
        event: "issued".into(),
        certificate_id: id.clone(),
        document_sha256: sha.clone(),
        at: rfc3339(now),
    };
    let logged = log::append_to_transparency_log(&mut tx, &leaf).await?;
    sqlx::query("UPDATE certificates SET log_entry = $2 WHERE certificate_id = $1")
        .bind(&id)
        .bind(&logged)
        .execute(&mut *tx)
        .await?;
    let entry = NewEntry::new(who.kind, &who.id, "certificate.issue", format!("certificate:{id}"))
        .origin(origin)
        .after(json!({"sample": req.sample, "runs": runs_json, "simulated": doc.simulated,
                      "expires_at": expires, "document_sha256": sha, "supersedes": supersedes.map(|s| s.0)}));
    crate::audit::append_in(&mut tx, entry).await?;
    let summary: Summary = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM certificates WHERE certificate_id = $1"
    )))
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    // Queued, not sent: a receiver that is slow or down never holds this up.
    crate::webhooks::enqueue(
        &mut tx,
        crate::webhooks::EventType::CertificateIssued,
        json!({"certificate_id": id, "sample": req.sample, "service_request": request_id}),
        json!({"certificate_id": id, "uuid": summary.uuid, "sample": req.sample,
               "service_request": request_id, "runs": runs_json, "simulated": doc.simulated,
               "issued_at": summary.issued_at, "expires_at": summary.expires_at,
               "issued_by": who.id, "supersedes": supersedes.map(|s| s.0),
               "document_sha256": sha, "verification_url": issuer.verification_url(&id)}),
    )
    .await?;
    tx.commit().await?;
    // The gateways of its runs (and of a superseded one's) are told.
    crate::runs::verdicts::changed();
    let simulated = if doc.simulated { "true" } else { "false" };
    metrics::counter!(crate::metric_names::HUB_CERTIFICATES_ISSUED_TOTAL, "kind" => "test", "simulated" => simulated)
        .increment(1);
    metrics::histogram!(crate::metric_names::HUB_CERTIFICATE_ISSUE_SECONDS)
        .record(started.elapsed().as_secs_f64());
    tracing::info!(certificate = %id, sample = %req.sample, by = %who.id, simulated = doc.simulated, "certificate issued");
    Ok(summary)
}

/// A new certificate's id, UUID and issue time (whole seconds).
pub(super) async fn allocate(
    conn: &mut PgConnection,
    issuer: &Issuer,
) -> Result<(String, String, DateTime<Utc>), CertError> {
    let (number, uuid, now): (i64, String, DateTime<Utc>) = sqlx::query_as(
        "SELECT nextval('certificate_number'), gen_random_uuid()::text, date_trunc('second', now())",
    )
    .fetch_one(&mut *conn)
    .await?;
    let id = format!("{}-{}-{number:06}", issuer.id_prefix, now.format("%Y"));
    Ok((id, uuid, now))
}

/// Units of a run's inputs: its series (aggregates by their record's),
/// the template's parameters and sample values.
fn units(f: &RunFacts) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = f
        .series
        .iter()
        .map(|(s, u, _)| (s.clone(), u.clone()))
        .collect();
    if let Some(t) = f.run.template_toml.as_deref()
        && let Ok(p) = qi_protocol::Protocol::parse(t, std::path::Path::new("stored"))
    {
        for par in &p.parameters {
            out.insert(par.name.clone(), par.unit.clone());
        }
        for sv in &p.sample_values {
            out.insert(sv.name.clone(), sv.unit.clone());
        }
    }
    out
}

fn unit_of(units: &BTreeMap<String, String>, name: &str) -> String {
    if let Some(u) = units.get(name) {
        return u.clone();
    }
    for agg in [".min", ".max", ".mean"] {
        if let Some(u) = name.strip_suffix(agg).and_then(|r| units.get(r)) {
            return u.clone();
        }
    }
    "unknown".into()
}

fn quantity(name: &str, value: f64, unit: String) -> Quantity {
    Quantity {
        name: clean(name),
        value,
        si_unit: if unit == "unknown" {
            "|unknown|".into()
        } else {
            si_unit(&unit)
        },
        unit: clean(&unit),
        uncertainty: None,
    }
}

fn s(v: &Value) -> String {
    clean(v.as_str().unwrap_or_default())
}

fn criteria(f: &RunFacts, units: &BTreeMap<String, String>) -> Vec<Criterion> {
    let results = f.evaluation.results.as_array().cloned().unwrap_or_default();
    results
        .iter()
        .map(|r| Criterion {
            id: s(&r["id"]),
            description: s(&r["description"]),
            unit: s(&r["unit"]),
            verdict: s(&r["verdict"]),
            explanation: s(&r["explanation"]),
            inputs: r["inputs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| {
                            let name = i["name"].as_str()?;
                            let v = i["value"].as_f64().filter(|v| v.is_finite())?;
                            Some(quantity(name, v, unit_of(units, name)))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            checks: r["checks"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| {
                            Some(Check {
                                computed: s(&c["computed"]),
                                value: c["value"].as_f64().filter(|v| v.is_finite())?,
                                op: s(&c["op"]),
                                limit_expr: s(&c["limit_expr"]),
                                limit: c["limit"].as_f64().filter(|v| v.is_finite())?,
                                holds: c["holds"].as_bool().unwrap_or(false),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn run_result(f: &RunFacts) -> RunResult {
    let r = &f.run;
    let e = &f.evaluation;
    let units = units(f);
    let values = e.inputs["values"].as_object().cloned().unwrap_or_default();
    let measured = values
        .iter()
        .filter(|(n, _)| e.inputs["sources"][n.as_str()]["from"] == "run")
        .filter_map(|(n, v)| {
            let v = v.as_f64().filter(|v| v.is_finite())?;
            Some(quantity(n, v, unit_of(&units, n)))
        })
        .collect();
    let instruments = f
        .instruments
        .iter()
        .map(|(d, calibration)| Instrument {
            device_id: clean(d),
            twin_id: clean(&format!("instrument:{}:{d}", r.gateway_id)),
            calibration: calibration.clone(),
        })
        .collect();
    let time = |t: Option<DateTime<Utc>>| t.map(rfc3339).unwrap_or_default();
    RunResult {
        run_id: r.run_id.clone(),
        protocol_id: clean(r.protocol_id.as_deref().unwrap_or_default()),
        protocol_version: clean(r.protocol_version.as_deref().unwrap_or_default()),
        template_sha256: clean(&e.template_sha256),
        started_at: time(r.started_at),
        ended_at: time(r.ended_at),
        gateway_id: clean(&r.gateway_id),
        bench_id: clean(r.bench_id.as_deref().unwrap_or_default()),
        operator: clean(r.operator.as_deref().unwrap_or_default()),
        time_scale: r.time_scale.unwrap_or(1.0),
        simulated: simulated(f),
        verdict: e.final_verdict.clone(),
        evaluation_id: e.evaluation_id,
        approval: e.approval.as_ref().map(|a| Approval {
            decided_by: s(&a["decided_by"]),
            decided_at: a["decided_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| rfc3339(t.with_timezone(&Utc)))
                .unwrap_or_default(),
            comment: s(&a["comment"]),
        }),
        instruments,
        criteria: criteria(f, &units),
        measured,
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    issuer: &Issuer,
    id: &str,
    uuid: &str,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
    who: &Principal,
    (request_id, customer, module_type): (&str, &str, &str),
    sample: &str,
    facts: &[RunFacts],
    supersedes: Option<&str>,
) -> Certificate {
    let runs: Vec<RunResult> = facts.iter().map(run_result).collect();
    let simulated = runs.iter().any(|r| r.simulated);
    let date = |t: Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%d").to_string());
    let begin = facts.iter().filter_map(|f| f.run.started_at).min();
    let end = facts.iter().filter_map(|f| f.run.ended_at).max();
    let mut persons = vec![Person {
        name: clean(&who.id),
        role: "issuer".into(),
    }];
    for r in &runs {
        if let Some(a) = &r.approval
            && !persons
                .iter()
                .any(|p| p.name == a.decided_by && p.role == "approver")
        {
            persons.push(Person {
                name: a.decided_by.clone(),
                role: "approver".into(),
            });
        }
    }
    Certificate {
        format: document::FORMAT.into(),
        id: id.into(),
        uuid: uuid.into(),
        kind: "test".into(),
        simulated,
        warning: simulated.then(|| document::SIMULATED_WARNING.into()),
        issued_at: rfc3339(now),
        expires_at: rfc3339(expires),
        validity_days: issuer.validity_days,
        begin_performance_date: date(begin).unwrap_or_default(),
        end_performance_date: date(end).unwrap_or_default(),
        verification_url: issuer.verification_url(id),
        supersedes: supersedes.map(String::from),
        software: Software {
            name: "qi-platform cloud-hub".into(),
            release: env!("CARGO_PKG_VERSION").into(),
        },
        laboratory: Laboratory {
            name: clean(&issuer.lab_name),
            country: clean(&issuer.lab_country),
        },
        customer: Customer {
            name: clean(customer),
            service_request: clean(request_id),
        },
        item: Item {
            sample_id: clean(sample),
            serial_number: clean(sample.strip_prefix("sample:").unwrap_or(sample)),
            module_type: clean(module_type),
        },
        responsible_persons: persons,
        runs,
        calibration: None,
    }
}
