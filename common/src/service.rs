//! A daemon's conversation with systemd: `READY=1` once it can do its job,
//! `STATUS=` lines with its state, `WATCHDOG=1` only while every registered
//! loop makes progress ([`crate::progress`]), and `STOPPING=1` at shutdown.
//! Without `$NOTIFY_SOCKET` nothing is sent, but the supervisor still counts
//! stalled loops in the metrics.

use crate::notify::{Notifier, status_line, watchdog_interval};
use crate::progress::Progress;
use crate::shutdown::Stop;
use std::time::Duration;

/// How often `STATUS=` is refreshed without a watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Without a watchdog, work older than this counts as stalled (for the metric).
const STALL_WITHOUT_WATCHDOG: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Service {
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    progress: Progress,
}

impl Service {
    /// From the environment systemd gives the process; a malformed
    /// `$NOTIFY_SOCKET` is logged and treated as absent (the daemon runs
    /// anyway; systemd will time its start out and say so).
    pub fn from_env() -> Service {
        let notifier = Notifier::from_env()
            .map_err(|e| tracing::warn!(error = %e, "systemd notifications disabled"))
            .ok()
            .flatten();
        let watchdog = watchdog_interval();
        if notifier.is_some() {
            tracing::info!(
                watchdog_ms = watchdog.map(|w| w.as_millis() as u64),
                "reporting to systemd (sd_notify)"
            );
        }
        Service {
            notifier,
            watchdog,
            progress: Progress::process(),
        }
    }

    fn send(&self, state: &str) {
        if let Some(n) = &self.notifier
            && let Err(e) = n.send(state)
        {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// The daemon is ready: storage open, listeners bound, loops started.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\n{}", status_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&status_line(status));
    }

    /// Shutdown has begun: systemd waits up to `TimeoutStopSec` from here.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// How long a loop may go without a beat.
    pub fn stall_after(&self) -> Duration {
        self.watchdog.unwrap_or(STALL_WITHOUT_WATCHDOG)
    }

    /// Until `stop` fires: every half watchdog interval (or every
    /// [`STATUS_EVERY`]) refreshes `STATUS=` with `status()` and, if no
    /// registered loop has missed its beat, pings the watchdog. A stalled loop
    /// stops the pings, so systemd restarts the daemon after `WatchdogSec`.
    pub async fn supervise(self, status: impl Fn() -> String + Send, mut stop: Stop) {
        let every = self.watchdog.map(|w| w / 2).unwrap_or(STATUS_EVERY);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_stalled: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            let stalled = self.progress.stalled(self.stall_after());
            metrics::gauge!(crate::metric_names::STALLED_LOOPS).set(stalled.len() as f64);
            if stalled != was_stalled {
                if stalled.is_empty() {
                    tracing::info!("every main loop is making progress again");
                } else {
                    tracing::error!(stalled = %stalled.join(", "),
                        "main loops stalled: watchdog pings withheld");
                }
                was_stalled = stalled.clone();
            }
            let mut text = status();
            if !stalled.is_empty() {
                text = format!("stalled: {}; {text}", stalled.join(", "));
            }
            let ping = self.watchdog.is_some() && stalled.is_empty();
            if ping {
                metrics::counter!(crate::metric_names::WATCHDOG_PINGS_TOTAL).increment(1);
                self.send(&format!("WATCHDOG=1\n{}", status_line(&text)));
            } else {
                self.send(&status_line(&text));
            }
        }
    }
}
