//! Service requests: what a customer asked for, the samples they brought,
//! and the states the request goes through. Every change is audited in its
//! transaction and kept in `service_request_transitions`.

use super::{LabError, MAX_PROTOCOLS, check_text};
use crate::twins::Actor;
use crate::twins::store::{self, NewTwin};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

/// The states, in the order a request normally goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Registered; samples may be added.
    Received,
    /// Samples arrived and are being inspected.
    Intake,
    /// Protocol runs on the benches.
    Testing,
    /// Verdicts being evaluated and approved.
    Evaluation,
    Completed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Received,
        State::Intake,
        State::Testing,
        State::Evaluation,
        State::Completed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Intake => "intake",
            State::Testing => "testing",
            State::Evaluation => "evaluation",
            State::Completed => "completed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Cancelled)
    }

    /// The transitions the work flow allows: forward one state, back from
    /// evaluation to testing (a retest), and cancel from any open state.
    pub fn may_go_to(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Received, Intake)
                | (Intake, Testing)
                | (Testing, Evaluation)
                | (Evaluation, Testing)
                | (Evaluation, Completed)
        ) || (to == Cancelled && !self.is_terminal())
    }
}

/// A new request as a client sends it (Serialize: its parsed form is what
/// an `Idempotency-Key` is bound to).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    pub customer: String,
    pub module_type: String,
    pub protocols: Vec<String>,
    #[serde(default)]
    pub notes: String,
    /// The client's (a LIMS's) own id of the order, unique per customer.
    #[serde(default)]
    pub external_ref: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Request {
    pub request_id: String,
    pub customer: String,
    pub module_type: String,
    pub protocols: Vec<String>,
    pub state: String,
    pub notes: String,
    pub external_ref: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Request {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Transition {
    pub from_state: String,
    pub to_state: String,
    pub comment: String,
    pub by_actor: String,
    pub at: DateTime<Utc>,
}

const COLUMNS: &str = "request_id, customer, module_type, protocols, state, notes, external_ref, created_by, created_at, updated_at, version";

/// A protocol id as templates name themselves (`protocol.id`).
fn check_protocol_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

pub async fn create(
    conn: &mut PgConnection,
    n: NewRequest,
    by: &Actor<'_>,
) -> Result<Request, LabError> {
    check_text("customer", &n.customer, true)?;
    check_text("module_type", &n.module_type, true)?;
    check_text("notes", &n.notes, false)?;
    if n.protocols.is_empty() || n.protocols.len() > MAX_PROTOCOLS {
        return Err(LabError::Invalid(format!(
            "`protocols` must name 1 to {MAX_PROTOCOLS} protocols"
        )));
    }
    if let Some(x) = &n.external_ref {
        check_external_ref(x)?;
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT request_id FROM service_requests WHERE customer = $1 AND external_ref = $2",
        )
        .bind(&n.customer)
        .bind(x)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = taken {
            return Err(external_ref_taken(&n.customer, x, Some(&id)));
        }
    }
    if let Some(bad) = n.protocols.iter().find(|p| !check_protocol_id(p)) {
        return Err(LabError::Invalid(format!(
            "`protocols`: {:?} is not a protocol id (a-z 0-9 _ -, as in `protocol.id` of a template)",
            bad.chars().take(40).collect::<String>()
        )));
    }
    let r: Request = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO service_requests (request_id, customer, module_type, protocols, notes, created_by, external_ref)
         VALUES ('SR-' || lpad(nextval('service_request_number')::text, 6, '0'), $1, $2, $3, $4, $5, $6)
         RETURNING {COLUMNS}"
    )))
    .bind(&n.customer)
    .bind(&n.module_type)
    .bind(&n.protocols)
    .bind(&n.notes)
    .bind(&by.principal.id)
    .bind(&n.external_ref)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        // Registered concurrently between the check above and here.
        if e.as_database_error().and_then(|d| d.constraint()) == Some(EXTERNAL_REF_INDEX) {
            external_ref_taken(&n.customer, n.external_ref.as_deref().unwrap_or(""), None)
        } else {
            LabError::Db(e)
        }
    })?;
    crate::audit::append_in(
        conn,
        by.entry(
            "service_request.create",
            target(&r.request_id),
            None,
            Some(json!(r)),
        ),
    )
    .await?;
    Ok(r)
}

/// The unique index of (customer, external_ref), migration 0017.
const EXTERNAL_REF_INDEX: &str = "service_requests_external_ref";

/// An external reference: what `filter` takes for ids (printable, at most
/// `qi_proto::limits::MAX_ID_LEN`), not empty.
fn check_external_ref(x: &str) -> Result<(), LabError> {
    if x.trim().is_empty()
        || x.chars().count() > qi_proto::limits::MAX_ID_LEN
        || x.chars().any(char::is_control)
    {
        return Err(LabError::Invalid(format!(
            "`external_ref` must be 1 to {} printable characters",
            qi_proto::limits::MAX_ID_LEN
        )));
    }
    Ok(())
}

fn external_ref_taken(customer: &str, x: &str, id: Option<&str>) -> LabError {
    LabError::Conflict(format!(
        "customer {customer:?} already has a service request with external_ref {x:?}{}; \
         find it with GET /api/v1/service-requests?external_ref=",
        id.map(|i| format!(" ({i})")).unwrap_or_default()
    ))
}

pub fn target(id: &str) -> String {
    format!("service_request:{id}")
}

pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<Request>, LabError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM service_requests WHERE request_id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

async fn get_for_update(conn: &mut PgConnection, id: &str) -> Result<Request, LabError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM service_requests WHERE request_id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| LabError::NotFound(format!("no service request {id:?}")))
}

/// A page of requests in id order, after `after`.
pub async fn list(
    pool: &PgPool,
    state: Option<State>,
    customer: Option<&str>,
    external_ref: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Request>, LabError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM service_requests
         WHERE ($1::text IS NULL OR state = $1)
           AND ($2::text IS NULL OR customer = $2)
           AND ($3::text IS NULL OR request_id > $3)
           AND ($5::text IS NULL OR external_ref = $5)
         ORDER BY request_id LIMIT $4"
    )))
    .bind(state.map(State::as_str))
    .bind(customer)
    .bind(after)
    .bind(limit)
    .bind(external_ref)
    .fetch_all(pool)
    .await?)
}

pub async fn samples(pool: &PgPool, id: &str) -> Result<Vec<String>, LabError> {
    Ok(sqlx::query_scalar(
        "SELECT sample_id FROM service_request_samples WHERE request_id = $1 ORDER BY added_at, sample_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}

pub async fn transitions(pool: &PgPool, id: &str) -> Result<Vec<Transition>, LabError> {
    Ok(sqlx::query_as(
        "SELECT from_state, to_state, comment, by_actor, at FROM service_request_transitions
         WHERE request_id = $1 ORDER BY transition_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}

fn check_version(r: &Request, expected: Option<i64>) -> Result<(), LabError> {
    match expected {
        Some(v) if v != r.version => Err(LabError::Stale {
            id: r.request_id.clone(),
            current: r.version,
            expected: v,
        }),
        _ => Ok(()),
    }
}

/// Moves a request to `to`, if the work flow allows it and its conditions
/// hold (intake -> testing needs samples, each inspected at intake).
pub async fn transition(
    conn: &mut PgConnection,
    id: &str,
    to: State,
    comment: &str,
    expected: Option<i64>,
    by: &Actor<'_>,
) -> Result<Request, LabError> {
    check_text("comment", comment, false)?;
    let before = get_for_update(conn, id).await?;
    check_version(&before, expected)?;
    let from = State::parse(&before.state).unwrap_or(State::Received);
    if !from.may_go_to(to) {
        return Err(LabError::Conflict(format!(
            "service request {id} is {}; it cannot go to {} (allowed: {})",
            from.as_str(),
            to.as_str(),
            allowed_from(from)
        )));
    }
    if (from, to) == (State::Intake, State::Testing) {
        let uninspected: Vec<String> = sqlx::query_scalar(
            "SELECT s.sample_id FROM service_request_samples s
             WHERE s.request_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM inspections i WHERE i.sample_id = s.sample_id AND i.stage = 'intake')
             ORDER BY s.sample_id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM service_request_samples WHERE request_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        if count == 0 {
            return Err(LabError::Conflict(format!(
                "service request {id} has no samples; add them before testing"
            )));
        }
        if !uninspected.is_empty() {
            return Err(LabError::Conflict(format!(
                "samples without an intake inspection: {}; inspect them before testing",
                uninspected.join(", ")
            )));
        }
    }
    let after: Request = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE service_requests SET state = $2, updated_at = now(), version = version + 1
         WHERE request_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(to.as_str())
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO service_request_transitions (request_id, from_state, to_state, comment, by_actor)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(comment)
    .bind(&by.principal.id)
    .execute(&mut *conn)
    .await?;
    crate::audit::append_in(
        conn,
        by.entry(
            "service_request.transition",
            target(id),
            Some(json!({"state": from.as_str()})),
            Some(json!({"state": to.as_str(), "comment": comment})),
        ),
    )
    .await?;
    // The LIMS hears of it exactly when it is committed.
    crate::webhooks::enqueue(
        conn,
        crate::webhooks::EventType::ServiceRequestStateChanged,
        json!({"service_request": id}),
        json!({"service_request": id, "from": from.as_str(), "to": to.as_str(),
               "comment": comment, "by": by.principal.id, "customer": after.customer,
               "module_type": after.module_type, "version": after.version}),
    )
    .await?;
    Ok(after)
}

fn allowed_from(from: State) -> String {
    let to: Vec<&str> = State::ALL
        .into_iter()
        .filter(|t| from.may_go_to(*t))
        .map(State::as_str)
        .collect();
    if to.is_empty() {
        "none: it is closed".into()
    } else {
        to.join(", ")
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewSample {
    pub serial_number: String,
    #[serde(default)]
    pub name: String,
    /// Free attributes of the sample twin (e.g. `{"area_m2": 1.7}`).
    #[serde(default)]
    pub attributes: Option<Value>,
}

/// Registers a sample of the request: a twin `sample:<serial>` (serial
/// numbers are unique across the lab) linked to the request.
pub async fn add_sample(
    conn: &mut PgConnection,
    id: &str,
    n: NewSample,
    by: &Actor<'_>,
) -> Result<crate::twins::store::Twin, LabError> {
    let r = get_for_update(conn, id).await?;
    let state = State::parse(&r.state).unwrap_or(State::Received);
    if !matches!(state, State::Received | State::Intake) {
        return Err(LabError::Conflict(format!(
            "service request {id} is {}; samples are added while it is received or in intake",
            state.as_str()
        )));
    }
    let mut attributes = n.attributes.unwrap_or_else(|| json!({}));
    let Some(obj) = attributes.as_object_mut() else {
        return Err(LabError::Invalid(
            "`attributes` must be a JSON object".into(),
        ));
    };
    obj.insert("service_request".into(), json!(id));
    obj.insert("module_type".into(), json!(r.module_type));
    let twin_id = super::sample_twin_id(&n.serial_number);
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM twins WHERE twin_id = $1)")
        .bind(&twin_id)
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        return Err(LabError::Conflict(format!(
            "a sample with serial number {:?} is already registered ({twin_id})",
            n.serial_number
        )));
    }
    let name = if n.name.is_empty() {
        format!("{} {}", r.module_type, n.serial_number)
    } else {
        n.name
    };
    let t = store::create(
        conn,
        NewTwin {
            twin_id,
            kind: "sample".into(),
            type_id: None,
            name,
            serial_number: Some(n.serial_number),
            attributes,
            metadata: json!({}),
            latitude: None,
            longitude: None,
            gateway_id: None,
            device_id: None,
            parent: None,
        },
        by,
    )
    .await?;
    sqlx::query("INSERT INTO service_request_samples (request_id, sample_id) VALUES ($1, $2)")
        .bind(id)
        .bind(&t.twin_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE service_requests SET updated_at = now(), version = version + 1 WHERE request_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    crate::audit::append_in(
        conn,
        by.entry(
            "service_request.add_sample",
            target(id),
            None,
            Some(json!({"sample_id": t.twin_id})),
        ),
    )
    .await?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::State::*;

    #[test]
    fn the_work_flow_moves_one_step_at_a_time_and_closed_stays_closed() {
        assert!(Received.may_go_to(Intake));
        assert!(!Received.may_go_to(Testing));
        assert!(Evaluation.may_go_to(Testing));
        assert!(!Testing.may_go_to(Completed));
        for s in [Received, Intake, Testing, Evaluation] {
            assert!(s.may_go_to(Cancelled));
        }
        for s in super::State::ALL {
            assert!(!Completed.may_go_to(s) && !Cancelled.may_go_to(s));
        }
    }
}
