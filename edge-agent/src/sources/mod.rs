//! Acquisition sources: tasks that read instruments and hand readings to the buffer.
//!
//! Each device is owned by exactly one poller task. The poller is the only
//! writer of that device's [`health::DeviceHealth`] (published on a watch
//! channel) and the only one talking to the device; other parts of the agent
//! reach it through its [`command::DeviceHandle`]. Devices that share a
//! physical link (several unit ids behind one TCP gateway, several devices on
//! one RS-485 line) share a [`modbus::bus::Bus`] that serialises their requests.

pub mod backoff;
pub mod command;
pub mod core;
pub mod driver;
pub mod health;
pub mod modbus;
pub mod report;
pub mod schedule;
pub mod scpi;
pub mod serial;
