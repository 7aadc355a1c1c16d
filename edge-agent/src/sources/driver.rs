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
        // Once stopped, no new poll: select! picks at random among ready
        // branches, and a poll already due would otherwise start after the
        // stop (and delay the shutdown by a whole request timeout).
        if stop.is_stopped() {
            break;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::core::Cycle;
    use tokio::sync::oneshot;

    /// A poller whose poll, once started, waits for the test to let it finish.
    struct Gated {
        core: PollerCore,
        started: Option<oneshot::Sender<()>>,
        gate: Option<oneshot::Receiver<()>>,
    }

    impl Poller for Gated {
        fn core(&mut self) -> &mut PollerCore {
            &mut self.core
        }
        async fn poll_group(&mut self, gi: usize) -> Result<(), PollFailure> {
            if let Some(s) = self.started.take() {
                let _ = s.send(());
            }
            if let Some(g) = self.gate.take() {
                let _ = g.await;
            }
            let mut readings = Vec::new();
            self.core.offer(
                0,
                230.0,
                1_000_000,
                std::time::Instant::now(),
                &mut readings,
            );
            self.core
                .finish_cycle(
                    gi,
                    Cycle {
                        readings,
                        ..Cycle::default()
                    },
                )
                .await;
            Ok(())
        }
        async fn write(&mut self, _point: &str, _value: f64) -> Result<(), WriteError> {
            Err(WriteError::Unsupported("test poller".into()))
        }
    }

    /// SIGTERM's order (app.rs): the stop fires, each poller finishes the
    /// poll in flight and makes its readings durable, only then does its task
    /// end; the agent awaits every poller before the final buffer flush.
    #[tokio::test]
    async fn a_stop_during_a_poll_lets_the_poll_finish_and_its_readings_land() {
        let _sled = crate::buffer::SLED_TEST_LOCK.lock().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let (core, _health, buffer) = crate::sources::core::tests::core(dir.path());
        let (started_tx, started) = oneshot::channel();
        let (release, gate) = oneshot::channel();
        let mut poller = Gated {
            core,
            started: Some(started_tx),
            gate: Some(gate),
        };
        let (trigger, stop) = qi_common::shutdown::channel();
        let task = tokio::spawn(async move { drive(&mut poller, stop).await });
        started.await.expect("the first poll starts");
        trigger.fire();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !task.is_finished(),
            "the poller ended with its poll still in flight"
        );
        assert_eq!(buffer.stats().backlog, 0);
        release.send(()).expect("the poll waits");
        task.await.expect("the poller ends after its poll");
        assert_eq!(
            buffer.stats().backlog,
            1,
            "the poll in flight's reading is in the buffer when the poller ends, \
             and no poll starts after the stop"
        );
    }
}
