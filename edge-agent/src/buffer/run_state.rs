//! Checkpoints of protocol runs, kept in the buffer's database beside the
//! records (keys `s/run/<run id>`), so a checkpoint and the run events it
//! goes with are written in one atomic batch and one fsync
//! ([`Buffer::append_run`]). The bytes are the run engine's business.

use super::record::RUN_STATE_PREFIX;
use super::{Buffer, BufferError};

pub(super) fn key(run_id: &str) -> Vec<u8> {
    let mut k = RUN_STATE_PREFIX.to_vec();
    k.extend_from_slice(run_id.as_bytes());
    k
}

impl Buffer {
    /// Stores (Some) or deletes (None) a run's checkpoint and fsyncs.
    pub async fn save_run_state(
        &self,
        run_id: &str,
        state: Option<&[u8]>,
    ) -> Result<(), BufferError> {
        self.put_run_ops(&[(key(run_id), state.map(<[u8]>::to_vec))])
            .await
            .map(|_| ())
    }

    /// Every stored run checkpoint: (run id, bytes).
    pub fn run_states(&self) -> Result<Vec<(String, Vec<u8>)>, BufferError> {
        let mut out = Vec::new();
        for item in self.db()?.scan_prefix(RUN_STATE_PREFIX) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[RUN_STATE_PREFIX.len()..]).into_owned();
            out.push((id, v.to_vec()));
        }
        Ok(out)
    }

    /// Applies checkpoint changes alone (no records) and fsyncs.
    pub(super) async fn put_run_ops(
        &self,
        ops: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(u64, u64), BufferError> {
        {
            let _guard = self.lock();
            let mut batch = sled::Batch::default();
            for (k, v) in ops {
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                    None => batch.remove(k.as_slice()),
                }
            }
            self.db()?.apply_batch(batch)?;
        }
        let _flushing = self.flush_lock.lock().await;
        self.db()?.flush_async().await?;
        let l = self.last_seq();
        Ok((l + 1, l))
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use qi_proto::v1::RunEventKind;

    #[tokio::test]
    async fn run_records_and_checkpoints_are_one_durable_step() {
        let _sled = SLED_TEST_LOCK.lock().await;
        let dir = tempfile::tempdir().unwrap();
        {
            let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
            let ev = NewRunEvent {
                run_id: "r1".into(),
                kind: RunEventKind::StepStarted,
                step: "0".into(),
                ..Default::default()
            };
            let reading = NewRunReading {
                device_id: "chamber".into(),
                metric: "temperature".into(),
                value: 25.0,
                unit: "Cel".into(),
                run_id: "r1".into(),
                run_series: "module_temperature".into(),
                ..Default::default()
            };
            assert_eq!(
                b.append_run(&[ev], &[reading], Some(("r1", Some(b"state-1"))))
                    .await
                    .unwrap(),
                (1, 2)
            );
            b.save_run_state("r2", Some(b"other")).await.unwrap();
        }
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        let mut states = b.run_states().unwrap();
        states.sort();
        assert_eq!(
            states,
            vec![
                ("r1".to_string(), b"state-1".to_vec()),
                ("r2".to_string(), b"other".to_vec())
            ]
        );
        let rec = &b.read(Lane::High, None, None, 100).unwrap()[0];
        assert_eq!(rec.run_events[0].seq, 1);
        assert_eq!(rec.readings[0].seq, 2);
        assert_eq!(rec.readings[0].run_series, "module_temperature");
        assert_eq!(b.stats().backlog_high, 2);
        b.append_run(&[], &[], Some(("r1", None))).await.unwrap();
        b.save_run_state("r2", None).await.unwrap();
        assert!(b.run_states().unwrap().is_empty());
        assert_eq!(b.last_seq(), 2, "checkpoints take no sequence numbers");
    }
}
