//! Modbus TCP, RTU (serial) and RTU-over-TCP acquisition.

pub mod bus;
mod faults;
pub mod plan;
pub mod poller;
