//! Acquisition sources: tasks that read instruments and hand readings to the buffer.
//!
//! Each device is owned by exactly one poller task; the poller is the only
//! writer of that device's [`health::DeviceHealth`], which it publishes on a
//! watch channel for the status page.

pub mod backoff;
pub mod health;
pub mod modbus;
pub mod plan;
