//! `fleet-sim`: a fleet of simulated devices in one process (issue #18).
//!
//!   fleet-sim mqtt --site NAME=HOST:PORT ... --devices 100000 --report r.json
//!   fleet-sim modbus --profile P.toml --first-port 15020 --ports 10 --unit-ids 1-100
//!
//! See docs/scaling.md ("Fleet simulator").

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use device_profile::{Profile, Protocol};
use instrument_sim::fleet::{self, Plan, Site, model};
use instrument_sim::register_map::RegisterMap;
use qi_common::logging::{self, LogFormat};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Many simulated devices in one process: MQTT publishers or Modbus TCP devices"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Log format: human or json.
    #[arg(long, default_value = "human", global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Devices publishing telemetry (QoS 1) to one agent per site.
    Mqtt {
        /// A site and its agent's MQTT address: `NAME=HOST:PORT` (repeat per site).
        #[arg(long = "site", required = true)]
        sites: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        devices: u32,
        /// Device types, comma-separated: turbine, thermal-engine, rotor, meter.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "turbine,thermal-engine,rotor,meter"
        )]
        types: Vec<String>,
        /// Devices sharing one MQTT connection.
        #[arg(long, default_value_t = 100)]
        per_connection: u32,
        /// One message per device every this many ms.
        #[arg(long, default_value_t = 1000)]
        period_ms: u64,
        /// How long to publish.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Then how long to wait for outstanding acknowledgements.
        #[arg(long, default_value_t = 30)]
        drain_s: u64,
        /// Unacknowledged messages per connection before messages are skipped.
        #[arg(long, default_value_t = 20_000)]
        max_inflight: usize,
        #[arg(long)]
        username: Option<String>,
        /// Password (prefer the environment variable).
        #[arg(long, env = "FLEET_SIM_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long, default_value_t = 18)]
        seed: u64,
        /// Where to write the JSON report (sent / acknowledged per device).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Modbus TCP devices: every unit id behind each of consecutive ports.
    Modbus {
        /// Firmware profile whose registers every device serves.
        #[arg(long)]
        profile: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        listen: IpAddr,
        #[arg(long, default_value_t = 15020)]
        first_port: u16,
        #[arg(long, default_value_t = 1)]
        ports: u16,
        /// Unit ids answered on every port: `1-100` or `1,2,5`.
        #[arg(long, default_value = "1")]
        unit_ids: String,
        /// Each answer's delay (a real device's response time).
        #[arg(long, default_value_t = 20)]
        delay_ms: u64,
        /// Answer requests of one connection concurrently (pipelining);
        /// default: one at a time, like most devices.
        #[arg(long)]
        concurrent: bool,
        /// Add unit id x this to every value, so the devices behind one port
        /// answer differently (a test can tell whose answer it got).
        #[arg(long, default_value_t = 0.0)]
        unit_step: f64,
    },
}

fn unit_ids(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u8, u8) = (a.parse()?, b.parse()?);
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(|| format!("unit id {part:?}"))?),
        }
    }
    if out.is_empty() {
        bail!("--unit-ids: none given");
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    logging::init(args.log_format, "info", None, Vec::new());
    match args.mode {
        Mode::Mqtt {
            sites,
            devices,
            types,
            per_connection,
            period_ms,
            seconds,
            drain_s,
            max_inflight,
            username,
            password,
            seed,
            report,
        } => {
            let sites = sites
                .iter()
                .map(|s| {
                    let (name, addr) = s
                        .split_once('=')
                        .with_context(|| format!("--site {s:?} is not NAME=HOST:PORT"))?;
                    Ok(Site {
                        name: name.to_string(),
                        addr: addr.to_string(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let types = types
                .iter()
                .map(|t| {
                    model::DeviceType::parse(t)
                        .with_context(|| format!("unknown device type {t:?}"))
                })
                .collect::<Result<Vec<_>>>()?;
            if types.is_empty() || period_ms == 0 || seconds == 0 {
                bail!("--types, --period-ms and --seconds must not be empty or 0");
            }
            let login = match (username, password) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => bail!("--username and --password (FLEET_SIM_PASSWORD) go together"),
            };
            let plan = Plan {
                sites,
                devices,
                types,
                per_connection,
            };
            let opts = fleet::mqtt::Options {
                period: Duration::from_millis(period_ms),
                duration: Duration::from_secs(seconds),
                drain: Duration::from_secs(drain_s),
                max_inflight: max_inflight.clamp(1, 60_000),
                login,
                seed,
            };
            let r = fleet::mqtt::run(plan, opts).await;
            tracing::info!(
                sent = r.sent,
                acked = r.acked,
                unacked = r.unacked,
                skipped = r.skipped,
                acked_per_s = r.acked_per_s,
                ack_p99_ms = ?r.ack_latency_ms_p99,
                rss_mib = r.rss_kib / 1024,
                peak_rss_mib = r.peak_rss_kib / 1024,
                "fleet done"
            );
            if let Some(path) = report {
                let text = serde_json::to_vec(&r)?;
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Mode::Modbus {
            profile,
            listen,
            first_port,
            ports,
            unit_ids: ids,
            delay_ms,
            concurrent,
            unit_step,
        } => {
            let p = Profile::load(&profile)?;
            if p.protocol != Protocol::Modbus {
                bail!("{} is not a Modbus profile", profile.display());
            }
            if ports == 0 || u32::from(first_port) + u32::from(ports) > 65_536 {
                bail!("--first-port + --ports must stay within 1..=65535");
            }
            let opts = fleet::modbus::Options {
                listen,
                first_port,
                ports,
                unit_ids: unit_ids(&ids)?,
                delay: Duration::from_millis(delay_ms),
                concurrent,
                unit_step,
            };
            tokio::select! {
                r = fleet::modbus::serve(RegisterMap::new(p), opts) => r.context("modbus fleet failed"),
                _ = qi_common::shutdown::signal() => Ok(()),
            }
        }
    }
}
