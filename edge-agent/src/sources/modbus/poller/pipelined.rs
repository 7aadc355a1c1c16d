//! Reads and writes over a pipelined Modbus TCP link: the same contract as
//! the serial path (data or a `Fail`), with framing and matching done by
//! `pipeline` instead of tokio-modbus.

use super::{Data, Fail, ModbusPoller};
use crate::sources::modbus::pipeline::mbap::{Answer, Request};
use crate::sources::modbus::pipeline::{PipeError, PipelinedBus};
use crate::sources::modbus::plan::ReadBlock;
use device_profile::RegisterKind;
use tokio::time::Instant;
use tokio_modbus::ExceptionCode;

impl From<PipeError> for Fail {
    fn from(e: PipeError) -> Fail {
        match e {
            PipeError::Timeout(d) => Fail::Timeout(d),
            other => Fail::Transport(other.to_string()),
        }
    }
}

impl ModbusPoller {
    /// `inter_request_delay_ms` per device: on a shared pipelined link only
    /// this device's own requests are spaced.
    async fn pace_own(&self) {
        if self.inter_request.is_zero() {
            return;
        }
        let last = *self.last_io.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = last {
            tokio::time::sleep_until(last + self.inter_request).await;
        }
    }

    fn mark_own_io(&self) {
        if !self.inter_request.is_zero() {
            *self.last_io.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }

    /// One request and its checked answer.
    pub(super) async fn call_pipelined(
        &self,
        bus: &PipelinedBus,
        request: Request,
    ) -> Result<Answer, Fail> {
        self.pace_own().await;
        let started = Instant::now();
        let res = bus.call(self.unit, request, self.timeout).await;
        self.mark_own_io();
        self.record_rtt(started);
        match res? {
            Answer::Exception(code) => Err(Fail::Exception(ExceptionCode::new(code))),
            a => Ok(a),
        }
    }

    pub(super) async fn read_block_pipelined(
        &self,
        bus: &PipelinedBus,
        b: &ReadBlock,
    ) -> Result<Vec<Data>, Fail> {
        let function = match b.kind {
            RegisterKind::Coil => 1,
            RegisterKind::Discrete => 2,
            RegisterKind::Holding => 3,
            RegisterKind::Input => 4,
        };
        let request = Request::Read {
            function,
            start: b.start,
            count: b.count,
        };
        // The answer's size was checked against the count asked (`mbap`).
        match self.call_pipelined(bus, request).await? {
            Answer::Registers(r) => Ok(vec![Data::Registers(r)]),
            Answer::Bits(bits) => Ok(bits.into_iter().map(Data::Bit).collect()),
            other => Err(Fail::Transport(format!(
                "answer {other:?} to a read of {} items at {}",
                b.count, b.start
            ))),
        }
    }
}
