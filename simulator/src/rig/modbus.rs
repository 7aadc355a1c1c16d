//! The rig's Modbus devices behind one Modbus TCP listener, a unit id each,
//! their registers laid out by the shipped firmware profiles (compiled in, so
//! the binary serves exactly the files the agent loads).

use super::{Counters, Device, Rig};
use crate::register_map::RegisterMap;
use device_profile::Profile;
use std::cell::RefCell;
use std::future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};

/// Each Modbus device's firmware profile: file name and text.
pub const PROFILES: [(Device, &str, &str); 5] = [
    (
        Device::Chamber,
        "binder-kmf115.toml",
        include_str!("../../../firmware-profiles/binder-kmf115.toml"),
    ),
    (
        Device::Daq,
        "pv-rig-daq.toml",
        include_str!("../../../firmware-profiles/pv-rig-daq.toml"),
    ),
    (
        Device::Supply,
        "dc-supply.toml",
        include_str!("../../../firmware-profiles/dc-supply.toml"),
    ),
    (
        Device::Bias,
        "dc-supply.toml",
        include_str!("../../../firmware-profiles/dc-supply.toml"),
    ),
    (
        Device::Hipot,
        "insulation-tester.toml",
        include_str!("../../../firmware-profiles/insulation-tester.toml"),
    ),
];

pub struct ModbusRig {
    rig: Arc<Rig>,
    /// (unit id, device, its register map).
    units: Vec<(u8, Device, RegisterMap)>,
}

impl ModbusRig {
    pub fn new(rig: Arc<Rig>) -> Result<ModbusRig, super::RigError> {
        let mut units = Vec::new();
        for (device, file, text) in PROFILES {
            let profile = Profile::parse(text, Path::new(file))
                .map_err(|source| super::RigError::Profile { file, source })?;
            if let Some(unit) = device.unit_id() {
                units.push((unit, device, RegisterMap::new(profile)));
            }
        }
        Ok(ModbusRig { rig, units })
    }

    fn answer(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        let counters = &self.rig.counters;
        Counters::add(&counters.modbus_requests);
        let Some((_, device, map)) = self.units.iter().find(|u| u.0 == req.slave) else {
            Counters::add(&counters.modbus_exceptions);
            return Err(ExceptionCode::GatewayTargetDevice);
        };
        if self.rig.is_silenced(*device) {
            // A dead device behind a live gateway: the request simply times out.
            Counters::add(&counters.modbus_unanswered);
            return Ok(None);
        }
        let device = *device;
        let points = &map.profile.points;
        let res = self.rig.physics(|p| {
            let p = RefCell::new(p);
            map.serve(
                req.request,
                &mut |i| p.borrow_mut().read(device, &points[i].name).unwrap_or(0.0),
                &mut |i, v| {
                    p.borrow_mut()
                        .write(device, &points[i].name, v)
                        .map_err(|e| {
                            tracing::warn!(error = %e, "Modbus write refused");
                            ExceptionCode::IllegalDataValue
                        })
                },
            )
        });
        if res.is_err() {
            Counters::add(&counters.modbus_exceptions);
        }
        res.map(Some)
    }
}

impl tokio_modbus::server::Service for ModbusRig {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.answer(req))
    }
}

/// Serves the Modbus devices until the listener fails.
pub async fn serve(listener: TcpListener, service: Arc<ModbusRig>) -> std::io::Result<()> {
    let server = Server::new(listener);
    let on_connected = |stream, addr: SocketAddr| {
        let service = Arc::clone(&service);
        tracing::info!(%addr, "Modbus client connected");
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(Arc::clone(&service)))) }
    };
    let on_error = |err| tracing::debug!(%err, "Modbus connection ended with an error");
    server.serve(&on_connected, on_error).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::config::defaults;

    #[test]
    fn every_profile_point_is_served_by_the_physics() {
        let rig = Arc::new(Rig::new(defaults()).expect("rig"));
        let modbus = ModbusRig::new(Arc::clone(&rig)).expect("profiles");
        assert_eq!(modbus.units.len(), 5);
        for (_, device, map) in &modbus.units {
            for point in &map.profile.points {
                let v = rig.physics(|p| p.read(*device, &point.name));
                assert!(
                    v.is_some(),
                    "{}.{} has no physics",
                    device.name(),
                    point.name
                );
                if point.writable {
                    let w = rig.physics(|p| p.write(*device, &point.name, 0.0));
                    assert_eq!(w, Ok(()), "{}.{}", device.name(), point.name);
                }
            }
        }
    }
}
