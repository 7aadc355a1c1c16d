use anyhow::Result;
use clap::Parser;
use edge_agent::config::Config;
use qi_common::logging::LogFormat;
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
    qi_common::daemon::exit_code("edge-agent", real_main(Args::parse()))
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
    let format = args.log_format.unwrap_or(cfg.log.format);
    qi_common::daemon::run(format, "info", |metrics| {
        edge_agent::app::run(cfg, metrics, qi_common::shutdown::signal())
    })
}
