//! Live fan-out: what just happened at the hub (readings committed by
//! ingest, twin changes, gateway health, alarms, desired-state changes),
//! handed to in-process subscribers (the SSE streams, the alarm evaluator)
//! as it happens, without a database round trip.
//!
//! One owner, [`Fanout`], made at start and shared by `Arc`. Delivery is a
//! bounded ring (tokio's broadcast channel): a subscriber that falls more
//! than `capacity` events behind is skipped ahead (it sees `Lagged`) rather
//! than growing the hub's memory. A second, smaller ring keeps the last
//! events for clients that reconnect with `Last-Event-ID`.
//!
//! Rooms: `health` (gateways online/offline), `index` (which twin a
//! reading belongs to, cached), `filter` (what one subscriber sees), `sse`
//! (the Server-Sent Events streams and their backpressure).
//!
//! Events are per hub process: with several hub replicas (issue #18) each
//! sees what it committed itself.

pub mod filter;
pub mod health;
pub mod index;
pub mod sse;

use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// One reading as committed, with its series id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveReading {
    pub series_id: i32,
    pub device: String,
    pub metric: String,
    pub unit: String,
    pub ts: DateTime<Utc>,
    pub value: f64,
    pub quality: i16,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A batch from a gateway, committed to the database.
    Readings {
        gateway: String,
        readings: Vec<LiveReading>,
    },
    /// A twin was created, changed, placed or deleted.
    Twin {
        twin_id: String,
        kind: String,
        change: String,
        version: i64,
    },
    /// A gateway's uplink connected or went away.
    Health {
        gateway: String,
        online: bool,
    },
    /// Alarm lifecycle (raised, acknowledged, cleared) and desired-state
    /// tracking carry their own JSON bodies, owned by their modules.
    Alarm(serde_json::Value),
    Desired(serde_json::Value),
}

/// An event with its id (monotonic per hub process, the SSE event id).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub id: u64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

pub struct Fanout {
    tx: broadcast::Sender<Arc<Event>>,
    next_id: AtomicU64,
    recent: Mutex<VecDeque<Arc<Event>>>,
    recent_cap: usize,
}

/// Outcome of a resume request.
pub enum Resume {
    /// The events after the given id, oldest first (maybe none).
    Events(Vec<Arc<Event>>),
    /// The id is older than what is kept (or from another hub process):
    /// the client must refetch the state it shows.
    TooOld,
}

impl Fanout {
    /// `capacity`: events a subscriber may fall behind before it is skipped
    /// ahead; `keep`: events kept for resuming.
    pub fn new(capacity: usize, keep: usize) -> Arc<Fanout> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(Fanout {
            tx,
            // Starts from the wall clock in ms, so ids of a restarted hub do
            // not repeat those a client saw before (it then gets TooOld).
            next_id: AtomicU64::new(
                u64::try_from(Utc::now().timestamp_millis()).unwrap_or(1) * 1000,
            ),
            recent: Mutex::new(VecDeque::with_capacity(keep)),
            recent_cap: keep,
        })
    }

    pub fn publish(&self, body: EventBody) {
        // The lock orders id assignment and send: subscribers and the
        // resume ring see ids in increasing order.
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let ev = Arc::new(Event {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at: Utc::now(),
            body,
        });
        if self.recent_cap > 0 {
            if recent.len() == self.recent_cap {
                recent.pop_front();
            }
            recent.push_back(Arc::clone(&ev));
        }
        // No subscriber is not an error.
        let _ = self.tx.send(ev);
    }

    /// Hands a batch ingest committed to the subscribers (SSE, alarms),
    /// with the series id of each reading.
    pub fn publish_batch(&self, gateway: &str, readings: &[qi_proto::v1::Reading], ids: &[i32]) {
        let readings = readings
            .iter()
            .zip(ids)
            .map(|(r, &series_id)| LiveReading {
                series_id,
                device: r.device_id.clone(),
                metric: r.metric.clone(),
                unit: r.unit.clone(),
                ts: DateTime::from_timestamp_micros(r.timestamp_us).unwrap_or_default(),
                value: r.value,
                quality: i16::try_from(r.quality).unwrap_or(0),
            })
            .collect();
        self.publish(EventBody::Readings {
            gateway: gateway.to_string(),
            readings,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Subscribes and returns the kept events after `last_id`, atomically:
    /// nothing published in between is missed or seen twice.
    pub fn resume(&self, last_id: u64) -> (broadcast::Receiver<Arc<Event>>, Resume) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let resume = match (recent.front(), recent.back()) {
            (Some(o), Some(n)) if last_id.saturating_add(1) >= o.id && last_id <= n.id => {
                Resume::Events(recent.iter().filter(|e| e.id > last_id).cloned().collect())
            }
            _ => Resume::TooOld,
        };
        (rx, resume)
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(online: bool) -> EventBody {
        EventBody::Health {
            gateway: "g".into(),
            online,
        }
    }

    #[tokio::test]
    async fn a_resume_gets_what_it_missed_and_then_the_live_events() {
        let f = Fanout::new(16, 4);
        for _ in 0..3 {
            f.publish(health(true));
        }
        let mut rx0 = f.subscribe();
        f.publish(health(false));
        let first = rx0.recv().await.expect("event");
        let (mut rx, r) = f.resume(first.id - 2);
        let Resume::Events(missed) = r else {
            panic!("expected events")
        };
        assert_eq!(missed.len(), 2);
        assert_eq!(missed[1].id, first.id);
        f.publish(health(true));
        assert_eq!(rx.recv().await.expect("event").id, first.id + 1);
        // Older than what is kept.
        assert!(matches!(f.resume(first.id - 10).1, Resume::TooOld));
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_skipped_ahead_not_buffered() {
        let f = Fanout::new(4, 0);
        let mut rx = f.subscribe();
        for _ in 0..100 {
            f.publish(health(true));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(96))
        ));
    }
}
