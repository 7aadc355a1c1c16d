//! What a service request's export holds: the request (fields), its state
//! history, its samples, their inspections and observations, their runs
//! with the verdict that stands, and the certificates issued for them. A
//! request's tables are small (tens of samples), read whole.

use super::columns::{
    CERTIFICATES, INSPECTIONS, OBSERVATIONS, REQUEST, RUNS, SAMPLES, TRANSITIONS,
};
use super::stream::{Export, Rows, Table};
use super::{Cell, ExportError};
use crate::lab::requests;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

type T = DateTime<Utc>;

pub async fn export(pool: &PgPool, id: &str) -> Result<Export, ExportError> {
    let mut conn = pool.acquire().await?;
    let r = requests::get(&mut conn, id)
        .await
        .map_err(|e| match e {
            crate::lab::LabError::Db(e) => ExportError::Db(e),
            other => ExportError::Invalid(other.to_string()),
        })?
        .ok_or_else(|| ExportError::NotFound(format!("no service request {id:?}")))?;
    drop(conn);
    let now = Utc::now();
    let request = vec![
        Cell::text(&r.request_id),
        Cell::opt_text(r.external_ref.clone()),
        Cell::text(&r.customer),
        Cell::text(&r.module_type),
        Cell::text(r.protocols.join(", ")),
        Cell::text(&r.state),
        Cell::text(&r.notes),
        Cell::text(&r.created_by),
        Cell::Time(r.created_at),
        Cell::Time(r.updated_at),
        Cell::Int(r.version),
        Cell::Time(now),
    ];

    let transitions: Vec<(T, String, String, String, String)> = sqlx::query_as(
        "SELECT at, from_state, to_state, by_actor, comment FROM service_request_transitions
          WHERE request_id = $1 ORDER BY transition_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let transitions = transitions
        .into_iter()
        .map(|(at, from, to, by, comment)| {
            vec![
                Cell::Time(at),
                Cell::Text(from),
                Cell::Text(to),
                Cell::Text(by),
                Cell::Text(comment),
            ]
        })
        .collect();

    let samples: Vec<(String, Option<String>, Option<String>, T)> = sqlx::query_as(
        "SELECT s.sample_id, t.serial_number, t.name, s.added_at FROM service_request_samples s
           LEFT JOIN twins t ON t.twin_id = s.sample_id
          WHERE s.request_id = $1 ORDER BY s.added_at, s.sample_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let ids: Vec<String> = samples.iter().map(|s| s.0.clone()).collect();
    let samples = samples
        .into_iter()
        .map(|(sample, serial, name, added)| {
            vec![
                Cell::Text(sample),
                Cell::opt_text(serial),
                Cell::opt_text(name),
                Cell::Time(added),
            ]
        })
        .collect();

    type Inspection = (String, i64, String, T, String, i32, i32, Value, String);
    let inspections: Vec<Inspection> = sqlx::query_as(
        "SELECT sample_id, inspection_id, stage, performed_at, inspector, major_defects,
                minor_defects, findings, notes
           FROM inspections WHERE sample_id = ANY($1)
          ORDER BY sample_id, performed_at, inspection_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let inspections = inspections
        .into_iter()
        .map(
            |(sample, no, stage, at, inspector, major, minor, findings, notes)| {
                vec![
                    Cell::Text(sample),
                    Cell::Int(no),
                    Cell::Text(stage),
                    Cell::Time(at),
                    Cell::Text(inspector),
                    Cell::Int(i64::from(major)),
                    Cell::Int(i64::from(minor)),
                    Cell::Json(findings),
                    Cell::Text(notes),
                ]
            },
        )
        .collect();

    type Observation = (String, String, f64, String, T, String, String);
    let observations: Vec<Observation> = sqlx::query_as(
        "SELECT sample_id, name, value, unit, observed_at, source, recorded_by
           FROM sample_observations WHERE sample_id = ANY($1)
          ORDER BY sample_id, observed_at, observation_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let observations = observations
        .into_iter()
        .map(|(sample, name, value, unit, at, source, by)| {
            vec![
                Cell::Text(sample),
                Cell::Text(name),
                Cell::Number(value),
                Cell::Text(unit),
                Cell::Time(at),
                Cell::Text(source),
                Cell::Text(by),
            ]
        })
        .collect();

    type Run = (
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        String,
        Option<T>,
        Option<T>,
        Option<bool>,
        Option<String>,
        Option<String>,
    );
    // Each run with its latest evaluation and the verdict that stands
    // (an approval's, else the evaluation's), as the request's GET shows.
    let runs: Vec<Run> = sqlx::query_as(
        "SELECT r.sample_id, r.run_id::text, r.protocol_id, r.protocol_version, r.bench_id,
                r.gateway_id, r.state, r.started_at, r.ended_at,
                coalesce(e.simulated, r.time_scale <> 1), e.verdict,
                coalesce(a.final_verdict, e.verdict)
           FROM runs r
           LEFT JOIN LATERAL (SELECT * FROM run_evaluations x WHERE x.run_id = r.run_id
                               ORDER BY x.evaluation_id DESC LIMIT 1) e ON true
           LEFT JOIN run_approvals a ON a.approval_id = e.approval_id
          WHERE r.sample_id = ANY($1)
          ORDER BY r.sample_id, r.started_at NULLS LAST, r.run_no",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let runs = runs
        .into_iter()
        .map(|r| {
            vec![
                Cell::opt_text(r.0),
                Cell::Text(r.1),
                Cell::opt_text(r.2),
                Cell::opt_text(r.3),
                Cell::opt_text(r.4),
                Cell::Text(r.5),
                Cell::Text(r.6),
                Cell::opt_time(r.7),
                Cell::opt_time(r.8),
                r.9.map_or(Cell::Empty, Cell::Bool),
                Cell::opt_text(r.10),
                Cell::opt_text(r.11),
            ]
        })
        .collect();

    type Certificate = (
        String,
        String,
        String,
        String,
        T,
        T,
        bool,
        Vec<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<T>,
    );
    let certificates: Vec<Certificate> = sqlx::query_as(
        "SELECT certificate_id, kind, subject, state, issued_at, expires_at, simulated,
                run_ids::text[], supersedes, superseded_by, revocation_reason, revoked_at
           FROM certificates WHERE service_request = $1 OR subject = ANY($2)
          ORDER BY certificate_no",
    )
    .bind(id)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let certificates = certificates
        .into_iter()
        .map(|c| {
            vec![
                Cell::Text(c.0),
                Cell::Text(c.1),
                Cell::Text(c.2),
                Cell::Text(c.3),
                Cell::Time(c.4),
                Cell::Time(c.5),
                Cell::Bool(c.6),
                Cell::Text(c.7.join(" ")),
                Cell::opt_text(c.8),
                Cell::opt_text(c.9),
                Cell::opt_text(c.10),
                Cell::opt_time(c.11),
            ]
        })
        .collect();

    let table = |spec, rows| Table {
        spec,
        rows: Rows::Ready(rows),
    };
    Ok(Export {
        format: "qi-service-request-export/1",
        stem: r.request_id.clone(),
        extra: Vec::new(),
        tables: vec![
            table(&REQUEST, vec![request]),
            table(&TRANSITIONS, transitions),
            table(&SAMPLES, samples),
            table(&INSPECTIONS, inspections),
            table(&OBSERVATIONS, observations),
            table(&RUNS, runs),
            table(&CERTIFICATES, certificates),
        ],
    })
}
