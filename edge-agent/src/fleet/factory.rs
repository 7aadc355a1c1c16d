//! Builds the pollers for a configuration: one per device, devices behind
//! one Modbus link sharing a bus. A device that cannot be polled is reported,
//! not fatal.

use crate::buffer::Buffer;
use crate::config::{Config, DeviceConfig, Transport};
use crate::sources::command::DeviceHandle;
use crate::sources::health::{DeviceHealth, DeviceState};
use crate::sources::modbus::Link;
use crate::sources::modbus::bus::{Bus, Endpoint};
use crate::sources::modbus::pipeline::PipelinedBus;
use crate::sources::modbus::poller::ModbusPoller;
use crate::sources::scpi::poller::{ScpiEndpoint, ScpiPoller};
use crate::sources::serial::LineSettings;
use device_profile::{Profile, Protocol};
use qi_common::shutdown::Stop;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a configured device cannot be polled with its profile.
#[derive(Debug, thiserror::Error)]
pub enum DeviceProfileError {
    #[error("devices[{index}] ({device}): profile {profile:?}")]
    Load {
        index: usize,
        device: String,
        profile: String,
        #[source]
        source: Box<device_profile::ProfileError>,
    },
    /// The profile loads but does not fit the device entry (see [`fits_profile`]).
    #[error("{0}")]
    Misfit(String),
}

/// Loads every device's profile; any error names the device and the file.
pub fn load_profiles(cfg: &Config) -> Result<Vec<Profile>, DeviceProfileError> {
    cfg.devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = Profile::load_by_id(&cfg.profiles_dir, &d.profile).map_err(|source| {
                DeviceProfileError::Load {
                    index: i,
                    device: d.id.clone(),
                    profile: d.profile.clone(),
                    source: Box::new(source),
                }
            })?;
            fits_profile(i, d, &p).map_err(DeviceProfileError::Misfit)?;
            Ok(p)
        })
        .collect()
}

/// What only the device entry and its profile together can get wrong: a
/// profile's `modbus.unit_id = 0` is fine over TCP but is the broadcast
/// address on a serial line; `modbus.max_in_flight > 1` needs Modbus TCP.
fn fits_profile(i: usize, d: &DeviceConfig, p: &Profile) -> std::result::Result<(), String> {
    if p.protocol == Protocol::Modbus
        && d.transport.is_rtu()
        && d.unit_id.unwrap_or(p.modbus_defaults().unit_id) == 0
    {
        return Err(format!(
            "devices[{i}] ({}): unit id 0 comes from profile {:?} (modbus.unit_id); on a \
             serial (RTU) line 0 is the broadcast address: no device answers it, so every \
             poll would time out; set devices[{i}].unit_id to the device's own address (1..=247)",
            d.id, d.profile,
        ));
    }
    let in_flight = p.modbus_defaults().max_in_flight;
    if p.protocol == Protocol::Modbus && d.transport.is_rtu() && in_flight > 1 {
        // Parsed and ignored would be a false promise: say it does not apply.
        return Err(format!(
            "devices[{i}] ({}): profile {:?} sets modbus.max_in_flight = {in_flight}, which \
             only Modbus TCP (transport tcp) can do: RTU frames carry no transaction id to \
             match answers to requests; use a profile with max_in_flight = 1 for this device",
            d.id, d.profile,
        ));
    }
    Ok(())
}

/// The running acquisition side: one task per device, and what the rest of the agent sees of it.
pub(super) struct Devices {
    pub tasks: Vec<JoinHandle<()>>,
    pub health: Vec<watch::Receiver<DeviceHealth>>,
    pub handles: HashMap<String, DeviceHandle>,
    pub models: Vec<(String, Arc<Profile>)>,
}

/// A device that cannot be polled (bad profile, conflicting bus settings):
/// reported on `/health` with the reason; the other devices run normally.
fn disabled(d: &DeviceConfig, reason: String, devices: &mut Devices) {
    tracing::error!(device = %d.id, error = %reason, "device disabled");
    metrics::counter!(crate::metric_names::EDGE_DEVICES_DISABLED_TOTAL).increment(1);
    let mut h = DeviceHealth::new(&d.id, &d.profile, &d.transport.to_string());
    h.state = DeviceState::Error;
    h.last_error = Some(reason.clone());
    let (_tx, rx) = watch::channel(h);
    devices.health.push(rx);
    devices
        .handles
        .insert(d.id.clone(), DeviceHandle::disabled(&d.id, reason));
}

/// The Modbus TCP addresses to pipeline, each with its window: those whose
/// every device's profile sets `modbus.max_in_flight > 1` (the smallest of
/// them). One device that takes one request at a time keeps its whole address
/// serial: it could not tell its answers from the others' in a burst.
fn pipelined_addresses(
    usable: &[(usize, &DeviceConfig, Arc<Profile>)],
) -> HashMap<String, Arc<PipelinedBus>> {
    // address -> (smallest window, a device that holds it, devices)
    let mut by_addr: HashMap<&str, (u8, &str, usize)> = HashMap::new();
    for (_, d, p) in usable {
        let (Protocol::Modbus, Transport::Tcp(a)) = (p.protocol, &d.transport) else {
            continue;
        };
        let n = p.modbus_defaults().max_in_flight;
        let e = by_addr.entry(a.as_str()).or_insert((n, d.id.as_str(), 0));
        if n < e.0 {
            (e.0, e.1) = (n, d.id.as_str());
        }
        e.2 += 1;
    }
    let mut out = HashMap::new();
    for (addr, (n, holder, count)) in by_addr {
        let wanted = usable.iter().any(|(_, d, p)| {
            matches!(&d.transport, Transport::Tcp(a) if a == addr)
                && p.modbus_defaults().max_in_flight > 1
        });
        if n > 1 {
            tracing::info!(endpoint = %format!("tcp://{addr}"), max_in_flight = n, devices = count, "pipelined Modbus TCP address");
            out.insert(
                addr.to_string(),
                Arc::new(PipelinedBus::new(addr.to_string(), n)),
            );
        } else if wanted {
            tracing::warn!(endpoint = %format!("tcp://{addr}"), device = %holder,
                "address stays serial (one request at a time): this device's profile has modbus.max_in_flight = 1");
        }
    }
    out
}

/// Starts one poller per configured device. Devices behind the same Modbus
/// link share one bus; a bad profile disables only its own device.
pub(super) fn start_devices(cfg: &Config, buffer: &Arc<Buffer>, stop: &Stop) -> Devices {
    let mut devices = Devices {
        tasks: Vec::new(),
        health: Vec::new(),
        handles: HashMap::new(),
        models: Vec::new(),
    };
    let mut buses: HashMap<Endpoint, Arc<Bus>> = HashMap::new();
    let mut serial_lines: HashMap<PathBuf, LineSettings> = HashMap::new();
    let mut usable = Vec::with_capacity(cfg.devices.len());
    for (i, d) in cfg.devices.iter().enumerate() {
        let profile = match Profile::load_by_id(&cfg.profiles_dir, &d.profile) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                disabled(d, format!("devices[{i}]: {e}"), &mut devices);
                continue;
            }
        };
        if let Err(e) = fits_profile(i, d, &profile) {
            disabled(d, e, &mut devices);
            continue;
        }
        usable.push((i, d, profile));
    }
    let pipelined = pipelined_addresses(&usable);
    for (i, d, profile) in usable {
        let model = Arc::clone(&profile);
        let (handle, commands) = DeviceHandle::channel(&d.id);
        match profile.protocol {
            Protocol::Modbus => {
                let endpoint = match &d.transport {
                    Transport::Tcp(a) => Endpoint::Tcp(a.clone()),
                    Transport::RtuOverTcp(a) => Endpoint::RtuOverTcp(a.clone()),
                    Transport::Serial(l) => {
                        let settings = LineSettings::resolve(l, &profile.serial);
                        if let Some(other) = serial_lines.get(&settings.device)
                            && *other != settings
                        {
                            disabled(
                                d,
                                format!(
                                    "serial line {} is already used with other settings ({other}); devices on one bus must agree",
                                    settings.device.display()
                                ),
                                &mut devices,
                            );
                            continue;
                        }
                        serial_lines.insert(settings.device.clone(), settings.clone());
                        Endpoint::Serial(settings)
                    }
                };
                let link = match &endpoint {
                    Endpoint::Tcp(a) if let Some(p) = pipelined.get(a) => {
                        Link::Pipelined(Arc::clone(p))
                    }
                    _ => Link::Serial(Arc::clone(
                        buses
                            .entry(endpoint.clone())
                            .or_insert_with(|| Arc::new(Bus::new(endpoint))),
                    )),
                };
                let (poller, health) =
                    ModbusPoller::new(d, profile, link, Arc::clone(buffer), commands);
                devices.health.push(health);
                devices.tasks.push(tokio::spawn(poller.run(stop.clone())));
            }
            Protocol::Scpi => {
                let endpoint = match ScpiEndpoint::from_config(&d.transport, &profile) {
                    Ok(e) => e,
                    Err(e) => {
                        disabled(d, format!("devices[{i}].transport: {e}"), &mut devices);
                        continue;
                    }
                };
                let (poller, health) =
                    ScpiPoller::new(d, profile, endpoint, Arc::clone(buffer), commands);
                devices.health.push(health);
                devices.tasks.push(tokio::spawn(poller.run(stop.clone())));
            }
        }
        devices.handles.insert(d.id.clone(), handle);
        devices.models.push((d.id.clone(), model));
    }
    devices
}
