//! Gateway health: online while its uplink stream is open at this hub.
//!
//! Ingest reports each stream's start (after Hello) and end (stream end,
//! error, hub shutdown); the state is kept in `gateways` (migration 0009)
//! and published as [`EventBody::Health`]. Rule for readers: a gateway is
//! online when its row says so AND it was seen within [`STALE_AFTER_S`]
//! (every batch and a heartbeat every [`HEARTBEAT_S`] refresh `last_seen`
//! while the stream is open), so a hub that died without marking its
//! gateways offline does not leave them "online" for ever.

use super::{EventBody, Fanout};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// While a stream is open, `last_seen` is refreshed at least this often.
pub const HEARTBEAT_S: u64 = 30;
/// A gateway not seen for this long reads offline whatever its row says
/// (three missed heartbeats).
pub const STALE_AFTER_S: i64 = 90;

/// A gateway's health as shown next to its twin.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Health {
    pub online: bool,
    pub last_seen: DateTime<Utc>,
    pub connected_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
}

/// Health of each of `gateways` the hub knows (others are absent).
pub async fn of_gateways(
    pool: &PgPool,
    gateways: &[String],
) -> Result<HashMap<String, Health>, sqlx::Error> {
    type Row = (
        String,
        bool,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT gateway_id, online AND last_seen > now() - make_interval(secs => $2),
                last_seen, connected_at, disconnected_at
         FROM gateways WHERE gateway_id = ANY($1)",
    )
    .bind(gateways)
    .bind(STALE_AFTER_S as f64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(g, online, last_seen, connected_at, disconnected_at)| {
            (
                g,
                Health {
                    online,
                    last_seen,
                    connected_at,
                    disconnected_at,
                },
            )
        })
        .collect())
}

/// Tracks the open uplink streams of this hub process. A gateway may have
/// two streams for a moment (it reconnected before the hub noticed the old
/// one end): it goes offline when its last stream ends.
pub struct HealthTracker {
    pool: PgPool,
    live: Arc<Fanout>,
    open: Mutex<HashMap<String, usize>>,
}

impl HealthTracker {
    pub fn new(pool: PgPool, live: Arc<Fanout>) -> Arc<HealthTracker> {
        Arc::new(HealthTracker {
            pool,
            live,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A stream of `gateway` passed Hello. The returned guard marks it
    /// offline when dropped (the stream ended, however it ended).
    pub async fn connected(self: &Arc<Self>, gateway: &str) -> Result<Online, sqlx::Error> {
        let first = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(gateway.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        let guard = Online {
            tracker: Arc::clone(self),
            gateway: gateway.to_string(),
        };
        sqlx::query(
            "UPDATE gateways SET online = true, connected_at = now(), last_seen = now()
             WHERE gateway_id = $1",
        )
        .bind(gateway)
        .execute(&self.pool)
        .await?;
        if first {
            self.publish(gateway, true);
        }
        Ok(guard)
    }

    /// Refreshes `last_seen` of a gateway whose stream is open but quiet.
    pub async fn heartbeat(&self, gateway: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE gateways SET last_seen = now() WHERE gateway_id = $1")
            .bind(gateway)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Marks every gateway with a stream open here offline: the hub is
    /// stopping and its streams end with it.
    pub async fn shutdown(&self) {
        let gateways: Vec<String> = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.drain().map(|(g, _)| g).collect()
        };
        for g in gateways {
            self.mark_offline(&g).await;
        }
    }

    fn release(self: &Arc<Self>, gateway: &str) {
        let last = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            match open.get_mut(gateway) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                // Absent: shutdown already marked it offline.
                Some(_) => open.remove(gateway).is_some(),
                None => false,
            }
        };
        if last {
            let (me, gw) = (Arc::clone(self), gateway.to_string());
            tokio::spawn(async move { me.mark_offline(&gw).await });
        }
    }

    async fn mark_offline(&self, gateway: &str) {
        let r = sqlx::query(
            "UPDATE gateways SET online = false, disconnected_at = now() WHERE gateway_id = $1",
        )
        .bind(gateway)
        .execute(&self.pool)
        .await;
        if let Err(e) = r {
            // Readers still see it offline once last_seen is stale.
            tracing::warn!(gateway, error = %e, "cannot record the gateway offline");
        }
        tracing::info!(gateway, "gateway offline");
        self.publish(gateway, false);
    }

    fn publish(&self, gateway: &str, online: bool) {
        metrics::counter!(crate::metric_names::HUB_GATEWAY_HEALTH_CHANGES_TOTAL,
            "online" => if online { "true" } else { "false" })
        .increment(1);
        self.live.publish(EventBody::Health {
            gateway: gateway.to_string(),
            online,
        });
    }
}

/// One open stream of a gateway; dropping it ends that stream's claim.
pub struct Online {
    tracker: Arc<HealthTracker>,
    gateway: String,
}

impl Drop for Online {
    fn drop(&mut self) {
        self.tracker.release(&self.gateway);
    }
}
