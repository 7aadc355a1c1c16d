//! The loop every poller runs: wait for the next due poll group (or a command,
//! or the stop signal), poll it, and on failure back off with jitter. Each
//! protocol supplies only what differs, through [`Poller`]; what is the same
//! lives in its [`PollerCore`].

use super::backoff::Backoff;
use super::command::{DeviceCommand, WriteError};
use super::core::PollerCore;
use super::health::record_failure;
use qi_common::shutdown::Stop;
use std::future::Future;
use tokio::time::Instant;

/// Why a poll could not complete: the device is unreachable or silent.
pub struct PollFailure {
    pub message: String,
    pub timeout: bool,
}

pub trait Poller: Send {
    fn core(&mut self) -> &mut PollerCore;
    /// Polls group `gi`. Errors mean "offline"; per-point trouble is handled inside.
    fn poll_group(&mut self, gi: usize) -> impl Future<Output = Result<(), PollFailure>> + Send;
    /// Writes one point, encoded as the protocol and profile say.
    fn write(
        &mut self,
        point: &str,
        value: f64,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Runs a command transaction (line instruments only; see
    /// [`DeviceCommand::Transaction`]).
    fn transaction(
        &mut self,
        _commands: &[String],
        _query: &str,
        _timeout: std::time::Duration,
    ) -> impl Future<Output = Result<String, WriteError>> + Send {
        async {
            Err(WriteError::Unsupported(
                "command transactions need a line (SCPI) instrument".into(),
            ))
        }
    }
    /// After a successful poll of `gi` (e.g. to retry failed points sooner).
    fn after_success(&mut self, _gi: usize) {}
    /// After a failed poll, before backing off (e.g. drop the connection).
    fn after_failure(&mut self) {}
}

pub async fn drive<P: Poller>(p: &mut P, mut stop: Stop) {
    let (min, max) = {
        let c = p.core();
        (c.retry_min, c.retry_max)
    };
    let mut backoff = Backoff::new(min, max);
    let mut commands_open = true;
    while let Some((gi, due)) = p.core().schedule.next() {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            cmd = p.core().commands.recv(), if commands_open => {
                match cmd {
                    Some(c) => serve(p, c).await,
                    None => commands_open = false,
                }
                continue;
            }
            _ = stop.wait() => break,
        }
        // A poll in flight must end (each request has its timeout); one that
        // does not is this poller stuck, and the watchdog must see it.
        let polling =
            qi_common::progress::Progress::process().register(format!("poll {}", p.core().id));
        let result = p.poll_group(gi).await;
        drop(polling);
        match result {
            Ok(()) => {
                backoff.reset();
                p.core().schedule.advance(gi, due);
                p.after_success(gi);
            }
            Err(f) => {
                p.after_failure();
                let delay = backoff.next_delay();
                let core = p.core();
                core.schedule.postpone_all(Instant::now() + delay);
                record_failure(&core.health, &f.message, f.timeout, delay);
            }
        }
    }
}

/// Runs one command between polls and answers it; every write is logged and
/// counted the same way, whatever the protocol.
async fn serve<P: Poller>(p: &mut P, cmd: DeviceCommand) {
    match cmd {
        DeviceCommand::Write {
            point,
            value,
            reply,
        } => {
            let res = p.write(&point, value).await;
            p.core().record_write(&point, value, &res);
            let _ = reply.send(res);
        }
        DeviceCommand::Transaction {
            commands,
            query,
            timeout,
            reply,
        } => {
            let res = p.transaction(&commands, &query, timeout).await;
            if let Err(e) = &res {
                tracing::warn!(device = %p.core().id, %query, error = %e, "command transaction failed");
            }
            let _ = reply.send(res);
        }
    }
}
