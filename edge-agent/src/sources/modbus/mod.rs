//! Modbus TCP, RTU (serial) and RTU-over-TCP acquisition.

pub mod bus;
pub mod plan;
pub mod poller;
