//! Server-Sent Events over the fan-out: one pump task per connection reads
//! the fan-out, keeps what the subscriber's filter wants, and queues SSE
//! events for the connection in a bounded queue.
//!
//! Backpressure, in two steps: a pump that falls `live.fanout_capacity`
//! events behind is skipped ahead (the client gets a `lagged` event saying
//! how many it missed); a connection whose queue stays full for
//! `live.send_timeout_s` (its socket does not drain) is dropped. The hub's
//! memory per subscriber is therefore bounded by the queue
//! (`live.client_buffer_events`) and the HTTP server's write buffer.

use super::filter::Filter;
use super::index::TwinIndex;
use super::{Event, EventBody, Fanout, Resume};
use crate::config::live::LiveConfig;
use crate::metric_names as m;
use axum::response::sse;
use futures::Stream;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// The live streams of this hub: their limits and how many are open.
pub struct Streams {
    cfg: LiveConfig,
    fanout: Arc<Fanout>,
    index: Arc<TwinIndex>,
    active: AtomicUsize,
    /// Set when the hub stops: pumps end their streams, so the HTTP server's
    /// graceful shutdown does not wait for clients that never hang up.
    closing: tokio::sync::watch::Sender<bool>,
}

/// `live.max_subscribers` streams are open.
#[derive(Debug, thiserror::Error)]
#[error("{0} live streams are open, the most this hub serves (live.max_subscribers); retry later")]
pub struct TooMany(pub usize);

/// Why a connection was closed by the hub.
#[derive(Debug, thiserror::Error)]
#[error("the client did not read its stream for {0:?}; dropped")]
pub struct Dropped(Duration);

impl Streams {
    pub fn new(cfg: LiveConfig, fanout: Arc<Fanout>, index: Arc<TwinIndex>) -> Arc<Streams> {
        Arc::new(Streams {
            cfg,
            fanout,
            index,
            active: AtomicUsize::new(0),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Ends every open stream (the hub is stopping).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    pub fn index(&self) -> &Arc<TwinIndex> {
        &self.index
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.cfg.keepalive_s)
    }

    /// Opens a stream: events after `last_id` when given (or a `reset`
    /// event when they are no longer kept), then live events.
    pub fn open(
        self: &Arc<Self>,
        mut filter: Filter,
        last_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<sse::Event, Dropped>> + Send + 'static, TooMany> {
        let slot = Slot::take(self)?;
        let (rx, missed) = match last_id {
            Some(id) => {
                let (rx, r) = self.fanout.resume(id);
                (rx, Some(r))
            }
            None => (self.fanout.subscribe(), None),
        };
        let (tx, out) = mpsc::channel(self.cfg.client_buffer_events);
        let (drop_tx, drop_rx) = oneshot::channel();
        let pump = Pump {
            tx,
            index: Arc::clone(&self.index),
            timeout: Duration::from_secs(self.cfg.send_timeout_s),
            closing: self.closing.subscribe(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(d) = pump.run(&mut filter, rx, missed).await {
                metrics::counter!(m::HUB_LIVE_DROPPED_TOTAL).increment(1);
                tracing::info!(reason = %d, "live stream dropped");
                let _ = drop_tx.send(d);
            }
        });
        Ok(futures::stream::unfold(
            (out, Some(drop_rx)),
            |(mut out, drop_rx)| async move {
                let mut drop_rx = drop_rx?;
                tokio::select! {
                    biased;
                    d = &mut drop_rx => match d {
                        // An error ends the response abruptly: the
                        // connection closes instead of idling.
                        Ok(d) => Some((Err(d), (out, None))),
                        // The pump ended without dropping: drain what it queued.
                        Err(_) => out.recv().await.map(|e| (Ok(e), (out, None))),
                    },
                    e = out.recv() => e.map(|e| (Ok(e), (out, Some(drop_rx)))),
                }
            },
        ))
    }
}

/// One open stream's claim on `live.max_subscribers`.
struct Slot(Arc<Streams>);

impl Slot {
    fn take(s: &Arc<Streams>) -> Result<Slot, TooMany> {
        let max = s.cfg.max_subscribers;
        if s.active.fetch_add(1, Ordering::AcqRel) >= max {
            s.active.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(m::HUB_LIVE_REFUSED_TOTAL).increment(1);
            return Err(TooMany(max));
        }
        metrics::gauge!(m::HUB_LIVE_SUBSCRIBERS).increment(1.0);
        Ok(Slot(Arc::clone(s)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(m::HUB_LIVE_SUBSCRIBERS).decrement(1.0);
    }
}

struct Pump {
    tx: mpsc::Sender<sse::Event>,
    index: Arc<TwinIndex>,
    timeout: Duration,
    closing: tokio::sync::watch::Receiver<bool>,
}

/// The pump's reasons to stop: the client left, or it was dropped.
enum Stop {
    Gone,
    Dropped(Dropped),
}

impl Pump {
    async fn run(
        &self,
        filter: &mut Filter,
        mut rx: broadcast::Receiver<Arc<Event>>,
        missed: Option<Resume>,
    ) -> Result<(), Dropped> {
        let r = async {
            match missed {
                Some(Resume::Events(evs)) => {
                    for ev in evs {
                        self.event(filter, &ev).await?;
                    }
                }
                Some(Resume::TooOld) => {
                    let data = json!({"reason": "the events after Last-Event-ID are no longer kept (or come from an earlier hub process); fetch the current state again"});
                    self.send(sse::Event::default().event("reset").data(data.to_string()))
                        .await?;
                }
                None => {}
            }
            let mut closing = self.closing.clone();
            loop {
                let ev = tokio::select! {
                    r = rx.recv() => r,
                    () = self.tx.closed() => return Err(Stop::Gone),
                    _ = closing.wait_for(|c| *c) => return Err(Stop::Gone),
                };
                match ev {
                    Ok(ev) => self.event(filter, &ev).await?,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!(m::HUB_LIVE_SKIPPED_EVENTS_TOTAL).increment(n);
                        let data = json!({"skipped": n});
                        self.send(sse::Event::default().event("lagged").data(data.to_string()))
                            .await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
                }
            }
        }
        .await;
        match r {
            Ok(()) | Err(Stop::Gone) => Ok(()),
            Err(Stop::Dropped(d)) => Err(d),
        }
    }

    /// The SSE events `ev` makes for this subscriber; the last carries the
    /// event's id, so a client that resumes after it has all of them.
    async fn event(&self, filter: &mut Filter, ev: &Event) -> Result<(), Stop> {
        if let EventBody::Twin { .. } = ev.body {
            self.index.invalidate(ev.id);
        }
        if let Err(e) = filter.refresh(&self.index).await {
            // The subtree stays as it was; the next event tries again.
            tracing::warn!(error = %e, "cannot refresh a live stream's subtree");
        }
        let out = match self.render(filter, ev).await {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %e, event = ev.id, "cannot resolve twins of a live event; skipped");
                return Ok(());
            }
        };
        let n = out.len();
        for (i, (name, data)) in out.into_iter().enumerate() {
            let mut e = sse::Event::default().event(name).data(data.to_string());
            if i + 1 == n {
                e = e.id(ev.id.to_string());
            }
            self.send(e).await?;
        }
        Ok(())
    }

    async fn render(
        &self,
        filter: &Filter,
        ev: &Event,
    ) -> Result<Vec<(&'static str, serde_json::Value)>, sqlx::Error> {
        let mut out = Vec::new();
        match &ev.body {
            EventBody::Readings { readings, .. } => {
                let Some(g) = self.index.grouped(ev).await? else {
                    return Ok(out);
                };
                let mut push = |t: &super::index::TwinRef, idx: &[usize]| {
                    for &i in idx {
                        let r = &readings[i];
                        out.push((
                            "reading",
                            json!({"twin_id": t.twin_id, "series_id": r.series_id,
                                   "metric": r.metric, "unit": r.unit, "ts": r.ts,
                                   "value": r.value, "quality": r.quality,
                                   "committed_at": ev.at}),
                        ));
                    }
                };
                match filter.named() {
                    Some(named) if named.len() < g.twins.len() => {
                        for id in named {
                            if let Some((t, idx)) = g.of(id)
                                && filter.wants(t)
                            {
                                push(t, idx);
                            }
                        }
                    }
                    _ => {
                        for (t, idx) in &g.twins {
                            if filter.wants(t) {
                                push(t, idx);
                            }
                        }
                    }
                }
            }
            EventBody::Twin {
                twin_id,
                kind,
                change,
                version,
            } => {
                if let Some(t) = self.index.twin(twin_id).await?
                    && filter.wants(&t)
                {
                    out.push((
                        "twin",
                        json!({"twin_id": twin_id, "kind": kind, "change": change,
                               "version": version, "at": ev.at}),
                    ));
                }
            }
            EventBody::Health { gateway, online } => {
                if let Some(t) = self.index.gateway(gateway).await?
                    && filter.wants(&t)
                {
                    out.push((
                        "health",
                        json!({"twin_id": t.twin_id, "gateway": gateway,
                               "online": online, "at": ev.at}),
                    ));
                }
            }
            EventBody::Alarm(body) | EventBody::Desired(body) => {
                let name = if matches!(ev.body, EventBody::Alarm(_)) {
                    "alarm"
                } else {
                    "desired"
                };
                let twin = body["twin_id"].as_str().unwrap_or_default();
                if let Some(t) = self.index.twin(twin).await?
                    && filter.wants(&t)
                {
                    out.push((name, body.clone()));
                }
            }
        }
        Ok(out)
    }

    async fn send(&self, e: sse::Event) -> Result<(), Stop> {
        match self.tx.send_timeout(e, self.timeout).await {
            Ok(()) => {
                metrics::counter!(m::HUB_LIVE_EVENTS_SENT_TOTAL).increment(1);
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                Err(Stop::Dropped(Dropped(self.timeout)))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Stop::Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::index::TwinRef;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    fn streams(capacity: usize, buffer: usize, timeout_s: u64) -> Arc<Streams> {
        let cfg = LiveConfig {
            fanout_capacity: capacity,
            client_buffer_events: buffer,
            send_timeout_s: timeout_s,
            ..LiveConfig::default()
        };
        let fanout = Fanout::new(cfg.fanout_capacity, 0);
        // Never connects: Health events of a primed gateway need no query.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool");
        let index = TwinIndex::new(pool);
        index.prime_gateway(
            "g",
            TwinRef {
                twin_id: "gateway:g".into(),
                kind: "gateway".into(),
                site: None,
            },
        );
        Streams::new(cfg, fanout, index)
    }

    fn health(s: &Streams, online: bool) {
        s.fanout.publish(EventBody::Health {
            gateway: "g".into(),
            online,
        });
    }

    /// The response body as a client reads it: text until it ends, errs or
    /// `quiet` passes without a frame. Err(text so far) when it errs.
    async fn read(body: &mut axum::body::Body, quiet: Duration) -> Result<String, String> {
        let mut text = String::new();
        loop {
            match tokio::time::timeout(quiet, body.frame()).await {
                Err(_) | Ok(None) => return Ok(text),
                Ok(Some(Err(_))) => return Err(text),
                Ok(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        text.push_str(&String::from_utf8_lossy(d));
                    }
                }
            }
        }
    }

    fn body(s: &Arc<Streams>) -> axum::body::Body {
        let events = s.open(Filter::default(), None).expect("a free slot");
        Sse::new(events).into_response().into_body()
    }
    use axum::response::sse::Sse;

    #[tokio::test]
    async fn a_subscriber_behind_by_more_than_the_fanout_capacity_is_skipped_ahead() {
        let s = streams(4, 1, 30);
        let mut b = body(&s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One queued, one in the pump's hands, then 10 more than the ring holds.
        for _ in 0..2 {
            health(&s, true);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..10 {
            health(&s, true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = read(&mut b, Duration::from_millis(300))
            .await
            .expect("open");
        assert!(
            text.contains("event: lagged\ndata: {\"skipped\":6}"),
            "{text}"
        );
        assert_eq!(text.matches("event: health").count(), 2 + 4, "{text}");
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_after_the_send_timeout() {
        // Two events fit the connection's queue: kept, however long.
        let s = streams(64, 2, 1);
        let mut b = body(&s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        health(&s, true);
        health(&s, false);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let text = read(&mut b, Duration::from_millis(200))
            .await
            .expect("kept");
        assert_eq!(text.matches("event: health").count(), 2, "{text}");
        // Three do not: the pump waits send_timeout_s, then the stream errs
        // (the connection closes) and the slot is free again.
        for _ in 0..3 {
            health(&s, true);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(read(&mut b, Duration::from_millis(200)).await.is_err());
        assert_eq!(s.active.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn streams_beyond_max_subscribers_are_refused() {
        let cfg = LiveConfig {
            max_subscribers: 1,
            ..LiveConfig::default()
        };
        let s = streams(4, 1, 1);
        let s = Streams::new(cfg, Arc::clone(&s.fanout), Arc::clone(&s.index));
        let first = s.open(Filter::default(), None).expect("first");
        assert!(s.open(Filter::default(), None).is_err());
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(s.open(Filter::default(), None).is_ok());
    }
}
