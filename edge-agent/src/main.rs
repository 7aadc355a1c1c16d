use anyhow::{Context, Result};
use clap::Parser;
use edge_agent::config::Config;
use qi_common::logging::{self, LogFormat};
use std::path::PathBuf;

/// Site gateway daemon: polls instruments, buffers every reading durably, streams to the hub.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); keys are documented in docs/configuration.md.
    #[arg(
        long,
        short,
        env = "EDGE_AGENT_CONFIG",
        default_value = "/etc/edge-agent/config.toml"
    )]
    config: PathBuf,
    /// Log format (human or json); overrides `log.format` from the file.
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Check the configuration and the profiles it names, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Result<()> {
    let cfg = Config::load(&args.config)?;
    if args.check {
        edge_agent::app::load_profiles(&cfg)?;
        println!(
            "{}: OK ({} devices)",
            args.config.display(),
            cfg.devices.len()
        );
        return Ok(());
    }
    logging::init(args.log_format.unwrap_or(cfg.log.format), "info");
    let metrics = qi_common::install_metrics()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(edge_agent::app::run(
        cfg,
        metrics,
        qi_common::shutdown::signal(),
    ))
}
