//! Durable appends: sequence numbers, one record per append, group commit.

use super::record::{
    LAST_SEQ_KEY, StoredBatch, StoredEvent, StoredReading, StoredRunEvent, encode_record,
    record_key,
};
use super::{Buffer, BufferError, Lane, NewEvent, NewReading, NewRunEvent, NewRunReading};
use std::sync::atomic::Ordering;

impl Buffer {
    /// Assigns sequence numbers, writes the readings as one record of their
    /// lane and fsyncs. When this returns `Ok`, the readings survive a crash
    /// or power cut.
    pub async fn append_to(
        &self,
        lane: Lane,
        readings: &[NewReading],
    ) -> Result<(u64, u64), BufferError> {
        let mut parts: [Part; 2] = Default::default();
        parts[lane.index()].readings = readings;
        self.append_lanes(parts, &[]).await
    }

    /// Appends audit events (one record in the high lane: the hub's audit
    /// trail must not lose them to bulk telemetry when the buffer is full),
    /// numbered from the same sequence as readings and fsynced before this
    /// returns. They travel and are acknowledged like readings.
    pub async fn append_events(&self, events: &[NewEvent]) -> Result<(u64, u64), BufferError> {
        let mut parts: [Part; 2] = Default::default();
        parts[Lane::High.index()].events = events;
        self.append_lanes(parts, &[]).await
    }

    /// Appends readings to the lanes their priority names, all or nothing:
    /// one record per lane present, written in one atomic batch and one
    /// fsync. For senders that resend what was not acknowledged (the MQTT
    /// bus): a partial append would be stored twice after the resend.
    pub async fn append_by_priority(
        &self,
        readings: &[NewReading],
    ) -> Result<(u64, u64), BufferError> {
        let Some(first) = readings.first() else {
            return self.append_lanes(Default::default(), &[]).await;
        };
        let lane = Lane::of(first.priority);
        if readings.iter().all(|r| Lane::of(r.priority) == lane) {
            return self.append_to(lane, readings).await;
        }
        let (high, normal): (Vec<NewReading>, Vec<NewReading>) = readings
            .iter()
            .cloned()
            .partition(|r| Lane::of(r.priority) == Lane::High);
        let parts = [
            Part {
                readings: &high,
                ..Default::default()
            },
            Part {
                readings: &normal,
                ..Default::default()
            },
        ];
        self.append_lanes(parts, &[]).await
    }

    /// Appends what a protocol run produced (events numbered first, then its
    /// readings) as one record of the high lane (test results must not give
    /// way to bulk telemetry), together with the run's new checkpoint
    /// (`state`: Some(bytes) to store, None to delete) in the same atomic
    /// batch and fsync: after a crash the checkpoint and what the run sent
    /// agree, so nothing is recorded twice or lost by a resume.
    pub async fn append_run(
        &self,
        events: &[NewRunEvent],
        readings: &[NewRunReading],
        state: Option<(&str, Option<&[u8]>)>,
    ) -> Result<(u64, u64), BufferError> {
        let mut parts: [Part; 2] = Default::default();
        parts[Lane::High.index()].run_events = events;
        parts[Lane::High.index()].run_readings = readings;
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = state
            .map(|(id, v)| (super::run_state::key(id), v.map(<[u8]>::to_vec)))
            .into_iter()
            .collect();
        self.append_lanes(parts, &ops).await
    }

    /// `parts[lane.index()]` go to `lane`, `ops` (key, value or delete) are
    /// applied in the same batch; returns the sequence range used.
    async fn append_lanes(
        &self,
        parts: [Part<'_>; 2],
        ops: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(u64, u64), BufferError> {
        let total = parts.iter().map(|p| p.len()).sum::<usize>() as u64;
        if total == 0 && !ops.is_empty() {
            return self.put_run_ops(ops).await;
        }
        if total == 0 {
            let l = self.last_seq.load(Ordering::SeqCst);
            return Ok((l + 1, l));
        }
        // High first: when full, it may sacrifice normal readings.
        for lane in Lane::ALL {
            let n = parts[lane.index()].len() as u64;
            if n > 0 {
                self.make_room(lane, n)?;
            }
        }
        let range = {
            let _guard = self
                .write_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let first = self.last_seq.load(Ordering::SeqCst) + 1;
            let mut next = first;
            let mut batch = sled::Batch::default();
            let mut delta = [0i64; 2];
            for lane in Lane::ALL {
                let part = parts[lane.index()];
                let Part {
                    readings,
                    events,
                    run_events,
                    run_readings,
                } = part;
                let count = part.len() as u64;
                if count == 0 {
                    continue;
                }
                // Run events, then readings (run readings first), then audit events.
                let runs_at = next + run_events.len() as u64;
                let readings_at = runs_at + run_readings.len() as u64;
                let events_at = readings_at + readings.len() as u64;
                let record =
                    StoredBatch {
                        run_events: run_events
                            .iter()
                            .zip(next..)
                            .map(|(e, seq)| StoredRunEvent {
                                seq,
                                timestamp_us: e.timestamp_us,
                                run_id: e.run_id.clone(),
                                kind: e.kind as i32,
                                step: e.step.clone(),
                                message: e.message.clone(),
                                start: e.start.clone(),
                            })
                            .collect(),
                        readings: run_readings
                            .iter()
                            .zip(runs_at..)
                            .map(|(r, seq)| StoredReading {
                                seq,
                                device_id: r.device_id.clone(),
                                metric: r.metric.clone(),
                                timestamp_us: r.timestamp_us,
                                value: r.value,
                                unit: r.unit.clone(),
                                quality: qi_proto::v1::Quality::Good as i32,
                                run_id: r.run_id.clone(),
                                run_series: r.run_series.clone(),
                            })
                            .chain(readings.iter().zip(readings_at..).map(|(r, seq)| {
                                StoredReading {
                                    seq,
                                    device_id: r.device_id.to_string(),
                                    metric: r.metric.to_string(),
                                    timestamp_us: r.timestamp_us,
                                    value: r.value,
                                    unit: r.unit.to_string(),
                                    quality: r.quality,
                                    ..Default::default()
                                }
                            }))
                            .collect(),
                        events: events
                            .iter()
                            .zip(events_at..)
                            .map(|(e, seq)| StoredEvent {
                                seq,
                                timestamp_us: e.timestamp_us,
                                actor: e.actor.clone(),
                                action: e.action.clone(),
                                target: e.target.clone(),
                                outcome: e.outcome.clone(),
                                source_address: e.source_address.clone(),
                                user_agent: e.user_agent.clone(),
                                before_json: e.before_json.clone(),
                                after_json: e.after_json.clone(),
                            })
                            .collect(),
                    };
                let value = encode_record(&record)?;
                self.written_bytes
                    .fetch_add(value.len() as u64, Ordering::Relaxed);
                self.written_readings.fetch_add(count, Ordering::Relaxed);
                batch.insert(&record_key(lane, next), value);
                delta[lane.index()] = count as i64;
                next += count;
            }
            let last = next - 1;
            batch.insert(LAST_SEQ_KEY, &last.to_be_bytes());
            for (k, v) in ops {
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                    None => batch.remove(k.as_slice()),
                }
            }
            self.apply(batch, delta)?;
            self.last_seq.store(last, Ordering::SeqCst);
            (first, last)
        };
        self.commit(range.1).await?;
        metrics::counter!(crate::metric_names::EDGE_BUFFER_APPENDED_TOTAL).increment(total);
        self.appended.notify_one();
        // Durable already: a failed reopen is reported, not the append.
        if let Err(e) = self.recycle_if_due().await {
            metrics::counter!(crate::metric_names::EDGE_BUFFER_RECYCLE_ERRORS_TOTAL).increment(1);
            tracing::warn!(error = %e, "could not reopen the buffer database; retrying on next use");
        }
        Ok(range)
    }

    /// Appends to the normal lane.
    pub async fn append(&self, readings: &[NewReading]) -> Result<(u64, u64), BufferError> {
        self.append_to(Lane::Normal, readings).await
    }

    /// Group commit: returns once everything up to `last` is fsynced. One
    /// appender at a time flushes, covering every record applied before it
    /// started; the others find their records already durable. With
    /// `flush_every`, appenders first wait for the current window to close, so
    /// one fsync serves everything appended within it.
    pub(super) async fn commit(&self, last: u64) -> Result<(), BufferError> {
        if let Some(every) = self.opts.flush_every {
            let due = {
                let mut next = self
                    .next_flush
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let now = tokio::time::Instant::now();
                if next.is_none_or(|n| n < now) {
                    *next = Some(now + every);
                }
                next.unwrap_or(now)
            };
            tokio::time::sleep_until(due).await;
        }
        let _leader = self.flush_lock.lock().await;
        if self.durable_seq.load(Ordering::SeqCst) < last {
            let covered = self.last_seq.load(Ordering::SeqCst);
            // An fsync that never returns (a dead SD card) is the buffer
            // writer stuck: the watchdog must see it.
            let _writing = qi_common::progress::Progress::process().register("buffer fsync");
            self.db()?.flush_async().await?;
            self.durable_seq.fetch_max(covered, Ordering::SeqCst);
            metrics::counter!(crate::metric_names::EDGE_BUFFER_FSYNCS_TOTAL).increment(1);
        }
        Ok(())
    }

    /// What the sources call: appends a poll cycle's readings (one record per
    /// priority present) and returns how many were accepted (durable).
    /// Refusals by the full policy are counted and logged by the buffer; a
    /// storage error is logged here, per device.
    pub async fn accept(&self, device: &str, readings: &[NewReading]) -> u64 {
        if readings.is_empty() {
            return 0;
        }
        let mixed = readings.iter().any(|r| r.priority != readings[0].priority);
        let lanes: Vec<(Lane, Vec<NewReading>)> = if mixed {
            Lane::ALL
                .iter()
                .map(|l| {
                    let part = readings
                        .iter()
                        .filter(|r| Lane::of(r.priority) == *l)
                        .cloned()
                        .collect();
                    (*l, part)
                })
                .collect()
        } else {
            vec![(Lane::of(readings[0].priority), readings.to_vec())]
        };
        let mut accepted = 0;
        for (lane, part) in lanes {
            if part.is_empty() {
                continue;
            }
            match self.append_to(lane, &part).await {
                Ok((first, last)) => {
                    accepted += last + 1 - first;
                    if let Some(tap) = self.tap.get() {
                        tap(device, &part);
                    }
                }
                Err(BufferError::Full(_)) => {}
                Err(e) => {
                    metrics::counter!(crate::metric_names::EDGE_BUFFER_APPEND_ERRORS_TOTAL)
                        .increment(1);
                    tracing::error!(device, error = %e, lost = part.len(), "cannot buffer readings");
                }
            }
        }
        accepted
    }
}

/// What one append puts into one lane.
#[derive(Clone, Copy, Default)]
struct Part<'a> {
    readings: &'a [NewReading],
    events: &'a [NewEvent],
    run_events: &'a [NewRunEvent],
    run_readings: &'a [NewRunReading],
}

impl Part<'_> {
    fn len(&self) -> usize {
        self.readings.len() + self.events.len() + self.run_events.len() + self.run_readings.len()
    }
}
