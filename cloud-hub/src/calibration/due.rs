//! `GET /api/v1/calibrations/due`: instrument calibrations (the standing
//! one of each instrument) and valid certificates whose due or expiry date
//! falls within N days or has passed, soonest first.

use super::Status;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Most days ahead a listing may look (ten years).
pub const MAX_WITHIN_DAYS: u32 = 3650;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DueItem {
    /// `calibration` (an instrument's) or `certificate` (issued, valid).
    pub kind: String,
    /// The instrument twin, or the certificate's subject.
    pub twin_id: String,
    /// The calibration's due date or the certificate's expiry.
    pub date: DateTime<Utc>,
    pub calibration_id: Option<i64>,
    pub certificate_id: Option<String>,
    /// For certificates: `test` or `calibration`.
    pub certificate_kind: Option<String>,
    #[sqlx(skip)]
    pub status: Option<Status>,
}

/// Due or expired within `within_days` from now, soonest first, at most `limit`.
pub async fn list(
    pool: &PgPool,
    within_days: u32,
    warn_days: u32,
    limit: i64,
) -> Result<Vec<DueItem>, sqlx::Error> {
    let now = Utc::now();
    let until = now + chrono::Duration::days(i64::from(within_days));
    let mut items: Vec<DueItem> = sqlx::query_as(
        "WITH standing AS (
             SELECT DISTINCT ON (c.twin_id) c.twin_id, c.due_at, c.calibration_id, c.certificate_id
               FROM calibrations c JOIN twins t USING (twin_id)
              WHERE t.deleted_at IS NULL
              ORDER BY c.twin_id, c.calibrated_at DESC, c.calibration_id DESC)
         SELECT 'calibration' AS kind, twin_id, due_at AS date, calibration_id, certificate_id,
                NULL::text AS certificate_kind
           FROM standing WHERE due_at <= $1
         UNION ALL
         SELECT 'certificate', subject, expires_at, NULL, certificate_id, kind
           FROM certificates WHERE state = 'valid' AND expires_at <= $1
         ORDER BY date, twin_id, certificate_id
         LIMIT $2",
    )
    .bind(until)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    for i in &mut items {
        i.status = Some(Status::of(i.date, now, warn_days));
    }
    Ok(items)
}
