//! Requests to a device's poller (writes now; more later) and their outcomes.

use tokio::sync::{mpsc, oneshot};

/// Why a write was refused or failed. Each maps to a clear HTTP status.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum WriteError {
    #[error("no device {0:?} on this gateway")]
    UnknownDevice(String),
    #[error("device has no point {0:?}")]
    UnknownPoint(String),
    #[error("point {0:?} is not writable (the profile does not mark it writable)")]
    NotWritable(String),
    #[error("value refused: {0}")]
    BadValue(String),
    #[error("device refused the write: {0}")]
    DeviceError(String),
    #[error("device unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("device is not being polled ({0})")]
    NotRunning(String),
    #[error("this device cannot do that: {0}")]
    Unsupported(String),
}

pub enum DeviceCommand {
    Write {
        point: String,
        value: f64,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Line instruments: send `commands` in order, then `query`, and answer
    /// its reply, all on the poller's connection with no poll in between
    /// (an IV sweep on an SMU). `timeout` covers the whole transaction.
    Transaction {
        commands: Vec<String>,
        query: String,
        timeout: std::time::Duration,
        reply: oneshot::Sender<Result<String, WriteError>>,
    },
}

/// The handle the rest of the agent holds to send commands to one device.
#[derive(Clone)]
pub struct DeviceHandle {
    pub device_id: String,
    tx: Option<mpsc::Sender<DeviceCommand>>,
    disabled_reason: Option<String>,
}

impl DeviceHandle {
    pub fn channel(device_id: &str) -> (DeviceHandle, mpsc::Receiver<DeviceCommand>) {
        let (tx, rx) = mpsc::channel(16);
        (
            DeviceHandle {
                device_id: device_id.to_string(),
                tx: Some(tx),
                disabled_reason: None,
            },
            rx,
        )
    }

    /// A device that is configured but not polled (bad profile).
    pub fn disabled(device_id: &str, reason: String) -> DeviceHandle {
        DeviceHandle {
            device_id: device_id.to_string(),
            tx: None,
            disabled_reason: Some(reason),
        }
    }

    pub async fn write(&self, point: &str, value: f64) -> Result<(), WriteError> {
        let Some(tx) = &self.tx else {
            return Err(WriteError::NotRunning(
                self.disabled_reason.clone().unwrap_or_default(),
            ));
        };
        let (reply, rx) = oneshot::channel();
        tx.send(DeviceCommand::Write {
            point: point.to_string(),
            value,
            reply,
        })
        .await
        .map_err(|_| WriteError::NotRunning("poller stopped".into()))?;
        rx.await
            .map_err(|_| WriteError::NotRunning("poller stopped".into()))?
    }

    /// Runs a command transaction on the device's connection (see
    /// [`DeviceCommand::Transaction`]) and returns the query's reply.
    pub async fn transaction(
        &self,
        commands: Vec<String>,
        query: String,
        timeout: std::time::Duration,
    ) -> Result<String, WriteError> {
        let Some(tx) = &self.tx else {
            return Err(WriteError::NotRunning(
                self.disabled_reason.clone().unwrap_or_default(),
            ));
        };
        let (reply, rx) = oneshot::channel();
        tx.send(DeviceCommand::Transaction {
            commands,
            query,
            timeout,
            reply,
        })
        .await
        .map_err(|_| WriteError::NotRunning("poller stopped".into()))?;
        rx.await
            .map_err(|_| WriteError::NotRunning("poller stopped".into()))?
    }
}
