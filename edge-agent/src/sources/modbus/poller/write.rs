//! Writes between polls: encode per the profile, refuse what does not fit,
//! send on the device's link (a write on a pipelined link is one more
//! transaction in its window: one connection per address, and this device's
//! reads and writes stay in order because its poller awaits each).

use super::{Fail, ModbusPoller};
use crate::sources::command::WriteError;
use crate::sources::modbus::Link;
use crate::sources::modbus::bus::Bus;
use crate::sources::modbus::pipeline::mbap::Request;
use device_profile::{DataType, RegisterKind};
use tokio_modbus::client::Writer;

enum Op {
    Coil(bool),
    Registers(Vec<u16>),
}

impl ModbusPoller {
    pub(super) async fn write_point(&mut self, name: &str, value: f64) -> Result<(), WriteError> {
        let p = self.core.writable_point(name)?;
        let Some(loc) = p.modbus() else {
            return Err(WriteError::UnknownPoint(name.to_string()));
        };
        let op = match (loc.register, loc.data_type) {
            (RegisterKind::Coil, DataType::Bool) => {
                let raw = (value - p.offset) / p.scale;
                if raw == 0.0 {
                    Op::Coil(false)
                } else if raw == 1.0 {
                    Op::Coil(true)
                } else {
                    return Err(WriteError::BadValue(format!(
                        "a coil takes 0 or 1, got {value}"
                    )));
                }
            }
            (RegisterKind::Holding, t) => Op::Registers(
                device_profile::encode_checked(
                    value,
                    t,
                    p.byte_order(&self.defaults),
                    p.word_order(&self.defaults),
                    p.scale,
                    p.offset,
                )
                .map_err(|e| WriteError::BadValue(e.to_string()))?,
            ),
            _ => return Err(WriteError::NotWritable(name.to_string())),
        };
        match self.link.clone() {
            Link::Serial(bus) => self.write_serial(&bus, loc.address, &op).await,
            Link::Pipelined(bus) => {
                let request = match op {
                    Op::Coil(on) => Request::WriteCoil {
                        address: loc.address,
                        on,
                    },
                    Op::Registers(r) if r.len() == 1 => Request::WriteRegister {
                        address: loc.address,
                        value: r[0],
                    },
                    Op::Registers(values) => Request::WriteRegisters {
                        address: loc.address,
                        values,
                    },
                };
                match self.call_pipelined(&bus, request).await {
                    Ok(_) => Ok(()),
                    Err(Fail::Timeout(d)) => Err(WriteError::Timeout(d.as_millis() as u64)),
                    Err(Fail::Exception(code)) => {
                        Err(WriteError::DeviceError(format!("Modbus exception: {code}")))
                    }
                    Err(Fail::Transport(e)) => Err(WriteError::Unreachable(e)),
                }
            }
        }
    }

    async fn write_serial(&self, bus: &Bus, address: u16, op: &Op) -> Result<(), WriteError> {
        let mut bus = bus.lock().await;
        bus.pace(self.inter_request).await;
        let timeout = self.timeout;
        let ctx = bus
            .context(self.unit, timeout)
            .await
            .map_err(|e| WriteError::Unreachable(e.to_string()))?;
        let res = tokio::time::timeout(timeout, async {
            match op {
                Op::Coil(on) => ctx.write_single_coil(address, *on).await,
                Op::Registers(r) if r.len() == 1 => ctx.write_single_register(address, r[0]).await,
                Op::Registers(r) => ctx.write_multiple_registers(address, r).await,
            }
        })
        .await;
        bus.mark_io();
        match res {
            Err(_) => {
                bus.reset().await;
                Err(WriteError::Timeout(timeout.as_millis() as u64))
            }
            Ok(Err(e)) => {
                bus.reset().await;
                Err(WriteError::Unreachable(e.to_string()))
            }
            Ok(Ok(Err(code))) => Err(WriteError::DeviceError(format!("Modbus exception: {code}"))),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
}
