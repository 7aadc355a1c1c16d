use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
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
    /// Log format (auto, human or json); overrides `log.format` from the file.
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Check the configuration and the profiles it names, then exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Firmware profile tools.
    Profiles {
        #[command(subcommand)]
        action: ProfilesCommand,
    },
    /// Test protocol template tools.
    Protocols {
        #[command(subcommand)]
        action: ProtocolsCommand,
    },
    /// Site MQTT bus tools.
    Mqtt {
        #[command(subcommand)]
        action: MqttCommand,
    },
    /// Local users of the gateway's API (the file `auth.users_file`). The
    /// running agent sees changes at once. Passwords are read from standard
    /// input (one line), never from the command line.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user; the password comes on standard input.
    Add {
        name: String,
        /// viewer, operator, engineer or admin.
        #[arg(long)]
        role: edge_agent::identity::Role,
    },
    /// Remove a user; their sessions end at their next request.
    Remove { name: String },
    /// Set a user's password (from standard input); their sessions end.
    Passwd { name: String },
    /// List users and roles.
    List,
}

#[derive(Subcommand, Debug)]
enum MqttCommand {
    /// Print a `password_hash` for `[[mqtt.users]]`. Reads the password from
    /// standard input (one line), so it stays out of the shell history.
    HashPassword {
        /// PBKDF2 iterations: more is slower to guess and slower to connect.
        #[arg(long, default_value_t = 100_000)]
        iterations: u32,
    },
}

#[derive(Subcommand, Debug)]
enum ProfilesCommand {
    /// Validate profile files; print each one's errors with the line, or a summary.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ProtocolsCommand {
    /// Validate protocol templates; print each one's errors with the place, or a summary.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    qi_common::daemon::exit_code("edge-agent", real_main(Args::parse()))
}

fn real_main(args: Args) -> Result<()> {
    if let Some(Command::Profiles {
        action: ProfilesCommand::Check { files },
    }) = &args.command
    {
        return check_profiles(files);
    }
    if let Some(Command::Protocols {
        action: ProtocolsCommand::Check { files },
    }) = &args.command
    {
        return check_protocols(files);
    }
    if let Some(Command::Mqtt {
        action: MqttCommand::HashPassword { iterations },
    }) = &args.command
    {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let pw = line.trim_end_matches(['\r', '\n']);
        if pw.is_empty() || *iterations == 0 {
            bail!("give a non-empty password on standard input and --iterations > 0");
        }
        println!("{}", edge_agent::mqtt::auth::hash_password(pw, *iterations));
        return Ok(());
    }
    let cfg = Config::load(&args.config)?;
    if let Some(Command::User { action }) = &args.command {
        return user_command(&cfg, action);
    }
    if args.check {
        let profiles = edge_agent::fleet::load_profiles(&cfg)
            .with_context(|| format!("config file {}", args.config.display()))?;
        let models = cfg
            .devices
            .iter()
            .zip(profiles)
            .map(|(d, p)| (d.id.clone(), (std::sync::Arc::new(p), d.poll_interval_ms)))
            .collect();
        edge_agent::benches::resolve(&cfg.benches, &models)
            .with_context(|| format!("config file {}", args.config.display()))?;
        edge_agent::uplink::check_client_certificate(&cfg.uplink)?;
        println!(
            "{}: OK ({} devices)",
            args.config.display(),
            cfg.devices.len()
        );
        return Ok(());
    }
    let format = args.log_format.unwrap_or(cfg.log.format);
    let traces = cfg.telemetry.clone();
    qi_common::daemon::run(
        "edge-agent",
        format,
        "info,rumqttd=warn",
        vec![("gateway", cfg.gateway_id.clone())],
        &traces,
        |metrics| {
            edge_agent::app::run(
                cfg,
                Some(args.config.clone()),
                metrics,
                qi_common::shutdown::signal(),
            )
        },
    )
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        bail!("give a non-empty password on standard input (one line)");
    }
    Ok(pw)
}

fn user_command(cfg: &Config, action: &UserCommand) -> Result<()> {
    let path = cfg.auth.users_path(&cfg.buffer.path);
    let store = edge_agent::identity::UserStore::new(path.clone());
    let file = path.display();
    match action {
        UserCommand::Add { name, role } => {
            store
                .add(name, *role, &read_password()?)
                .with_context(|| format!("cannot add user {name:?} to {file}"))?;
            println!("user {name} ({role}) added to {file}");
        }
        UserCommand::Remove { name } => {
            store
                .remove(name)
                .with_context(|| format!("cannot remove user {name:?} from {file}"))?;
            println!("user {name} removed from {file}");
        }
        UserCommand::Passwd { name } => {
            store
                .set_password(name, &read_password()?)
                .with_context(|| format!("cannot change the password of {name:?} in {file}"))?;
            println!("password of {name} changed in {file}");
        }
        UserCommand::List => {
            for u in store
                .load()
                .with_context(|| format!("cannot read {file}"))?
            {
                println!("{}\t{}", u.name, u.role);
            }
        }
    }
    Ok(())
}

fn check_protocols(files: &[PathBuf]) -> Result<()> {
    let mut bad = 0;
    for f in files {
        match qi_protocol::Protocol::load(f) {
            Ok(p) => println!("{}: OK: {}", f.display(), p.summary()),
            Err(e) => {
                bad += 1;
                println!("{}: ERROR: {e}", f.display());
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} protocols invalid", files.len());
    }
    Ok(())
}

fn check_profiles(files: &[PathBuf]) -> Result<()> {
    let mut bad = 0;
    for f in files {
        match device_profile::Profile::load(f) {
            Ok(p) => println!("{}: OK: {}", f.display(), edge_agent::profile_summary(&p)),
            Err(e) => {
                bad += 1;
                println!("{}: ERROR: {e}", f.display());
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} profiles invalid", files.len());
    }
    Ok(())
}
