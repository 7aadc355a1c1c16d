//! Writes between polls: encode per the profile, refuse what does not fit,
//! send on the device's bus.

use super::ModbusPoller;
use crate::sources::command::WriteError;
use device_profile::{DataType, RegisterKind};
use tokio_modbus::client::Writer;

impl ModbusPoller {
    pub(super) async fn write_point(&mut self, name: &str, value: f64) -> Result<(), WriteError> {
        let p = self.core.writable_point(name)?;
        let Some(loc) = p.modbus() else {
            return Err(WriteError::UnknownPoint(name.to_string()));
        };
        enum Op {
            Coil(bool),
            Registers(Vec<u16>),
        }
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
        let mut bus = self.bus.lock().await;
        bus.pace(self.inter_request).await;
        let timeout = self.timeout;
        let ctx = bus
            .context(self.unit, timeout)
            .await
            .map_err(|e| WriteError::Unreachable(e.to_string()))?;
        let res = tokio::time::timeout(timeout, async {
            match &op {
                Op::Coil(on) => ctx.write_single_coil(loc.address, *on).await,
                Op::Registers(r) if r.len() == 1 => {
                    ctx.write_single_register(loc.address, r[0]).await
                }
                Op::Registers(r) => ctx.write_multiple_registers(loc.address, r).await,
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
