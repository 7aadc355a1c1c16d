//! A gateway's test benches (`Hello.benches`) as bench twins:
//! `bench:<gateway>:<bench_id>`, kind bench, discovered, with the point
//! mapping, the limits and the instruments (their twin ids) in its
//! attributes. A new bench twin is placed where the gateway's twin is (its
//! container); one an engineer moved stays where it was put.

use crate::storage::run_events::bench_point_json;
use qi_proto::v1::BenchInfo;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The twin id of a gateway's bench.
pub fn bench_twin_id(gateway: &str, bench: &str) -> String {
    format!("bench:{gateway}:{bench}")
}

fn attributes(gateway: &str, b: &BenchInfo) -> Value {
    json!({
        "gateway_id": gateway,
        "bench_id": b.bench_id,
        "description": b.description,
        "points": b.points.iter().map(bench_point_json).collect::<Vec<_>>(),
        "instruments": b.instruments.iter().map(|i| json!({
            "name": i.name,
            "device_id": i.device_id,
            "twin_id": format!("instrument:{gateway}:{}", i.device_id),
        })).collect::<Vec<_>>(),
    })
}

/// Creates or updates the gateway's bench twins, in one transaction. The
/// caller validated the benches (`validate::validate_benches`). Returns the
/// twins created or changed.
pub async fn record(
    pool: &PgPool,
    gateway: &str,
    benches: &[BenchInfo],
) -> Result<Vec<String>, sqlx::Error> {
    if benches.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let gw_twin: Option<String> = sqlx::query_scalar("SELECT twin_discover_gateway($1)")
        .bind(gateway)
        .fetch_one(&mut *tx)
        .await?;
    let mut changed = Vec::new();
    for b in benches {
        let id = bench_twin_id(gateway, &b.bench_id);
        let attrs = attributes(gateway, b);
        let row: Option<(bool,)> = sqlx::query_as(
            "INSERT INTO twins (twin_id, kind, name, attributes, gateway_id, discovered)
             VALUES ($1, 'bench', $2, $3, $4, true)
             ON CONFLICT (twin_id) DO UPDATE
                SET attributes = twins.attributes || EXCLUDED.attributes,
                    version = twins.version + 1, updated_at = now()
              WHERE twins.kind = 'bench' AND twins.deleted_at IS NULL
                AND NOT (twins.attributes @> EXCLUDED.attributes)
             RETURNING (xmax = 0)",
        )
        .bind(&id)
        .bind(&b.bench_id)
        .bind(&attrs)
        .bind(gateway)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((created,)) = row else { continue };
        changed.push(id.clone());
        if created && let Some(gw) = &gw_twin {
            sqlx::query(
                "INSERT INTO twin_relations (kind, source_id, target_id)
                 SELECT 'contains', r.source_id, $2 FROM twin_relations r
                   JOIN twins p ON p.twin_id = r.source_id AND p.kind IN ('site', 'area')
                  WHERE r.kind = 'contains' AND r.target_id = $1 AND r.valid_to IS NULL",
            )
            .bind(gw)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    metrics::counter!(crate::metric_names::HUB_BENCHES_RECORDED_TOTAL)
        .increment(changed.len() as u64);
    if !changed.is_empty() {
        tracing::info!(%gateway, benches = ?changed, "bench twins recorded from the gateway's Hello");
    }
    Ok(changed)
}
