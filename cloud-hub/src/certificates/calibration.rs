//! Issuing a calibration certificate (kind `calibration`) for a calibration
//! this laboratory did (`crate::calibration::records`): the instrument as
//! the item, the measured values with their expanded uncertainty, the
//! conditions, the due date as the certificate's expiry. Signed, stored,
//! logged and audited in one transaction like a test certificate; verified
//! by the same offline verifier. Refused for another laboratory's
//! calibration, a calibration already certified by a valid certificate,
//! and one past its due date. Also what a test certificate says of an
//! instrument's calibration at a run's start ([`status_at`]).

use super::document::{
    self, CalibrationResult, Certificate, Customer, Item, Laboratory, Person, Quantity, Software,
    Uncertainty, si_unit,
};
use super::issue::{SUMMARY_COLUMNS, Summary, allocate, rfc3339};
use super::xml::clean;
use super::{CertError, Issuer, dsig, jws, log, pki};
use crate::audit::{NewEntry, Origin};
use crate::calibration::records::{self, Calibration};
use crate::identity::Principal;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use std::time::Instant;

fn quantity(name: &str, value: f64, unit: &str, unc: Option<(f64, f64)>) -> Quantity {
    Quantity {
        name: clean(name),
        value,
        unit: clean(unit),
        si_unit: si_unit(unit),
        uncertainty: unc.map(|(expanded, coverage_factor)| Uncertainty {
            expanded,
            coverage_factor,
        }),
    }
}

fn build(
    issuer: &Issuer,
    (id, uuid, now): (&str, &str, DateTime<Utc>),
    who: &Principal,
    c: &Calibration,
    twin_type: &str,
) -> Certificate {
    let days = (c.due_at - now).num_days().max(0);
    let date = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
    let mut persons = vec![Person {
        name: clean(&who.id),
        role: "issuer".into(),
    }];
    if c.recorded_by != who.id {
        persons.push(Person {
            name: clean(&c.recorded_by),
            role: "recorder".into(),
        });
    }
    let lab = clean(&issuer.lab_name);
    Certificate {
        format: document::FORMAT.into(),
        id: id.into(),
        uuid: uuid.into(),
        kind: "calibration".into(),
        simulated: false,
        warning: None,
        issued_at: rfc3339(now),
        expires_at: rfc3339(c.due_at),
        validity_days: u32::try_from(days).unwrap_or(u32::MAX),
        begin_performance_date: date(c.calibrated_at),
        end_performance_date: date(c.calibrated_at),
        verification_url: issuer.verification_url(id),
        supersedes: None,
        software: Software {
            name: "qi-platform cloud-hub".into(),
            release: env!("CARGO_PKG_VERSION").into(),
        },
        laboratory: Laboratory {
            name: lab.clone(),
            country: clean(&issuer.lab_country),
        },
        customer: Customer {
            name: lab,
            service_request: String::new(),
        },
        item: Item {
            sample_id: clean(&c.twin_id),
            serial_number: clean(&c.device_id),
            module_type: clean(twin_type),
        },
        responsible_persons: persons,
        runs: Vec::new(),
        calibration: Some(CalibrationResult {
            calibration_id: c.calibration_id,
            gateway_id: clean(&c.gateway_id),
            device_id: clean(&c.device_id),
            calibrated_at: rfc3339(c.calibrated_at),
            due_at: rfc3339(c.due_at),
            method: clean(&c.method),
            measured: c
                .measured()
                .iter()
                .map(|m| {
                    quantity(
                        &m.name,
                        m.value,
                        &m.unit,
                        Some((m.expanded_uncertainty, m.coverage_factor)),
                    )
                })
                .collect(),
            conditions: c
                .conditions()
                .iter()
                .map(|k| quantity(&k.name, k.value, &k.unit, None))
                .collect(),
        }),
    }
}

/// What a test certificate says of an instrument's calibration at the
/// run's start: valid until when (record, certificate), expired, or none.
pub(super) fn status_at(c: Option<&Calibration>, at: DateTime<Utc>) -> String {
    let Some(c) = c else {
        return "none recorded at the run's start".into();
    };
    let cert = c
        .certificate_id
        .as_deref()
        .or(c.external_certificate.as_deref())
        .map(|x| format!(", certificate {x}"))
        .unwrap_or_default();
    let whose = format!("calibration {}{cert}, {}", c.calibration_id, c.laboratory);
    if c.due_at <= at {
        format!(
            "EXPIRED at the run's start: due on {} ({whose})",
            rfc3339(c.due_at)
        )
    } else {
        format!("valid until {} ({whose})", rfc3339(c.due_at))
    }
}

/// Issues the calibration certificate of calibration `calibration_id`.
pub async fn issue(
    pool: &PgPool,
    issuer: &Issuer,
    who: &Principal,
    origin: &Origin,
    calibration_id: i64,
) -> Result<Summary, CertError> {
    let started = Instant::now();
    let key = issuer.key()?;
    let mut tx = pool.begin().await?;
    // Locked: two engineers issuing at once get one certificate.
    sqlx::query("SELECT 1 FROM calibrations WHERE calibration_id = $1 FOR UPDATE")
        .bind(calibration_id)
        .execute(&mut *tx)
        .await?;
    let c = records::get(&mut tx, calibration_id)
        .await?
        .ok_or_else(|| CertError::NotFound(format!("no calibration {calibration_id}")))?;
    if c.external {
        return Err(CertError::Refused(format!(
            "calibration {calibration_id} was done by {}, whose certificate {} stands: this hub \
             certifies its own laboratory's calibrations only",
            c.laboratory,
            c.external_certificate.as_deref().unwrap_or("(none named)")
        )));
    }
    if let Some(old) = &c.certificate_id {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM certificates WHERE certificate_id = $1")
                .bind(old)
                .fetch_optional(&mut *tx)
                .await?;
        if state.as_deref() == Some("valid") {
            return Err(CertError::Refused(format!(
                "calibration {calibration_id} is certified by {old} already; revoke it first to \
                 issue another"
            )));
        }
    }
    let (id, uuid, now) = allocate(&mut tx, issuer).await?;
    if c.due_at <= now {
        return Err(CertError::Refused(format!(
            "calibration {calibration_id} was due on {}: record a new calibration",
            rfc3339(c.due_at)
        )));
    }
    let twin_type: Option<String> =
        sqlx::query_scalar("SELECT type_id FROM twins WHERE twin_id = $1")
            .bind(&c.twin_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    let doc = build(
        issuer,
        (&id, &uuid, now),
        who,
        &c,
        twin_type.as_deref().unwrap_or("instrument"),
    );
    let xml = dsig::sign(&doc.to_xml(), key)?;
    let json_doc = doc.to_json();
    let jws = jws::sign_detached(&json_doc, key)?;
    let sha = pki::sha256_hex(xml.as_bytes());
    sqlx::query(
        "INSERT INTO certificates (certificate_id, uuid, kind, subject, issued_at, expires_at,
            issued_by, document_xml, document_json, document_jws, document_sha256,
            issuer_fingerprint)
         VALUES ($1, $2::uuid, 'calibration', $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(&uuid)
    .bind(&c.twin_id)
    .bind(now)
    .bind(c.due_at)
    .bind(&who.id)
    .bind(xml.as_bytes())
    .bind(&json_doc)
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
    sqlx::query("UPDATE calibrations SET certificate_id = $2 WHERE calibration_id = $1")
        .bind(calibration_id)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let entry = NewEntry::new(
        who.kind,
        &who.id,
        "certificate.issue",
        format!("certificate:{id}"),
    )
    .origin(origin)
    .after(json!({"kind": "calibration", "instrument": c.twin_id,
                  "calibration_id": calibration_id, "expires_at": c.due_at,
                  "document_sha256": sha}));
    crate::audit::append_in(&mut tx, entry).await?;
    let summary: Summary = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM certificates WHERE certificate_id = $1"
    )))
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    crate::calibration::push::changed();
    metrics::counter!(crate::metric_names::HUB_CERTIFICATES_ISSUED_TOTAL, "kind" => "calibration", "simulated" => "false")
        .increment(1);
    metrics::histogram!(crate::metric_names::HUB_CERTIFICATE_ISSUE_SECONDS)
        .record(started.elapsed().as_secs_f64());
    tracing::info!(certificate = %id, instrument = %c.twin_id, calibration = calibration_id,
        by = %who.id, "calibration certificate issued");
    Ok(summary)
}
