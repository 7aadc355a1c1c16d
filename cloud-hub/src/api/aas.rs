//! Asset Administration Shell read API (IDTA AAS Part 2, read operations):
//! shells and submodels of instrument twins, and a site's export
//! (`crate::aas`). Identifiers in paths are base64url-encoded.

use super::{ApiError, ApiState, parse_limit};
use crate::aas::{self, AasError};
use crate::identity::Principal;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;

/// Default page size of the lists (Part 2 leaves it to the server).
const DEFAULT_LIMIT: u32 = 100;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/aas/shells", get(shells))
        .route("/api/v1/aas/shells/{id}", get(shell))
        .route("/api/v1/aas/submodels", get(submodels))
        .route("/api/v1/aas/submodels/{id}", get(submodel))
        .route("/api/v1/aas/export", get(export))
}

impl From<AasError> for ApiError {
    fn from(e: AasError) -> Self {
        match e {
            AasError::Id(e) => ApiError::bad_request(e.to_string()),
            AasError::NotFound(m) => ApiError::not_found(m),
            AasError::TooLarge(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too_large", m)
            }
            AasError::Db(e) => e.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageParams {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportParams {
    site: Option<String>,
}

fn page(
    s: &ApiState,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Result<(Option<String>, i64), ApiError> {
    let Query(p) = q?;
    let limit = parse_limit(&p.limit, DEFAULT_LIMIT, s.max_page_size)?;
    if p.cursor.as_deref() == Some("") {
        return Err(ApiError::bad_request(
            "`cursor` is empty: pass `paging_metadata.cursor` of the previous page, or leave it out for the first",
        ));
    }
    Ok((p.cursor, limit))
}

pub(super) async fn shells(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (cursor, limit) = page(&s, q)?;
    let p = aas::shells(
        s.store.pool(),
        by.sites.as_deref(),
        cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(p.to_json()))
}

pub(super) async fn shell(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        aas::shell(s.store.pool(), by.sites.as_deref(), &id).await?,
    ))
}

pub(super) async fn submodels(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (cursor, limit) = page(&s, q)?;
    let p = aas::submodels(
        s.store.pool(),
        by.sites.as_deref(),
        cursor.as_deref(),
        limit,
        &s.public_url,
    )
    .await?;
    Ok(Json(p.to_json()))
}

pub(super) async fn submodel(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        aas::submodel(s.store.pool(), by.sites.as_deref(), &id, &s.public_url).await?,
    ))
}

pub(super) async fn export(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    q: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q?;
    let site = super::filter("site", p.site)?
        .ok_or_else(|| ApiError::bad_request("give the site to export: `site=<site twin id>`"))?;
    Ok(Json(
        aas::export_site(s.store.pool(), by.sites.as_deref(), &site, &s.public_url).await?,
    ))
}
