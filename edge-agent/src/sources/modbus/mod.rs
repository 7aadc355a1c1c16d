//! Modbus TCP, RTU (serial) and RTU-over-TCP acquisition.

pub mod bus;
mod faults;
pub mod pipeline;
pub mod plan;
pub mod poller;

use std::sync::Arc;

/// How a Modbus poller reaches its device: the serial bus (one request at a
/// time, tokio-modbus) or a pipelined Modbus TCP connection.
#[derive(Clone)]
pub enum Link {
    Serial(Arc<bus::Bus>),
    Pipelined(Arc<pipeline::PipelinedBus>),
}

impl Link {
    pub fn endpoint(&self) -> String {
        match self {
            Link::Serial(b) => b.endpoint().to_string(),
            Link::Pipelined(p) => p.endpoint().to_string(),
        }
    }
}
