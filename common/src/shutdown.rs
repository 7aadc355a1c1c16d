//! One shutdown signal for the whole process: SIGTERM (systemd stop) or Ctrl-C.

use tokio::sync::watch;

/// Resolves when the process is asked to stop.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A cloneable stop flag: tasks hold a [`Stop`] and return when it fires.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

/// Fires the [`Stop`] flags made from it.
pub struct StopTrigger(watch::Sender<bool>);

pub fn channel() -> (StopTrigger, Stop) {
    let (tx, rx) = watch::channel(false);
    (StopTrigger(tx), Stop(rx))
}

impl StopTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Stop {
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
    /// Resolves once the stop flag fires (immediately if it already has).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}
