//! What the hub said of the calibration of this gateway's instruments
//! (`HubMessage.calibrations`, issue #15), kept in the buffer's database so
//! it holds across restarts and hub outages, and the rule the run engine
//! applies with it: no run starts on a bench one of whose devices is past
//! its calibration's due date; a device with no calibration known is
//! allowed unless `[runs] require_calibration` says otherwise.
//! docs/calibration.md (## On the edge) is the user's account of it.

use crate::buffer::{Buffer, BufferError};
use qi_proto::v1::CalibrationStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One device's standing calibration, as the hub sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Known {
    pub device_id: String,
    pub calibration_id: i64,
    pub calibrated_unix_ms: i64,
    pub due_unix_ms: i64,
    pub certificate_id: Option<String>,
    /// When this gateway heard it (Unix ms).
    pub received_unix_ms: i64,
}

/// A device's status for a run starting now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Valid,
    Expired,
    /// The hub has said nothing of it (none recorded, or never heard).
    Unknown,
}

/// Why a bench may not run now: the device and what is known of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub device: String,
    pub due: Option<String>,
    pub message: String,
}

pub struct Calibrations {
    buffer: Arc<Buffer>,
    known: RwLock<BTreeMap<String, Known>>,
    /// `[runs] require_calibration`.
    require: bool,
}

fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

impl Calibrations {
    /// What the buffer kept; an entry that does not decode is logged and
    /// left out (the hub sends the whole list again on the next connect).
    pub fn load(buffer: Arc<Buffer>, require: bool) -> Result<Arc<Calibrations>, BufferError> {
        let mut known = BTreeMap::new();
        for (k, v) in buffer.calibrations()? {
            match serde_json::from_slice::<Known>(&v) {
                Ok(c) => {
                    known.insert(k, c);
                }
                Err(e) => tracing::warn!(device = %k, error = %e,
                    "kept calibration does not decode; left out until the hub sends it again"),
            }
        }
        tracing::info!(
            instruments = known.len(),
            require,
            "calibration status loaded"
        );
        metrics::gauge!(crate::metric_names::EDGE_CALIBRATIONS_KNOWN).set(known.len() as f64);
        Ok(Arc::new(Calibrations {
            buffer,
            known: RwLock::new(known),
            require,
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Known>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the hub's list: checked whole (a bad entry refuses all of it,
    /// and what was kept stays), made durable, then used.
    pub async fn apply(&self, msg: CalibrationStatus) -> Result<usize, ApplyError> {
        if msg.instruments.len() > qi_proto::limits::MAX_HELLO_DEVICES {
            return Err(ApplyError::Invalid(format!(
                "{} instruments, more than {}",
                msg.instruments.len(),
                qi_proto::limits::MAX_HELLO_DEVICES
            )));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut next = BTreeMap::new();
        for i in msg.instruments {
            if !qi_proto::limits::valid_id(&i.device_id)
                || !qi_proto::limits::valid_text(&i.certificate_id)
            {
                return Err(ApplyError::Invalid(format!(
                    "device id {:?} or certificate id not valid",
                    i.device_id
                )));
            }
            let k = Known {
                device_id: i.device_id.clone(),
                calibration_id: i.calibration_id,
                calibrated_unix_ms: i.calibrated_unix_ms,
                due_unix_ms: i.due_unix_ms,
                certificate_id: (!i.certificate_id.is_empty()).then_some(i.certificate_id),
                received_unix_ms: now,
            };
            next.insert(i.device_id, k);
        }
        let entries: Vec<(String, Vec<u8>)> = next
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_vec(v).unwrap_or_default()))
            .collect();
        self.buffer.replace_calibrations(&entries).await?;
        let n = next.len();
        metrics::gauge!(crate::metric_names::EDGE_CALIBRATIONS_KNOWN).set(n as f64);
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(n)
    }

    pub fn of(&self, device: &str) -> Option<Known> {
        self.read().get(device).cloned()
    }

    pub fn status(&self, device: &str, now_ms: i64) -> Status {
        match self.read().get(device) {
            None => Status::Unknown,
            Some(k) if k.due_unix_ms <= now_ms => Status::Expired,
            Some(_) => Status::Valid,
        }
    }

    /// What the local API shows of a device.
    pub fn view(&self, device: &str, now_ms: i64) -> serde_json::Value {
        let k = self.of(device);
        serde_json::json!({
            "device": device,
            "status": self.status(device, now_ms),
            "due_at": k.as_ref().map(|k| date(k.due_unix_ms)),
            "calibrated_at": k.as_ref().map(|k| date(k.calibrated_unix_ms)),
            "calibration_id": k.as_ref().map(|k| k.calibration_id),
            "certificate_id": k.as_ref().and_then(|k| k.certificate_id.clone()),
        })
    }

    /// Whether a run may start now on devices `devices`: the first expired
    /// one (or unknown one, when calibration is required) refuses.
    pub fn check<'a>(
        &self,
        devices: impl IntoIterator<Item = &'a str>,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        for d in devices {
            match (self.status(d, now_ms), self.of(d)) {
                (Status::Expired, Some(k)) => {
                    let due = date(k.due_unix_ms);
                    return Err(Refusal {
                        device: d.to_string(),
                        due: Some(due.clone()),
                        message: format!(
                            "instrument {d:?} is out of calibration: its calibration {} was due on {due}; \
                             record a new calibration at the hub",
                            k.calibration_id
                        ),
                    });
                }
                (Status::Unknown, _) if self.require => {
                    return Err(Refusal {
                        device: d.to_string(),
                        due: None,
                        message: format!(
                            "instrument {d:?} has no calibration known to this gateway and \
                             runs.require_calibration is on; record one at the hub and let the \
                             gateway connect"
                        ),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("calibration status from the hub refused: {0}")]
    Invalid(String),
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferOptions;
    use qi_proto::v1::InstrumentCalibration;

    fn entry(dev: &str, due: i64) -> InstrumentCalibration {
        InstrumentCalibration {
            device_id: dev.into(),
            calibration_id: 7,
            calibrated_unix_ms: due - 1000,
            due_unix_ms: due,
            certificate_id: String::new(),
        }
    }

    #[tokio::test]
    async fn what_the_hub_said_survives_a_reopen_and_refuses_expired_devices() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("buf");
        let now = chrono::Utc::now().timestamp_millis();
        {
            let b =
                Arc::new(Buffer::open(&path, BufferOptions::with_cache(1 << 20)).expect("open"));
            let c = Calibrations::load(Arc::clone(&b), false).expect("load");
            let n = c
                .apply(CalibrationStatus {
                    instruments: vec![entry("smu", now - 1), entry("chamber", now + 60_000)],
                })
                .await
                .expect("apply");
            assert_eq!(n, 2);
            b.flush().await.expect("flush");
        }
        let b = Arc::new(Buffer::open(&path, BufferOptions::with_cache(1 << 20)).expect("reopen"));
        let c = Calibrations::load(Arc::clone(&b), false).expect("load");
        assert_eq!(c.status("smu", now), Status::Expired);
        assert_eq!(c.status("chamber", now), Status::Valid);
        assert_eq!(c.status("pyranometer", now), Status::Unknown);
        let r = c.check(["chamber", "smu"], now).expect_err("expired");
        assert_eq!(r.device, "smu");
        assert!(r.message.contains("out of calibration"), "{}", r.message);
        assert!(c.check(["chamber", "pyranometer"], now).is_ok());
        let strict = Calibrations::load(Arc::clone(&b), true).expect("load");
        let r = strict
            .check(["chamber", "pyranometer"], now)
            .expect_err("unknown");
        assert!(r.message.contains("require_calibration"), "{}", r.message);
        // A bad list changes nothing.
        let bad = c
            .apply(CalibrationStatus {
                instruments: vec![entry("", now)],
            })
            .await;
        assert!(matches!(bad, Err(ApplyError::Invalid(_))));
        assert_eq!(c.status("smu", now), Status::Expired);
        // A new list replaces the old one whole.
        c.apply(CalibrationStatus {
            instruments: vec![entry("smu", now + 60_000)],
        })
        .await
        .expect("apply");
        assert_eq!(c.status("smu", now), Status::Valid);
        assert_eq!(c.status("chamber", now), Status::Unknown);
    }
}
