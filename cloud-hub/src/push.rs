//! What the hub tells connected gateways besides acks and commands
//! (`HubMessage.calibrations`, `HubMessage.run_verdicts`), and the one
//! mechanism for each kind: a [`Signal`] that moves when something of that
//! kind changes anywhere at the hub, and per stream a [`Sent`] that reads
//! the gateway's list again after the signal moved and sends it only when
//! it differs from what that stream sent last. The lists themselves are
//! their modules' (`calibration::push`, `runs::verdicts`); this module
//! imports nothing of the crate, so any of them may use it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// A generation that moves on every change of one kind, and a wake-up for
/// a background task that watches it.
pub struct Signal {
    generation: AtomicU64,
    changed: Notify,
}

impl Signal {
    pub const fn new() -> Signal {
        Signal {
            generation: AtomicU64::new(0),
            changed: Notify::const_new(),
        }
    }

    /// Something changed: streams look again at their next tick.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Resolves after the next `changed`.
    pub async fn notified(&self) {
        self.changed.notified().await;
    }
}

impl Default for Signal {
    fn default() -> Signal {
        Signal::new()
    }
}

/// What one stream told its gateway of one kind.
pub struct Sent<T> {
    /// The agent said in its Hello that it understands the message.
    wanted: bool,
    /// The signal's generation at the last successful read.
    generation: Option<u64>,
    sent: Option<T>,
}

impl<T: PartialEq + Clone> Sent<T> {
    pub fn new(wanted: bool) -> Sent<T> {
        Sent {
            wanted,
            generation: None,
            sent: None,
        }
    }

    /// The list to send now, if any: read (with `read`) when the agent
    /// wants it and `signal` moved since the last read; returned when it
    /// differs from what was sent. A failed read is returned as is and
    /// retried at the next call.
    pub async fn update<E, F, Fut>(&mut self, signal: &Signal, read: F) -> Result<Option<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let generation = signal.generation();
        if !self.wanted || self.generation == Some(generation) {
            return Ok(None);
        }
        let list = read().await?;
        self.generation = Some(generation);
        if self.sent.as_ref() == Some(&list) {
            return Ok(None);
        }
        self.sent = Some(list.clone());
        Ok(Some(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_once_per_change_and_only_what_differs_and_only_when_wanted() {
        let signal = Signal::new();
        let mut s = Sent::<Vec<u8>>::new(true);
        let ok = |v: Vec<u8>| async move { Ok::<_, ()>(v) };
        assert_eq!(s.update(&signal, || ok(vec![1])).await, Ok(Some(vec![1])));
        // Nothing moved: not even read.
        assert_eq!(s.update(&signal, || ok(vec![2])).await, Ok(None));
        signal.changed();
        // Moved, same list: not sent again.
        assert_eq!(s.update(&signal, || ok(vec![1])).await, Ok(None));
        signal.changed();
        assert_eq!(s.update(&signal, || async { Err(()) }).await, Err(()));
        // A failed read is retried.
        assert_eq!(s.update(&signal, || ok(vec![3])).await, Ok(Some(vec![3])));
        let mut never = Sent::<Vec<u8>>::new(false);
        assert_eq!(never.update(&signal, || ok(vec![1])).await, Ok(None));
    }
}
