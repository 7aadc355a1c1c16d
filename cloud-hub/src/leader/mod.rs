//! Leader election among hubs that share one database: the singleton
//! background loops (rollups, retention and partition upkeep, calibration
//! expiry checks) run on one hub at a time; ingest and the API run on all.
//!
//! The leader holds a PostgreSQL *session* advisory lock on a connection of
//! its own (not from the pool: a pooled connection goes back to the pool and
//! the lock with it). Chosen over a lease table because the lock needs no
//! clock: it lives exactly as long as the session. When the leader dies, its
//! sessions end: at once on kill -9 (the kernel closes the socket, the
//! backend reads EOF), within about 11 s when the host or network dies (the
//! session's server-side TCP keepalives and `tcp_user_timeout`, set in the
//! startup packet: `storage::SERVER_KEEPALIVES`, which the pool's sessions
//! carry too). Another hub then gets the lock on its next try.
//!
//! No two leaders at once: the leader pings its lock connection every
//! `PING_EVERY` and steps down (stops its loops) when a ping fails or takes
//! longer than `PING_TIMEOUT`, so it has stepped down after at most
//! `PING_EVERY + PING_TIMEOUT` of silence, well before the server gives the
//! lock up (`SERVER_KEEPALIVES`: ~11 s). The e2e test `hub_partition` cuts
//! a leader's network for real and checks the order. When the server ends the leader's session
//! while the leader lives (`pg_terminate_backend`, a database restart), the
//! lock is free at once but the leader learns it only at its next ping: so a
//! new leader waits `GRACE` (longer than a ping round) after taking the lock
//! before it runs anything. Stepping down stops each loop before its next
//! pass; a pass already running finishes (or fails, when the database is what
//! went away). The rollup and partition passes also take transaction-level
//! locks of their own, so even such a straggler cannot overlap the new
//! leader's pass; the calibration check only raises alarms not yet raised.

use qi_common::shutdown::Stop;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// The advisory lock key of leadership ("QIHUBLDR").
const LEADER_LOCK: i64 = 0x5149_4855_424c_4452;
/// How often a follower tries for the lock.
const CAMPAIGN_EVERY: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A new leader waits this long after taking the lock before it runs
/// anything: when the server ended the old leader's session itself
/// (`pg_terminate_backend`, a restart), the old leader learns it only at its
/// next ping, at most `PING_EVERY + PING_TIMEOUT` later.
const GRACE: Duration = Duration::from_secs(4);
/// How long a step-down waits for the loops to finish their pass before
/// the lock is released (graceful shutdown only).
const DRAIN: Duration = Duration::from_secs(5);

/// Whether this hub leads, and the loops that run only while it does.
pub struct Leadership {
    state: watch::Sender<bool>,
    /// `database.leader_election = false`: this hub always leads.
    elected: bool,
    /// Singleton loops running now (a graceful step-down waits for them).
    running: AtomicUsize,
}

impl Leadership {
    /// `elect` false: the hub leads from the start and never campaigns (a
    /// single hub, or a server that takes one connection only).
    pub fn new(elect: bool) -> Arc<Leadership> {
        let (state, _) = watch::channel(!elect);
        let me = Arc::new(Leadership {
            state,
            elected: elect,
            running: AtomicUsize::new(0),
        });
        me.publish(!elect);
        me
    }

    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// For `/ready`: "leader", "follower" or "always" (election off).
    pub fn role(&self) -> &'static str {
        match (self.elected, self.is_leader()) {
            (false, _) => "always",
            (true, true) => "leader",
            (true, false) => "follower",
        }
    }

    fn publish(&self, leader: bool) {
        metrics::gauge!(crate::metric_names::HUB_LEADER).set(if leader { 1.0 } else { 0.0 });
        self.state.send_replace(leader);
    }

    fn step_down(&self, why: &str) {
        if self.is_leader() {
            self.publish(false);
            metrics::counter!(crate::metric_names::HUB_LEADER_CHANGES_TOTAL, "change" => "lost")
                .increment(1);
            tracing::warn!(reason = why, "leadership lost: background jobs stop here");
        }
    }

    /// Campaigns for leadership until `stop` (nothing to do with election off).
    pub async fn campaign(self: Arc<Self>, url: String, mut stop: Stop) {
        if !self.elected {
            return;
        }
        let opts = match url.parse::<PgConnectOptions>() {
            Ok(o) => o
                .application_name("cloud-hub leader")
                .options(crate::storage::SERVER_KEEPALIVES),
            Err(e) => {
                tracing::error!(error = %e, "leader election: bad database.url; never leading");
                return;
            }
        };
        loop {
            let conn = tokio::select! {
                c = tokio::time::timeout(CONNECT_TIMEOUT, opts.connect()) => c,
                () = stop.wait() => return,
            };
            match conn {
                Ok(Ok(conn)) => self.hold(conn, &mut stop).await,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: cannot connect; retrying");
                }
                Err(_) => tracing::warn!("leader election: connect timed out; retrying"),
            }
            if stop.is_stopped() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(CAMPAIGN_EVERY) => {}
                () = stop.wait() => return,
            }
        }
    }

    /// Tries for the lock on `conn` and, once held, keeps it alive; returns
    /// when the connection fails (leadership lost) or at `stop`.
    async fn hold(&self, mut conn: PgConnection, stop: &mut Stop) {
        let mut held_since: Option<tokio::time::Instant> = None;
        loop {
            let asked = if held_since.is_some() {
                sqlx::query_scalar::<_, bool>("SELECT true")
            } else {
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK)
            };
            let got = match tokio::time::timeout(PING_TIMEOUT, asked.fetch_one(&mut conn)).await {
                Ok(Ok(got)) => got,
                Ok(Err(e)) => {
                    self.step_down(&format!("lock connection failed: {e}"));
                    return;
                }
                Err(_) => {
                    self.step_down("lock connection did not answer in time");
                    // Dropped, not closed: a close would wait on the same silence.
                    return;
                }
            };
            if got && held_since.is_none() {
                held_since = Some(tokio::time::Instant::now());
                tracing::debug!("leader lock taken; leading after the grace period");
            }
            if held_since.is_some_and(|t| t.elapsed() >= GRACE) && !self.is_leader() {
                self.publish(true);
                metrics::counter!(crate::metric_names::HUB_LEADER_CHANGES_TOTAL, "change" => "gained")
                    .increment(1);
                tracing::info!("leadership gained: background jobs run on this hub");
            }
            let wait = if held_since.is_some() {
                PING_EVERY
            } else {
                CAMPAIGN_EVERY
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.wait() => break,
            }
        }
        // Shutting down: hand over at once instead of making the others wait
        // for the session to end, once this hub's passes are done.
        if held_since.is_some() {
            self.step_down("shutting down");
            let deadline = tokio::time::Instant::now() + DRAIN;
            while self.running.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LEADER_LOCK)
                .execute(&mut conn)
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
    }

    /// Runs `job` while this hub leads: started on each gain with a stop
    /// that fires on loss or on `stop`, awaited before the next campaign
    /// round can hand leadership on.
    pub fn spawn_while_leader<F, Fut>(self: &Arc<Self>, name: &'static str, stop: Stop, job: F)
    where
        F: Fn(Stop) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut stop = stop;
            let mut leads = me.state.subscribe();
            loop {
                tokio::select! {
                    r = leads.wait_for(|l| *l) => if r.is_err() { return },
                    () = stop.wait() => return,
                }
                tracing::debug!(job = name, "background job starts (leader)");
                let (trigger, job_stop) = qi_common::shutdown::channel();
                me.running.fetch_add(1, Ordering::SeqCst);
                let run = job(job_stop);
                tokio::pin!(run);
                let mut fired = false;
                loop {
                    tokio::select! {
                        () = &mut run => break,
                        r = leads.wait_for(|l| !*l), if !fired => {
                            let _ = r;
                            trigger.fire();
                            fired = true;
                        }
                        () = stop.wait(), if !fired => {
                            trigger.fire();
                            fired = true;
                        }
                    }
                }
                me.running.fetch_sub(1, Ordering::SeqCst);
                tracing::debug!(job = name, "background job stopped");
                if stop.is_stopped() {
                    return;
                }
            }
        });
    }
}
