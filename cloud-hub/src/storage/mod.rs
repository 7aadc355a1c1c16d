//! Storage: the only module that speaks SQL. Ingest and the API go through [`Store`].

mod analytics;
mod citus;
mod connect;
pub mod gateway_events;
mod nodelay;
mod partitions;
mod replica;
mod rollup;
pub mod run_events;
mod tier;
mod write;

pub use analytics::{BucketRow, LatestRow, SeriesRow, Source};
pub use replica::ReadSource;
pub use rollup::{Chunk, Pacer};
pub use tier::{StorageTier, TierChoice};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::time::Duration;

/// Sent in the startup packet of every session the hub opens on the primary
/// (the pool and the leader's lock connection): the *server* probes the
/// session after 5 s idle, 3 probes 2 s apart, and gives up on data left
/// unacknowledged for 10 s. So when a hub's host or network vanishes
/// (partition, power cut: no FIN, no RST), PostgreSQL ends all its sessions
/// after about 11 s: their transactions roll back and their locks go (a
/// rollup pass's, the start-up lock, row locks of an ingest batch) instead
/// of lingering for the kernel's default keepalive (2 h), blocking the other
/// hubs. The leader relies on it too (its module doc). A pooler in front of
/// PostgreSQL must pass the `options` startup parameter on. Not sent by a
/// pool of one (`database.max_connections = 1`: a single-connection server).
pub const SERVER_KEEPALIVES: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "5"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// The inner errors are part of the message and not exposed as sources:
/// sqlx's errors already repeat their own source, and a chain printed with
/// `{:#}` would say the same cause three times.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {}", connect::cause(.0))]
    Db(sqlx::Error),
    /// The batch breaks a rule only the database can check (a run another
    /// gateway owns); nothing of it was written and resending will not help.
    #[error("{0}")]
    Refused(String),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("database.url is not a valid PostgreSQL URL: {}", connect::cause(.0))]
    Url(sqlx::Error),
    #[error(
        "PostgreSQL at {target} (database {database}, user {user}) did not accept a connection: {attempts} attempts in {waited_s:.1} s (database.connect_timeout_s = {timeout_s}); last cause: {cause}"
    )]
    Unreachable {
        target: String,
        database: String,
        user: String,
        attempts: u32,
        waited_s: f64,
        timeout_s: u64,
        cause: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// `[retention]`: how long each resolution is kept (days; 0 = forever), and
/// how many day partitions the hub keeps ready ahead (tier none).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub raw_days: i64,
    #[serde(default)]
    pub minute_days: i64,
    #[serde(default)]
    pub hour_days: i64,
    #[serde(default = "default_days_ahead")]
    pub partition_days_ahead: i64,
    #[serde(default = "default_compress_after_days")]
    pub compress_after_days: i64,
}

fn default_compress_after_days() -> i64 {
    7
}

fn default_days_ahead() -> i64 {
    7
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_days: 0,
            minute_days: 0,
            hour_days: 0,
            partition_days_ahead: default_days_ahead(),
            compress_after_days: default_compress_after_days(),
        }
    }
}

/// How a batch is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestMethod {
    /// Binary COPY (fastest), INSERT .. ON CONFLICT for redelivered batches.
    #[default]
    Copy,
    /// INSERT .. SELECT FROM UNNEST .. ON CONFLICT DO NOTHING always: for
    /// servers or proxies without COPY FROM STDIN.
    Insert,
}

/// Everything `Store::open` needs to know.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub tier: TierChoice,
    pub ingest: IngestMethod,
    pub retention: Retention,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    tier: StorageTier,
    ingest: IngestMethod,
    retention: Retention,
    series: std::sync::Arc<write::SeriesCache>,
    /// `database.read_url`, when set.
    replica: Option<std::sync::Arc<replica::Replica>>,
}

/// One stored reading, as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredReading {
    pub gateway_id: String,
    pub device_id: String,
    pub metric: String,
    pub ts: DateTime<Utc>,
    pub value: f64,
    pub unit: String,
    #[serde(serialize_with = "quality_name")]
    pub quality: i16,
    pub seq: i64,
}

fn quality_name<S: serde::Serializer>(q: &i16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match *q {
        1 => "good",
        2 => "uncertain",
        3 => "bad",
        _ => "unspecified",
    })
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeviceRow {
    pub gateway_id: String,
    pub device_id: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// A command for a gateway and where it stands.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CommandRow {
    pub id: i64,
    pub gateway_id: String,
    pub action: serde_json::Value,
    /// pending, sent, succeeded, failed or expired.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub result: Option<String>,
}

const COMMAND_COLUMNS: &str =
    "id, gateway_id, action, state, created_at, deadline, sent_at, completed_at, result";

/// Queues a command inside the caller's transaction (what a capability that
/// turns its own state into commands, such as desired state, needs).
pub async fn insert_command(
    conn: &mut sqlx::PgConnection,
    gateway_id: &str,
    action: &serde_json::Value,
    deadline: DateTime<Utc>,
) -> Result<CommandRow, sqlx::Error> {
    sqlx::query_as::<_, CommandRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO commands (gateway_id, action, deadline) VALUES ($1, $2, $3) RETURNING {COMMAND_COLUMNS}"
    )))
    .bind(gateway_id)
    .bind(action)
    .bind(deadline)
    .fetch_one(conn)
    .await
}

/// Filters of `GET /api/v1/readings`, already validated.
#[derive(Debug, Clone, Default)]
pub struct ReadingQuery {
    pub gateway: Option<String>,
    pub device: Option<String>,
    pub metric: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
    pub ascending: bool,
}

impl Store {
    /// Connects, applies migrations and sets up the best storage tier available.
    pub async fn open(o: &StoreOptions) -> Result<Store, StoreError> {
        let mut opts = o.url.parse::<PgConnectOptions>().map_err(StoreError::Url)?;
        // A pool of one is for a single-connection server (PGlite, which
        // takes the startup packet raw): one hub, nobody for a dead
        // session's locks to block.
        if o.max_connections > 1 {
            opts = opts.options(SERVER_KEEPALIVES);
        }
        connect::wait_for_database(&opts, o.connect_timeout).await?;
        tracing::info!(target = %connect::target(&opts), "connected to PostgreSQL");
        let pool = PgPoolOptions::new()
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    nodelay::set_on_all_tcp_sockets();
                    // A new connection normally has no prepared statements;
                    // single-backend servers (PGlite) keep the previous
                    // client's, whose names would clash with sqlx's.
                    sqlx::Executor::execute(&mut *conn, "DEALLOCATE ALL").await?;
                    // Never a pooled connection to a standby (connect.rs).
                    connect::require_primary(conn).await
                })
            })
            .max_connections(o.max_connections)
            .acquire_timeout(o.connect_timeout)
            .connect_with(opts)
            .await?;
        // Hubs starting together over one database set it up one at a time.
        // A pool of one (single-connection servers) has no room for the lock
        // beside the set-up; such a server has one hub anyway.
        let start_lock = match o.max_connections > 1 {
            true => Some(connect::StartLock::take(&pool).await?),
            false => None,
        };
        sqlx::migrate!("./migrations").run(&pool).await?;
        let tier = tier::setup(&pool, o.tier).await?;
        match tier {
            StorageTier::None => partitions::ensure_partitioned(&pool).await?,
            StorageTier::Timescale => tier::apply_policies(&pool, &o.retention).await?,
            // Laid out by tier::setup (day partitions, then distributed).
            StorageTier::Apache | StorageTier::Citus => {}
        }
        if let Some(l) = start_lock {
            l.release().await;
        }
        Ok(Store {
            pool,
            tier,
            ingest: o.ingest,
            retention: o.retention,
            series: Default::default(),
            replica: None,
        })
    }

    /// The connection pool, for tests and tools that check what was stored.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Daily maintenance (run hourly): partitions ahead and retention of raw
    /// samples (tiers none and citus: drop whole day partitions; apache: drop_chunks)
    /// and of the rollups. Tier timescale: its policies do all of it.
    pub async fn maintain(&self, r: &Retention) -> Result<(), StoreError> {
        match self.tier {
            StorageTier::Timescale => return Ok(()),
            StorageTier::None | StorageTier::Citus => {
                let (_, dropped) = partitions::maintain(
                    &self.pool,
                    r.partition_days_ahead.clamp(1, 366),
                    r.raw_days,
                    self.tier == StorageTier::Citus,
                )
                .await?;
                metrics::counter!(crate::metric_names::HUB_PARTITIONS_DROPPED_TOTAL)
                    .increment(dropped as u64);
            }
            StorageTier::Apache if r.raw_days > 0 => {
                let dropped: Vec<String> = sqlx::query_scalar(
                    "SELECT c::text FROM drop_chunks('samples', older_than => now() - make_interval(days => $1)) c",
                )
                .bind(r.raw_days as i32)
                .fetch_all(&self.pool)
                .await?;
                if !dropped.is_empty() {
                    tracing::info!(
                        chunks = dropped.len(),
                        days = r.raw_days,
                        "raw retention: chunks dropped"
                    );
                }
                metrics::counter!(crate::metric_names::HUB_PARTITIONS_DROPPED_TOTAL)
                    .increment(dropped.len() as u64);
            }
            StorageTier::Apache => {}
        }
        for (table, days) in [("rollup_1m", r.minute_days), ("rollup_1h", r.hour_days)] {
            if days > 0 {
                let sql = if table == "rollup_1m" {
                    "DELETE FROM rollup_1m WHERE bucket < now() - make_interval(days => $1)"
                } else {
                    "DELETE FROM rollup_1h WHERE bucket < now() - make_interval(days => $1)"
                };
                let n = sqlx::query(sql)
                    .bind(days as i32)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if n > 0 {
                    tracing::info!(table, deleted = n, days, "rollup retention applied");
                }
            }
        }
        Ok(())
    }

    /// Runs `maintain` every hour until `stop`.
    pub async fn run_maintenance(self, r: Retention, mut stop: qi_common::shutdown::Stop) {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            if let Err(e) = self.maintain(&r).await {
                metrics::counter!(crate::metric_names::HUB_MAINTENANCE_ERRORS_TOTAL).increment(1);
                tracing::warn!(error = %e, "storage maintenance failed; retrying in an hour");
            }
        }
    }

    pub fn tier(&self) -> StorageTier {
        self.tier
    }

    /// Readiness: the database answers within `timeout` and holds every
    /// migration this build carries (one cheap query does both). `Ok(false)`
    /// when the schema is behind (a restore of an older dump, say).
    pub async fn schema_current(&self, timeout: Duration) -> Result<bool, StoreError> {
        let latest = sqlx::migrate!("./migrations")
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        let q = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(version) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.pool);
        match tokio::time::timeout(timeout, q).await {
            Ok(r) => Ok(r?.unwrap_or(0) >= latest),
            Err(_) => Err(StoreError::Db(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Checks the database answers within `timeout` (readiness must not hang
    /// for the pool's whole acquire timeout while the database is down).
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&self.pool)).await {
            Ok(r) => {
                r?;
                Ok(())
            }
            Err(_) => Err(StoreError::Db(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Registers a gateway's connection; returns the highest sequence already stored for it.
    pub async fn gateway_connected(
        &self,
        gateway_id: &str,
        agent_version: &str,
    ) -> Result<u64, StoreError> {
        let highest: i64 = sqlx::query_scalar(
            "INSERT INTO gateways (gateway_id, agent_version) VALUES ($1, $2)
             ON CONFLICT (gateway_id) DO UPDATE SET agent_version = EXCLUDED.agent_version, last_seen = now()
             RETURNING highest_seq",
        )
        .bind(gateway_id)
        .bind(agent_version)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(highest).unwrap_or(0))
    }

    pub async fn query_readings(&self, q: &ReadingQuery) -> Result<Vec<StoredReading>, StoreError> {
        // Constant SQL text with nullable parameters: no string building, so no injection path.
        let sql = if q.ascending {
            "SELECT gateway_id, device_id, metric, ts, value, unit, quality, seq FROM readings
             WHERE ($1::text IS NULL OR gateway_id = $1) AND ($2::text IS NULL OR device_id = $2)
               AND ($3::text IS NULL OR metric = $3) AND ($4::timestamptz IS NULL OR ts >= $4)
               AND ($5::timestamptz IS NULL OR ts < $5)
             ORDER BY ts ASC, gateway_id, seq LIMIT $6"
        } else {
            "SELECT gateway_id, device_id, metric, ts, value, unit, quality, seq FROM readings
             WHERE ($1::text IS NULL OR gateway_id = $1) AND ($2::text IS NULL OR device_id = $2)
               AND ($3::text IS NULL OR metric = $3) AND ($4::timestamptz IS NULL OR ts >= $4)
               AND ($5::timestamptz IS NULL OR ts < $5)
             ORDER BY ts DESC, gateway_id, seq DESC LIMIT $6"
        };
        Ok(sqlx::query_as::<_, StoredReading>(sql)
            .bind(&q.gateway)
            .bind(&q.device)
            .bind(&q.metric)
            .bind(q.from)
            .bind(q.to)
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Queues a command and appends `audit` (who asked) in the same transaction.
    pub async fn create_command(
        &self,
        gateway_id: &str,
        action: &serde_json::Value,
        deadline: DateTime<Utc>,
        audit: crate::audit::NewEntry,
    ) -> Result<CommandRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = insert_command(&mut tx, gateway_id, action, deadline).await?;
        let mut audit = audit;
        audit.target = format!("{}/command:{}", audit.target, row.id);
        crate::audit::append_in(&mut tx, audit)
            .await
            .map_err(|crate::audit::AuditError::Db(e)| StoreError::Db(e))?;
        tx.commit().await?;
        Ok(row)
    }

    /// Marks open commands whose deadline passed as expired (for one gateway,
    /// or all); returns their ids.
    pub async fn expire_commands(&self, gateway_id: Option<&str>) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE commands SET state = 'expired', completed_at = now(),
                    result = 'deadline passed before the gateway reported a result'
             WHERE state IN ('pending', 'sent') AND deadline < now()
               AND ($1::text IS NULL OR gateway_id = $1)
             RETURNING id",
        )
        .bind(gateway_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn command(&self, id: i64) -> Result<Option<CommandRow>, StoreError> {
        self.expire_commands(None).await?;
        Ok(sqlx::query_as::<_, CommandRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Commands to (re)send to a connected gateway: pending ones, and sent ones
    /// with no result after 10 s (the stream may have died after sending).
    /// Returned commands are marked sent.
    pub async fn commands_to_send(&self, gateway_id: &str) -> Result<Vec<CommandRow>, StoreError> {
        self.expire_commands(Some(gateway_id)).await?;
        Ok(sqlx::query_as::<_, CommandRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE commands SET state = 'sent', sent_at = now()
             WHERE id IN (SELECT id FROM commands WHERE gateway_id = $1
                            AND (state = 'pending' OR (state = 'sent' AND sent_at < now() - interval '10 seconds'))
                          ORDER BY id LIMIT 100)
             RETURNING {COMMAND_COLUMNS}"
        )))
        .bind(gateway_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a gateway's result; false if the command was not open for that gateway.
    pub async fn complete_command(
        &self,
        gateway_id: &str,
        id: i64,
        ok: bool,
        message: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE commands SET state = CASE WHEN $3 THEN 'succeeded' ELSE 'failed' END,
                    completed_at = now(), result = $4
             WHERE id = $1 AND gateway_id = $2 AND state IN ('pending', 'sent')",
        )
        .bind(id)
        .bind(gateway_id)
        .bind(ok)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn list_devices(
        &self,
        gateway: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        Ok(sqlx::query_as::<_, DeviceRow>(
            "SELECT gateway_id, device_id, first_seen, last_seen FROM devices
             WHERE ($1::text IS NULL OR gateway_id = $1)
             ORDER BY gateway_id, device_id LIMIT $2 OFFSET $3",
        )
        .bind(gateway)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?)
    }
}
