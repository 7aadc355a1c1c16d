//! Photos of an inspection: JPEG or PNG only (the bytes are checked, not
//! just the declared type), each at most `lab.max_photo_bytes`, at most
//! `lab.max_photos_per_inspection` per inspection. Stored in the database
//! with their SHA-256, so a report can name exactly the picture it shows.

use super::{LabError, check_text};
use crate::twins::Actor;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

/// The bounds `[lab]` sets.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_per_inspection: u32,
}

impl From<&crate::config::lab::LabConfig> for Limits {
    fn from(c: &crate::config::lab::LabConfig) -> Limits {
        Limits {
            max_bytes: c.max_photo_bytes,
            max_per_inspection: c.max_photos_per_inspection,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Photo {
    pub inspection_id: i64,
    pub photo_no: i32,
    pub content_type: String,
    pub size_bytes: i32,
    pub sha256: String,
    pub caption: String,
    pub uploaded_by: String,
    pub uploaded_at: DateTime<Utc>,
}

/// The image type the bytes themselves say, if it is one we keep.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else {
        None
    }
}

/// Checks a photo before anything is written: size, declared and actual type.
pub fn check(
    bytes: &[u8],
    declared: Option<&str>,
    limits: Limits,
) -> Result<&'static str, LabError> {
    if bytes.len() > limits.max_bytes {
        return Err(LabError::TooLarge(format!(
            "the photo is {} bytes; the limit is {} (`lab.max_photo_bytes`)",
            bytes.len(),
            limits.max_bytes
        )));
    }
    if bytes.is_empty() {
        return Err(LabError::Invalid("the photo is empty".into()));
    }
    let actual = sniff(bytes).ok_or_else(|| {
        LabError::Unsupported("a photo must be a JPEG or PNG image; these bytes are neither".into())
    })?;
    let declared = declared.map(|d| {
        d.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if declared.as_deref() != Some(actual) {
        return Err(LabError::Unsupported(format!(
            "Content-Type says {:?} but the bytes are {actual}; send them as {actual}",
            declared.unwrap_or_default()
        )));
    }
    Ok(actual)
}

const COLUMNS: &str = "inspection_id, photo_no, content_type, octet_length(bytes) AS size_bytes, sha256, caption, uploaded_by, uploaded_at";

pub async fn add(
    conn: &mut PgConnection,
    inspection_id: i64,
    bytes: &[u8],
    declared: Option<&str>,
    caption: &str,
    limits: Limits,
    by: &Actor<'_>,
) -> Result<Photo, LabError> {
    check_text("caption", caption, false)?;
    let content_type = check(bytes, declared, limits)?;
    // The inspection row is the lock that numbers its photos one at a time.
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT inspection_id FROM inspections WHERE inspection_id = $1 FOR UPDATE",
    )
    .bind(inspection_id)
    .fetch_optional(&mut *conn)
    .await?;
    if found.is_none() {
        return Err(LabError::NotFound(format!("no inspection {inspection_id}")));
    }
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inspection_photos WHERE inspection_id = $1")
            .bind(inspection_id)
            .fetch_one(&mut *conn)
            .await?;
    if count >= i64::from(limits.max_per_inspection) {
        return Err(LabError::Conflict(format!(
            "inspection {inspection_id} already has {count} photos, the most it may have (`lab.max_photos_per_inspection`)"
        )));
    }
    let sha: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let p: Photo = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO inspection_photos (inspection_id, photo_no, content_type, bytes, sha256, caption, uploaded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(inspection_id)
    .bind(count as i32 + 1)
    .bind(content_type)
    .bind(bytes)
    .bind(&sha)
    .bind(caption)
    .bind(&by.principal.id)
    .fetch_one(&mut *conn)
    .await?;
    crate::audit::append_in(
        conn,
        by.entry(
            "inspection.add_photo",
            super::inspections::target(inspection_id),
            None,
            Some(json!(p)),
        ),
    )
    .await?;
    Ok(p)
}

pub async fn list(pool: &PgPool, inspection_id: i64) -> Result<Vec<Photo>, LabError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM inspection_photos WHERE inspection_id = $1 ORDER BY photo_no"
    )))
    .bind(inspection_id)
    .fetch_all(pool)
    .await?)
}

/// The photo's type and bytes.
pub async fn bytes(
    pool: &PgPool,
    inspection_id: i64,
    photo_no: i32,
) -> Result<Option<(String, Vec<u8>)>, LabError> {
    Ok(sqlx::query_as(
        "SELECT content_type, bytes FROM inspection_photos WHERE inspection_id = $1 AND photo_no = $2",
    )
    .bind(inspection_id)
    .bind(photo_no)
    .fetch_optional(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 16,
        max_per_inspection: 2,
    };

    #[test]
    fn only_jpeg_and_png_whose_bytes_match_their_declared_type() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0];
        assert_eq!(
            check(&jpeg, Some("image/jpeg"), LIMITS).unwrap(),
            "image/jpeg"
        );
        assert_eq!(
            check(b"\x89PNG\r\n\x1a\n..", Some("image/png; x=y"), LIMITS).unwrap(),
            "image/png"
        );
        assert!(matches!(
            check(&jpeg, Some("image/png"), LIMITS),
            Err(LabError::Unsupported(_))
        ));
        assert!(matches!(
            check(b"<svg/>", Some("image/svg+xml"), LIMITS),
            Err(LabError::Unsupported(_))
        ));
        assert!(matches!(
            check(&jpeg, None, LIMITS),
            Err(LabError::Unsupported(_))
        ));
        assert!(matches!(
            check(&[0xFF; 17], Some("image/jpeg"), LIMITS),
            Err(LabError::TooLarge(_))
        ));
        assert!(matches!(
            check(&[], Some("image/jpeg"), LIMITS),
            Err(LabError::Invalid(_))
        ));
    }
}
