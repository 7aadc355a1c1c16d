//! The loop every poller runs: wait for the next due poll group (or a command,
//! or the stop signal), poll it, and on failure back off with jitter. Each
//! protocol supplies only what differs, through [`Poller`].

use super::backoff::Backoff;
use super::command::DeviceCommand;
use super::health::{DeviceHealth, record_failure};
use super::schedule::Schedule;
use qi_common::shutdown::Stop;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Why a poll could not complete: the device is unreachable or silent.
pub struct PollFailure {
    pub message: String,
    pub timeout: bool,
}

pub trait Poller: Send {
    fn schedule(&mut self) -> &mut Schedule;
    fn commands(&mut self) -> &mut mpsc::Receiver<DeviceCommand>;
    fn health(&self) -> &watch::Sender<DeviceHealth>;
    fn retry_bounds(&self) -> (Duration, Duration);
    /// Polls group `gi`. Errors mean "offline"; per-point trouble is handled inside.
    fn poll_group(&mut self, gi: usize) -> impl Future<Output = Result<(), PollFailure>> + Send;
    fn handle(&mut self, cmd: DeviceCommand) -> impl Future<Output = ()> + Send;
    /// After a successful poll of `gi` (e.g. to retry failed points sooner).
    fn after_success(&mut self, _gi: usize) {}
    /// After a failed poll, before backing off (e.g. drop the connection).
    fn after_failure(&mut self) {}
}

pub async fn drive<P: Poller>(p: &mut P, mut stop: Stop) {
    let (min, max) = p.retry_bounds();
    let mut backoff = Backoff::new(min, max);
    let mut commands_open = true;
    while let Some((gi, due)) = p.schedule().next() {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            cmd = p.commands().recv(), if commands_open => {
                match cmd {
                    Some(c) => p.handle(c).await,
                    None => commands_open = false,
                }
                continue;
            }
            _ = stop.wait() => break,
        }
        match p.poll_group(gi).await {
            Ok(()) => {
                backoff.reset();
                p.schedule().advance(gi, due);
                p.after_success(gi);
            }
            Err(f) => {
                p.after_failure();
                let delay = backoff.next_delay();
                p.schedule().postpone_all(Instant::now() + delay);
                record_failure(p.health(), &f.message, f.timeout, delay);
            }
        }
    }
}
