//! Listings of twins: filters (kind, type, site, attribute, text, place),
//! a stable order and keyset pagination (a cursor, not an offset: a page
//! never repeats or skips a twin when others are added meanwhile).

use super::store::{COLUMNS, Twin};
use base64::Engine;
use serde_json::Value;
use sqlx::PgPool;

/// Mean Earth radius for distances, metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    Name,
    Created,
    Updated,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            SortKey::Id => "twin_id",
            SortKey::Name => "name",
            SortKey::Created => "created_at",
            SortKey::Updated => "updated_at",
        }
    }

    /// `sort=name` or `sort=-updated_at` (descending).
    pub fn parse(s: &str) -> Option<(SortKey, bool)> {
        let (desc, name) = match s.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, s),
        };
        let key = match name {
            "twin_id" | "id" => SortKey::Id,
            "name" => SortKey::Name,
            "created_at" => SortKey::Created,
            "updated_at" => SortKey::Updated,
            _ => return None,
        };
        Some((key, desc))
    }

    fn value_of(self, t: &Twin) -> String {
        match self {
            SortKey::Id => t.twin_id.clone(),
            SortKey::Name => t.name.clone(),
            SortKey::Created => t.created_at.to_rfc3339(),
            SortKey::Updated => t.updated_at.to_rfc3339(),
        }
    }
}

/// Where the last page ended: the sort value and id of its last twin.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub key: String,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let v = serde_json::json!([self.key, self.id]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        let v: Value = serde_json::from_slice(&raw).ok()?;
        Some(Cursor {
            key: v.get(0)?.as_str()?.to_string(),
            id: v.get(1)?.as_str()?.to_string(),
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub kind: Option<String>,
    pub type_id: Option<String>,
    /// Twins in this twin's subtree (a site, area or bench).
    pub within: Option<String>,
    /// Only twins in these sites (a site-limited caller).
    pub sites: Option<Vec<String>>,
    /// `attributes @> this` (a JSON object).
    pub attributes: Option<Value>,
    /// Case-insensitive substring of id, name or serial number.
    pub text: Option<String>,
    /// min lat, min lon, max lat, max lon.
    pub bbox: Option<(f64, f64, f64, f64)>,
    /// lat, lon, radius in metres.
    pub near: Option<(f64, f64, f64)>,
    pub discovered: Option<bool>,
    pub include_deleted: bool,
}

pub struct Page {
    pub twins: Vec<Twin>,
    pub next: Option<String>,
}

/// `LIKE` pattern for a literal substring.
fn like_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A bounding box around a circle, to let the index narrow a radius query
/// before the exact distance is computed.
fn box_around(lat: f64, lon: f64, radius_m: f64) -> (f64, f64, f64, f64) {
    let dlat = (radius_m / EARTH_RADIUS_M).to_degrees();
    let coslat = lat.to_radians().cos().abs().max(1e-6);
    let dlon = (radius_m / (EARTH_RADIUS_M * coslat))
        .to_degrees()
        .min(180.0);
    (
        (lat - dlat).max(-90.0),
        (lon - dlon).max(-180.0),
        (lat + dlat).min(90.0),
        (lon + dlon).min(180.0),
    )
}

pub async fn list(
    pool: &PgPool,
    f: &Filter,
    sort: SortKey,
    desc: bool,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let col = sort.column();
    let cast = match sort {
        SortKey::Id | SortKey::Name => "text",
        SortKey::Created | SortKey::Updated => "timestamptz",
    };
    let (cmp, dir) = if desc { ("<", "DESC") } else { (">", "ASC") };
    // Only fixed fragments go into the text; every value is a parameter.
    let sql = format!(
        "SELECT {COLUMNS} FROM twins
         WHERE ($1 OR deleted_at IS NULL)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR type_id = $3)
           AND ($4::text IS NULL OR (path >= $4 AND path < $5))
           AND ($19::text[] IS NULL OR EXISTS (
                SELECT 1 FROM unnest($19::text[], $20::text[]) r(lo, hi) WHERE path >= r.lo AND path < r.hi))
           AND ($6::jsonb IS NULL OR attributes @> $6)
           AND ($7::text IS NULL OR (twin_id || ' ' || name || ' ' || coalesce(serial_number, '')) ILIKE $7)
           AND ($8::float8 IS NULL OR (latitude BETWEEN $8 AND $10 AND longitude BETWEEN $9 AND $11))
           AND ($12::float8 IS NULL OR 2 * {EARTH_RADIUS_M} * asin(sqrt(
                 power(sin(radians(latitude - $12) / 2), 2)
                 + cos(radians($12)) * cos(radians(latitude)) * power(sin(radians(longitude - $13) / 2), 2)
               )) <= $14)
           AND ($15::bool IS NULL OR discovered = $15)
           AND ($16::text IS NULL OR ({col}, twin_id) {cmp} ($16::{cast}, $17))
         ORDER BY {col} {dir}, twin_id {dir}
         LIMIT $18"
    );
    // A radius query also narrows by its bounding box (index on lat, lon).
    let bbox = match (f.bbox, f.near) {
        (Some(b), _) => Some(b),
        (None, Some((lat, lon, r))) => Some(box_around(lat, lon, r)),
        (None, None) => None,
    };
    // Subtrees are ranges of paths (migration 0008): look the roots up once.
    let within = match &f.within {
        Some(w) => Some(
            subtree_ranges(pool, std::slice::from_ref(w), false)
                .await?
                .pop()
                .unwrap_or_default(),
        ),
        None => None,
    };
    let sites = match &f.sites {
        Some(s) => Some(subtree_ranges(pool, s, true).await?),
        None => None,
    };
    let twins: Vec<Twin> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(f.include_deleted)
        .bind(&f.kind)
        .bind(&f.type_id)
        .bind(within.as_ref().map(|r| r.0.clone()))
        .bind(within.as_ref().map(|r| r.1.clone()))
        .bind(&f.attributes)
        .bind(f.text.as_deref().map(like_pattern))
        .bind(bbox.map(|b| b.0))
        .bind(bbox.map(|b| b.1))
        .bind(bbox.map(|b| b.2))
        .bind(bbox.map(|b| b.3))
        .bind(f.near.map(|n| n.0))
        .bind(f.near.map(|n| n.1))
        .bind(f.near.map(|n| n.2))
        .bind(f.discovered)
        .bind(after.map(|c| c.key.clone()))
        .bind(after.map(|c| c.id.clone()))
        .bind(limit + 1)
        .bind(
            sites
                .as_ref()
                .map(|v| v.iter().map(|r| r.0.clone()).collect::<Vec<_>>()),
        )
        .bind(
            sites
                .as_ref()
                .map(|v| v.iter().map(|r| r.1.clone()).collect::<Vec<_>>()),
        )
        .fetch_all(pool)
        .await?;
    let mut twins = twins;
    let next = if twins.len() as i64 > limit {
        twins.truncate(usize::try_from(limit).unwrap_or(0));
        twins.last().map(|t| {
            Cursor {
                key: sort.value_of(t),
                id: t.twin_id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Page { twins, next })
}

/// The path ranges of the subtrees under `roots` (live twins; sites only
/// when `sites_only`): (lo, hi) with every path in the subtree in
/// lo <= path < hi. A root that does not exist gives an empty range.
pub async fn subtree_ranges(
    pool: &PgPool,
    roots: &[String],
    sites_only: bool,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let paths: Vec<String> = sqlx::query_scalar(
        "SELECT path FROM twins WHERE twin_id = ANY($1) AND deleted_at IS NULL
           AND (NOT $2 OR kind = 'site')",
    )
    .bind(roots)
    .bind(sites_only)
    .fetch_all(pool)
    .await?;
    if paths.is_empty() {
        return Ok(vec![(String::new(), String::new())]);
    }
    Ok(paths.into_iter().map(|p| subtree_range(&p)).collect())
}

/// Paths end with U+001F; every path below `p` starts with it and sorts
/// (collation C) before `p` with its last U+001F replaced by a space.
pub fn subtree_range(p: &str) -> (String, String) {
    let hi = format!("{} ", p.strip_suffix('\u{1f}').unwrap_or(p));
    (p.to_string(), hi)
}

/// Whether `t` lies at most `radius_m` from (lat, lon) on the sphere.
pub fn within_radius(t: &Twin, lat: f64, lon: f64, radius_m: f64) -> bool {
    let (Some(a), Some(o)) = (t.latitude, t.longitude) else {
        return false;
    };
    let h = ((a - lat).to_radians() / 2.0).sin().powi(2)
        + lat.to_radians().cos()
            * a.to_radians().cos()
            * ((o - lon).to_radians() / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin() <= radius_m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            key: "2026-11-30T00:00:00+00:00".into(),
            id: "bench:1".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not base64 !"), None);
        assert_eq!(Cursor::decode("e30"), None);
    }

    #[test]
    fn sort_keys_parse_with_direction() {
        assert_eq!(
            SortKey::parse("-updated_at"),
            Some((SortKey::Updated, true))
        );
        assert_eq!(SortKey::parse("name"), Some((SortKey::Name, false)));
        assert_eq!(SortKey::parse("name; DROP TABLE twins"), None);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn a_path_range_holds_the_subtree_and_nothing_beside_it() {
        let (lo, hi) = subtree_range("site-1\u{1f}");
        let inside = "site-1\u{1f}hall\u{1f}bench\u{1f}";
        let beside = "site-10\u{1f}";
        assert!(lo.as_str() <= inside && inside < hi.as_str());
        assert!(!(lo.as_str() <= beside && beside < hi.as_str()));
        assert!(lo.as_str() <= "site-1\u{1f}" && "site-1\u{1f}" < hi.as_str());
    }

    #[test]
    fn the_box_around_a_circle_contains_it() {
        let (a, b, c, d) = box_around(48.0, 11.0, 10_000.0);
        assert!(a < 48.0 && c > 48.0 && b < 11.0 && d > 11.0);
        assert!((c - a - 0.18).abs() < 0.01);
    }
}
