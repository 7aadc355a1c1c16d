//! `pv-rig-sim`: a simulated PV module test rig on real sockets. One process,
//! one physical state: a Modbus TCP gateway with the chamber, DAQ, supply,
//! bias supply and insulation tester as unit ids 1-5, a Keithley 2450 SMU on
//! a raw SCPI socket, and a control port. See simulator/README.md.

use anyhow::{Context, Result};
use clap::Parser;
use instrument_sim::rig::config::RigConfig;
use instrument_sim::rig::modbus::ModbusRig;
use instrument_sim::rig::{Rig, control, modbus, scpi};
use qi_common::logging::{self, LogFormat};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often the physics is brought up to date when nobody asks (wall time).
const TICK: Duration = Duration::from_millis(20);

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A simulated PV module test rig: chamber, DAQ, supplies, insulation tester (Modbus TCP) and SMU (SCPI)"
)]
struct Args {
    #[command(flatten)]
    rig: RigConfig,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: LogFormat,
}

async fn bind(kind: &str, addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {kind} on {addr}"))?;
    let local = listener.local_addr()?;
    // Tests and the demo read the ports from these lines (port 0: any free one).
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {kind} {local}")?;
    out.flush()?;
    Ok(listener)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Logs go to stderr so stdout carries only the `listening` lines.
    logging::init(args.log_format, "info", None, Vec::new());
    let rig = Arc::new(Rig::new(args.rig.clone()).context("cannot build the rig")?);
    let modbus_service = Arc::new(ModbusRig::new(Arc::clone(&rig)).context("rig profiles")?);
    let modbus_listener = bind("modbus", args.rig.modbus).await?;
    let scpi_listener = bind("scpi", args.rig.scpi).await?;
    let control_listener = bind("control", args.rig.control).await?;
    tracing::info!(
        time_scale = args.rig.time_scale,
        rated_pmax_w = args.rig.rated_pmax_w,
        "simulated PV rig ready"
    );
    let ticker = {
        let rig = Arc::clone(&rig);
        async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                rig.tick();
            }
        }
    };
    tokio::select! {
        res = modbus::serve(modbus_listener, modbus_service) => res.context("Modbus server failed")?,
        res = scpi::serve(scpi_listener, Arc::clone(&rig)) => res.context("SCPI server failed")?,
        res = control::serve(control_listener, Arc::clone(&rig)) => res.context("control port failed")?,
        () = ticker => {}
        _ = qi_common::shutdown::signal() => {}
    }
    Ok(())
}
