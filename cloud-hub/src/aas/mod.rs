//! Asset Administration Shell (IDTA AAS Part 1 metamodel v3.0, Part 2 read
//! API): every instrument twin is an asset with a shell and three
//! submodels (Nameplate, TechnicalData from its type, TimeSeries linking to
//! the analytics API), listed with cursor paging, and a whole site exported
//! as one AAS JSON environment.
//!
//! Rooms: `ids` (identifiers and their base64url form), `model` (the JSON
//! of shells and submodels), this file (which instruments a caller sees,
//! paging, the export).

pub mod ids;
pub mod model;

use ids::SubmodelKind;
use model::{Instrument, SeriesRef};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::HashMap;

/// Most instruments one export holds: an environment is one JSON document,
/// built in memory.
pub const MAX_EXPORT_INSTRUMENTS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AasError {
    #[error(transparent)]
    Id(#[from] ids::IdError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Who is asking: None = every site, else the sites the caller may see.
pub type Sites<'a> = Option<&'a [String]>;

const INSTRUMENTS: &str = "SELECT t.twin_id, t.name, t.serial_number, t.type_id, t.gateway_id, t.device_id,
       y.name AS type_name, y.manufacturer, y.device_type, y.description AS type_description, y.metrics
  FROM twins t LEFT JOIN twin_types y ON y.type_id = t.type_id
 WHERE t.kind = 'instrument' AND t.deleted_at IS NULL
   AND ($1::text[] IS NULL OR twin_site(t.twin_id) = ANY($1))";

/// Instruments after `after` (by twin id), at most `limit`.
async fn instruments_after(
    pool: &PgPool,
    sites: Sites<'_>,
    after: Option<&str>,
    inclusive: bool,
    limit: i64,
) -> Result<Vec<Instrument>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{INSTRUMENTS} AND ($2::text IS NULL OR t.twin_id > $2 OR ($3 AND t.twin_id = $2))
         ORDER BY t.twin_id LIMIT $4"
    )))
    .bind(sites)
    .bind(after)
    .bind(inclusive)
    .bind(limit)
    .fetch_all(pool)
    .await
}

async fn instrument(
    pool: &PgPool,
    sites: Sites<'_>,
    twin: &str,
) -> Result<Option<Instrument>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{INSTRUMENTS} AND t.twin_id = $2"
    )))
    .bind(sites)
    .bind(twin)
    .fetch_optional(pool)
    .await
}

/// The series of each instrument, by twin id.
async fn series_of(
    pool: &PgPool,
    inst: &[Instrument],
) -> Result<HashMap<String, Vec<SeriesRef>>, sqlx::Error> {
    let bound: Vec<(&str, &str, &str)> = inst
        .iter()
        .filter_map(|i| {
            Some((
                i.twin_id.as_str(),
                i.gateway_id.as_deref()?,
                i.device_id.as_deref()?,
            ))
        })
        .collect();
    if bound.is_empty() {
        return Ok(HashMap::new());
    }
    let gws: Vec<&str> = bound.iter().map(|b| b.1).collect();
    let devs: Vec<&str> = bound.iter().map(|b| b.2).collect();
    let rows: Vec<SeriesRef> = sqlx::query_as(
        "SELECT s.gateway_id, s.device_id, s.series_id, s.metric, s.unit FROM series s
           JOIN unnest($1::text[], $2::text[]) AS b(gateway_id, device_id)
             ON b.gateway_id = s.gateway_id AND b.device_id = s.device_id AND s.run_id IS NULL
          ORDER BY s.metric, s.unit, s.series_id",
    )
    .bind(&gws)
    .bind(&devs)
    .fetch_all(pool)
    .await?;
    let mut by_binding: HashMap<(&str, &str), Vec<SeriesRef>> = HashMap::new();
    for r in &rows {
        by_binding
            .entry((r.gateway_id.as_str(), r.device_id.as_str()))
            .or_default()
            .push(r.clone());
    }
    Ok(bound
        .iter()
        .map(|(t, g, d)| {
            (
                t.to_string(),
                by_binding.get(&(*g, *d)).cloned().unwrap_or_default(),
            )
        })
        .collect())
}

/// A page: the items and the cursor of the next page (None: last page).
pub struct Page {
    pub result: Vec<Value>,
    pub cursor: Option<String>,
}

impl Page {
    /// Part 2's list shape.
    pub fn to_json(&self) -> Value {
        let mut paging = json!({});
        if let Some(c) = &self.cursor {
            paging["cursor"] = json!(c);
        }
        json!({"result": self.result, "paging_metadata": paging})
    }
}

/// Shells of the instruments the caller sees; `cursor` from the previous page.
pub async fn shells(
    pool: &PgPool,
    sites: Sites<'_>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page, AasError> {
    let after = cursor.map(ids::decode_cursor).transpose()?;
    let mut inst = instruments_after(pool, sites, after.as_deref(), false, limit + 1).await?;
    let more = inst.len() as i64 > limit;
    inst.truncate(usize::try_from(limit).unwrap_or(0));
    let cursor = if more {
        inst.last().map(|i| ids::encode(&i.twin_id))
    } else {
        None
    };
    Ok(Page {
        result: inst.iter().map(model::shell).collect(),
        cursor,
    })
}

pub async fn shell(pool: &PgPool, sites: Sites<'_>, encoded: &str) -> Result<Value, AasError> {
    let id = ids::decode(encoded)?;
    let missing = || AasError::NotFound(format!("no shell {}", id.as_deref().unwrap_or(encoded)));
    let twin = id
        .as_deref()
        .and_then(ids::twin_of_shell)
        .ok_or_else(missing)?;
    let i = instrument(pool, sites, twin).await?.ok_or_else(missing)?;
    Ok(model::shell(&i))
}

/// Submodels of the instruments the caller sees, three per instrument in a
/// fixed order; the cursor is the last submodel's id.
pub async fn submodels(
    pool: &PgPool,
    sites: Sites<'_>,
    cursor: Option<&str>,
    limit: i64,
    base_url: &str,
) -> Result<Page, AasError> {
    // A cursor is the last submodel's id; any other text is a position
    // among twin ids (after every submodel of that twin).
    let after: Option<(String, usize)> =
        cursor
            .map(ids::decode_cursor)
            .transpose()?
            .map(|c| match ids::twin_of_submodel(&c) {
                Some((t, k)) => (t.to_string(), k.index()),
                None => (c, usize::MAX),
            });
    let per = SubmodelKind::ALL.len() as i64;
    let needed = (limit + 1 + per - 1) / per + 1;
    let inst = instruments_after(
        pool,
        sites,
        after.as_ref().map(|a| a.0.as_str()),
        true,
        needed,
    )
    .await?;
    let series = series_of(pool, &inst).await?;
    let mut items: Vec<Value> = Vec::new();
    let mut last: Option<String> = None;
    let mut more = false;
    'outer: for i in &inst {
        for k in SubmodelKind::ALL {
            if let Some((t, last)) = &after
                && *t == i.twin_id
                && k.index() <= *last
            {
                continue;
            }
            if items.len() as i64 == limit {
                more = true;
                break 'outer;
            }
            let empty = Vec::new();
            let s = series.get(&i.twin_id).unwrap_or(&empty);
            items.push(model::submodel_of(i, k, s, base_url));
            last = Some(ids::submodel_id(&i.twin_id, k));
        }
    }
    Ok(Page {
        result: items,
        cursor: if more {
            last.map(|l| ids::encode(&l))
        } else {
            None
        },
    })
}

pub async fn submodel(
    pool: &PgPool,
    sites: Sites<'_>,
    encoded: &str,
    base_url: &str,
) -> Result<Value, AasError> {
    let id = ids::decode(encoded)?;
    let missing =
        || AasError::NotFound(format!("no submodel {}", id.as_deref().unwrap_or(encoded)));
    let (twin, kind) = id
        .as_deref()
        .and_then(ids::twin_of_submodel)
        .ok_or_else(missing)?;
    let i = instrument(pool, sites, twin).await?.ok_or_else(missing)?;
    let series = series_of(pool, std::slice::from_ref(&i)).await?;
    Ok(model::submodel_of(
        &i,
        kind,
        series
            .get(&i.twin_id)
            .map(Vec::as_slice)
            .unwrap_or_default(),
        base_url,
    ))
}

/// An AAS JSON environment with the shells and submodels of every
/// instrument in the site's subtree (`twin_descendants`, as of now).
pub async fn export_site(
    pool: &PgPool,
    sites: Sites<'_>,
    site: &str,
    base_url: &str,
) -> Result<Value, AasError> {
    let missing = || AasError::NotFound(format!("no site {site:?}"));
    if sites.is_some_and(|s| !s.iter().any(|x| x == site)) {
        return Err(missing());
    }
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM twins WHERE twin_id = $1 AND deleted_at IS NULL")
            .bind(site)
            .fetch_optional(pool)
            .await?;
    if kind.as_deref() != Some("site") {
        return Err(missing());
    }
    let inst: Vec<Instrument> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{INSTRUMENTS} AND t.twin_id IN (SELECT twin_id FROM twin_descendants($2, now()))
         ORDER BY t.twin_id LIMIT $3"
    )))
    .bind(sites)
    .bind(site)
    .bind(MAX_EXPORT_INSTRUMENTS + 1)
    .fetch_all(pool)
    .await?;
    if inst.len() as i64 > MAX_EXPORT_INSTRUMENTS {
        return Err(AasError::TooLarge(format!(
            "site {site:?} holds more than {MAX_EXPORT_INSTRUMENTS} instruments, more than one export may hold; read them page by page (GET /api/v1/aas/shells, /submodels)"
        )));
    }
    let series = series_of(pool, &inst).await?;
    let empty = Vec::new();
    let mut env = json!({});
    if !inst.is_empty() {
        env["assetAdministrationShells"] = inst.iter().map(model::shell).collect();
        env["submodels"] = inst
            .iter()
            .flat_map(|i| {
                let s = series.get(&i.twin_id).unwrap_or(&empty);
                SubmodelKind::ALL.map(|k| model::submodel_of(i, k, s, base_url))
            })
            .collect();
    }
    Ok(env)
}
