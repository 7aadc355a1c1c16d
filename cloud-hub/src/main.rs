use anyhow::Result;
use clap::Parser;
use cloud_hub::config::Config;
use cloud_hub::identity::Role;
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
    /// Log format (auto, human or json); overrides `log.format`.
    #[arg(long)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Users of the REST API.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// API keys for machines (scripts, Prometheus, dashboards).
    Key {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// The keys that sign access tokens.
    SigningKey {
        #[command(subcommand)]
        action: SigningKeyCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Certificates (offline: reads neither the config nor the database).
    Certificate {
        #[command(subcommand)]
        action: CertificateCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
enum CertificateCommand {
    /// Verify a certificate bundle offline: both signatures, the chain up to
    /// --trust, JSON = XML, expiry, revocation, the log. Exit 0 valid, 1 not.
    Verify {
        /// The bundle (GET /api/v1/certificates/{id}/bundle).
        file: PathBuf,
        /// The certificate(s) trusted to issue (the issuing certificate or a CA above it), PEM.
        #[arg(long)]
        trust: PathBuf,
        /// A signed revocation list (GET /api/v1/certificates/revocations).
        #[arg(long)]
        revocations: Option<PathBuf>,
        /// A signed log head to check the bundle's inclusion proof against.
        #[arg(long)]
        log_head: Option<PathBuf>,
        /// Verify as of this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum UserCommand {
    /// Create a user; the password is read from standard input (one line).
    Add {
        name: String,
        #[arg(long)]
        role: Role,
        /// Limit the user to this site (repeat for several); none: every site.
        #[arg(long = "site")]
        sites: Vec<String>,
    },
    /// Set a user's password (read from standard input); revokes its sessions.
    Passwd { name: String },
}

#[derive(clap::Subcommand, Debug)]
enum KeyCommand {
    /// Create an API key and print it (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: Role,
        #[arg(long = "site")]
        sites: Vec<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revoke an API key by its id.
    Revoke { id: String },
}

#[derive(clap::Subcommand, Debug)]
enum SigningKeyCommand {
    /// Make a new signing key now; tokens of the old one stay valid until they expire.
    Rotate,
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Recompute the hash chain; exit status 1 and each problem printed if it is broken.
    Verify,
}

fn main() -> std::process::ExitCode {
    qi_common::daemon::exit_code("cloud-hub", real_main(Args::parse()))
}

fn real_main(args: Args) -> Result<()> {
    // Offline verification needs no config and no database: it runs on an
    // auditor's machine as well as on the hub's.
    if let Some(Command::Certificate {
        action:
            CertificateCommand::Verify {
                file,
                trust,
                revocations,
                log_head,
                at,
            },
    }) = &args.command
    {
        let ok = cloud_hub::cli::certificate_verify(
            file,
            trust,
            revocations.as_deref(),
            log_head.as_deref(),
            at.as_deref(),
        )?;
        std::process::exit(if ok { 0 } else { 1 });
    }
    let mut cfg = Config::load(&args.config)?;
    if let Some(url) = args.database_url {
        cfg.database.url = url;
    }
    let format = args.log_format.unwrap_or(cfg.log.format);
    if let Some(command) = args.command {
        return run_command(cfg, command);
    }
    let traces = cfg.telemetry.clone();
    qi_common::daemon::run(
        "cloud-hub",
        format,
        "info,sqlx=warn",
        Vec::new(),
        &traces,
        |metrics| cloud_hub::app::run(cfg, metrics, qi_common::shutdown::signal()),
    )
}

fn run_command(cfg: Config, command: Command) -> Result<()> {
    // Warnings only: the command's own output is what the operator reads.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use cloud_hub::cli;
        match command {
            Command::User {
                action: UserCommand::Add { name, role, sites },
            } => cli::user_add(&cfg, &name, role, sites).await,
            Command::User {
                action: UserCommand::Passwd { name },
            } => cli::user_passwd(&cfg, &name).await,
            Command::Key {
                action:
                    KeyCommand::Create {
                        name,
                        role,
                        sites,
                        expires_in_days,
                    },
            } => cli::key_create(&cfg, &name, role, sites, expires_in_days).await,
            Command::Key {
                action: KeyCommand::Revoke { id },
            } => cli::key_revoke(&cfg, &id).await,
            Command::SigningKey {
                action: SigningKeyCommand::Rotate,
            } => cli::signing_key_rotate(&cfg).await,
            Command::Certificate { .. } => {
                anyhow::bail!("certificate commands run before the config is read")
            }
            Command::Audit {
                action: AuditCommand::Verify,
            } => {
                if cli::audit_verify(&cfg).await? {
                    Ok(())
                } else {
                    std::process::exit(1)
                }
            }
        }
    })
}
