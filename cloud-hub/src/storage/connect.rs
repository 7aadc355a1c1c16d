//! The first connection at start: retried with backoff for
//! `database.connect_timeout_s`, each failure logged with where and why.
//!
//! sqlx's pool retries a refused connection silently until its acquire
//! timeout and then reports only "pool timed out", so the hub probes with a
//! single connection first, which returns the real cause.
//!
//! A server in recovery (a streaming standby) is refused like an unreachable
//! one, here and for every pooled connection: during a failover a standby
//! can still answer at the address the hub uses (a proxy's health check
//! lagging, DNS or a virtual IP not yet moved); every write on such a
//! connection would fail with SQLSTATE 25006 (read-only transaction) for as
//! long as the pool kept it. sqlx has no `target_session_attrs=read-write`.

use super::StoreError;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A host that swallows packets would otherwise use up the whole budget in
/// one silent attempt.
const MAX_ATTEMPT: Duration = Duration::from_secs(10);

/// Where the hub connects, for messages: never the password.
pub(super) fn target(o: &PgConnectOptions) -> String {
    match o.get_socket() {
        Some(dir) => format!("{} (Unix socket)", dir.display()),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    }
}

/// One line naming the cause once. sqlx's errors repeat their source in
/// their own text ("error returned from database: X" caused by "X").
pub(super) fn cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_string(),
        },
        other => qi_common::error_chain(other),
    }
}

/// The text of the error a standby's connection is refused with.
const STANDBY: &str =
    "the server is a standby (in recovery, read-only); the hub writes and needs the primary";

/// Refuses a connection to a server in recovery (`pg_is_in_recovery()`):
/// one round trip per new connection.
pub(super) async fn require_primary(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut *conn)
        .await?;
    if standby {
        metrics::counter!(crate::metric_names::HUB_DB_CONNECT_FAILURES_TOTAL, "reason" => "standby")
            .increment(1);
        return Err(sqlx::Error::Protocol(STANDBY.into()));
    }
    Ok(())
}

fn reason(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Io(_) => "io",
        sqlx::Error::Tls(_) => "tls",
        sqlx::Error::Database(_) => "database",
        _ => "other",
    }
}

/// Returns once one connection succeeded, or the last cause once
/// `budget` is spent (at least one attempt is always made).
pub(super) async fn wait_for_database(
    opts: &PgConnectOptions,
    budget: Duration,
) -> Result<(), StoreError> {
    let target = target(opts);
    let database = opts
        .get_database()
        .unwrap_or(opts.get_username())
        .to_string();
    let user = opts.get_username().to_string();
    let started = Instant::now();
    let deadline = started + budget;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let limit = remaining.clamp(Duration::from_secs(1), MAX_ATTEMPT);
        let (why, kind) = match tokio::time::timeout(limit, opts.connect()).await {
            Ok(Ok(mut conn)) => {
                let role = require_primary(&mut conn).await;
                let _ = sqlx::Connection::close(conn).await;
                match role {
                    Ok(()) => {
                        if attempt > 1 {
                            tracing::info!(%target, attempt, "PostgreSQL accepts connections now");
                        }
                        return Ok(());
                    }
                    // Counted by require_primary.
                    Err(sqlx::Error::Protocol(m)) if m == STANDBY => (m, ""),
                    Err(e) => (cause(&e), reason(&e)),
                }
            }
            Ok(Err(e)) => (cause(&e), reason(&e)),
            Err(_) => (format!("no answer within {} s", limit.as_secs()), "timeout"),
        };
        if !kind.is_empty() {
            metrics::counter!(crate::metric_names::HUB_DB_CONNECT_FAILURES_TOTAL, "reason" => kind)
                .increment(1);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tracing::warn!(%target, %database, %user, attempt, error = %why, "cannot connect to PostgreSQL; giving up");
            return Err(StoreError::Unreachable {
                target,
                database,
                user,
                attempts: attempt,
                waited_s: started.elapsed().as_secs_f64(),
                timeout_s: budget.as_secs(),
                cause: why,
            });
        }
        let wait = backoff.min(remaining);
        tracing::warn!(
            %target, %database, %user, attempt, error = %why, retry_in_ms = wait.as_millis() as u64,
            "cannot connect to PostgreSQL; retrying"
        );
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The advisory lock key of start-up set-up ("QIHUBSET").
const START_LOCK: i64 = 0x5149_4855_4253_4554;

/// Held while a hub migrates and sets up its storage tier (extension,
/// hypertable, policies, partitions), so two hubs starting together do not
/// race. A session lock on one pooled connection kept out of the pool: the
/// set-up is many statements on the pool (some, like `CREATE EXTENSION` and
/// `create_hypertable(migrate_data)`, better not in one long transaction),
/// so a transaction-level lock would not cover it. A hub that dies here
/// loses the lock with its session.
pub(super) struct StartLock(sqlx::pool::PoolConnection<sqlx::Postgres>);

impl StartLock {
    pub(super) async fn take(pool: &sqlx::PgPool) -> Result<StartLock, StoreError> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(START_LOCK)
            .execute(&mut *conn)
            .await?;
        Ok(StartLock(conn))
    }

    pub(super) async fn release(mut self) {
        if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(START_LOCK)
            .execute(&mut *self.0)
            .await
        {
            // Not back to the pool still holding the lock: close it instead.
            tracing::warn!(error = %cause(&e), "cannot release the start-up lock; closing its connection");
            let _ = self.0.close().await;
        }
    }
}
