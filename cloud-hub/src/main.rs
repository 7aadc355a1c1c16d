use anyhow::Result;
use clap::Parser;
use cloud_hub::config::Config;
use qi_common::logging::LogFormat;
use std::path::PathBuf;

/// Central QI service: gRPC ingest from gateways, PostgreSQL/TimescaleDB storage, REST API.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); keys are documented in docs/configuration.md.
    #[arg(
        long,
        short,
        env = "CLOUD_HUB_CONFIG",
        default_value = "/etc/cloud-hub/config.toml"
    )]
    config: PathBuf,
    /// PostgreSQL URL; overrides `database.url`.
    #[arg(long, env = "QI_HUB_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Log format (human or json); overrides `log.format`.
    #[arg(long)]
    log_format: Option<LogFormat>,
}

fn main() -> std::process::ExitCode {
    qi_common::daemon::exit_code("cloud-hub", real_main(Args::parse()))
}

fn real_main(args: Args) -> Result<()> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(url) = args.database_url {
        cfg.database.url = url;
    }
    let format = args.log_format.unwrap_or(cfg.log.format);
    qi_common::daemon::run(format, "info,sqlx=warn", |metrics| {
        cloud_hub::app::run(cfg, metrics, qi_common::shutdown::signal())
    })
}
