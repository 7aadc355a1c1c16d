//! A read replica (`database.read_url`): a PostgreSQL streaming replica the
//! analytics queries go to, so they do not compete with ingest on the
//! primary. A probe every `PROBE_EVERY` measures its lag; reads go to the
//! primary instead while the replica is down or not heard from (fallback,
//! said in the response headers), never failing for want of a replica.

use super::{Store, StoreError};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A probe result older than this does not count (the probe is stuck).
const STALE_AFTER: Duration = Duration::from_secs(5);

/// Lag as the replica sees it: 0 when it has replayed all it received,
/// else the age of the last transaction it replayed.
const LAG_SQL: &str = "SELECT pg_is_in_recovery(),
    CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
         ELSE (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint END";

pub(super) struct Replica {
    pool: PgPool,
    probe: Mutex<Option<(Instant, Result<i64, &'static str>)>>,
}

/// Where a read went and why (for headers and `/ready`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReadSource {
    /// "replica" or "primary".
    pub served_by: &'static str,
    /// The replica's lag in ms when it served.
    pub lag_ms: Option<i64>,
    /// Why the primary served although a replica is configured.
    pub fallback: Option<&'static str>,
}

impl Replica {
    fn current(&self) -> Result<i64, &'static str> {
        let p = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        match *p {
            None => Err("replica_not_probed_yet"),
            Some((at, _)) if at.elapsed() > STALE_AFTER => Err("replica_probe_stale"),
            Some((_, r)) => r,
        }
    }
}

impl Store {
    /// Adds the read replica at `url`. Connections are made lazily: a replica
    /// that is down at start only means reads go to the primary for now.
    pub fn with_replica(
        mut self,
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Store, StoreError> {
        let opts: PgConnectOptions = url.parse().map_err(StoreError::Url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(connect_timeout.min(PROBE_TIMEOUT))
            .connect_lazy_with(opts);
        self.replica = Some(Arc::new(Replica {
            pool,
            probe: Mutex::new(None),
        }));
        Ok(self)
    }

    /// The store reads should use now, and what it is: the replica while it
    /// answers, else the primary.
    pub fn for_reads(&self) -> (Store, ReadSource) {
        let Some(r) = &self.replica else {
            let src = ReadSource {
                served_by: "primary",
                lag_ms: None,
                fallback: None,
            };
            return (self.clone(), src);
        };
        match r.current() {
            Ok(lag) => {
                let mut s = self.clone();
                s.pool = r.pool.clone();
                s.replica = None;
                let src = ReadSource {
                    served_by: "replica",
                    lag_ms: Some(lag),
                    fallback: None,
                };
                (s, src)
            }
            Err(why) => {
                metrics::counter!(crate::metric_names::HUB_REPLICA_FALLBACKS_TOTAL).increment(1);
                let src = ReadSource {
                    served_by: "primary",
                    lag_ms: None,
                    fallback: Some(why),
                };
                (self.clone(), src)
            }
        }
    }

    /// For `/ready`: None without a replica.
    pub fn replica_status(&self) -> Option<serde_json::Value> {
        let r = self.replica.as_ref()?;
        Some(match r.current() {
            Ok(lag) => serde_json::json!({"state": "ok", "lag_ms": lag}),
            Err(why) => serde_json::json!({"state": "unavailable", "reason": why}),
        })
    }

    /// Probes the replica's lag every second until `stop` (nothing without one).
    pub async fn run_replica_probe(self, mut stop: qi_common::shutdown::Stop) {
        let Some(r) = self.replica.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up: Option<bool> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.wait() => return,
            }
            let q = sqlx::query_as::<_, (bool, Option<i64>)>(LAG_SQL).fetch_one(&r.pool);
            let result = match tokio::time::timeout(PROBE_TIMEOUT, q).await {
                Ok(Ok((true, lag))) => Ok(lag.unwrap_or(0).max(0)),
                Ok(Ok((false, _))) => Err("read_url_is_not_a_replica"),
                Ok(Err(e)) => {
                    if was_up != Some(false) {
                        tracing::warn!(error = %super::connect::cause(&e), "read replica unreachable: analytics reads go to the primary");
                    }
                    Err("replica_unreachable")
                }
                Err(_) => Err("replica_timeout"),
            };
            let up = result.is_ok();
            if was_up == Some(false) && up {
                tracing::info!("read replica answers again: analytics reads go to it");
            }
            was_up = Some(up);
            metrics::gauge!(crate::metric_names::HUB_REPLICA_UP).set(if up { 1.0 } else { 0.0 });
            if let Ok(lag) = result {
                metrics::gauge!(crate::metric_names::HUB_REPLICA_LAG_SECONDS)
                    .set(lag as f64 / 1000.0);
            }
            *r.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), result));
        }
    }
}
