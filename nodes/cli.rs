//! Command-line interface: `node`, `token`, `config check`, `projections rebuild` and `probe`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use playhouse_runtime::config::NodeConfig;
use playhouse_runtime::edge::{JwtAuth, Role};

/// The default config, compiled in so that `playhouse` runs from any directory.
const EMBEDDED_DEFAULT: &str = include_str!("../config/single.toml");
const EMBEDDED_NAME: &str = "config/single.toml (embedded)";

#[derive(Debug, Parser)]
#[command(
    name = "playhouse",
    version,
    about = "An actor-based cluster runtime for event-sourced services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default, on the embedded config/single.toml).
    Node {
        /// The node's config file; the embedded single-node default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a JWT signed with the configured key, for trying the API by hand.
    Token {
        /// The token's subject (who is calling).
        #[arg(long)]
        sub: String,
        /// A role: reader, writer or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long the token is valid, like 30m, 1h or 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The config whose auth section signs the token; the embedded default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with read models (projections).
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// GET a node's health route and exit 0 if it answers 200: a container health check that
    /// needs no curl in the image.
    Probe {
        /// The edge's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        address: String,
        /// The route to ask.
        #[arg(long, default_value = "/health/live")]
        path: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Empty a projection's tables and apply the whole log again. Stop the node first (or use
    /// `POST /admin/projections/{name}/rebuild` on a running one).
    Rebuild {
        /// The projection: products, orders_by_customer or notifications.
        name: String,
        /// The node's config file; the embedded single-node default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print it as the node would run it, secrets redacted.
    Check { file: PathBuf },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Node { config: None }) {
        Command::Node { config } => {
            let config = load(config.as_deref())?;
            crate::node::run(config)
        }
        Command::Token {
            sub,
            roles,
            ttl,
            config,
        } => {
            let config = load(config.as_deref())?;
            let roles = roles
                .iter()
                .map(|name| {
                    Role::parse(name).with_context(|| {
                        format!("--role `{name}`: expected reader, writer or admin")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ttl: Duration = humantime::parse_duration(&ttl).with_context(|| {
                format!("--ttl `{ttl}`: expected a duration like 30m, 1h or 7d")
            })?;
            if let Err(problem) = playhouse_runtime::edge::check_subject(&sub) {
                bail!("--sub `{sub}`: {problem}");
            }
            println!("{}", JwtAuth::new(&config.auth).issue(&sub, &roles, ttl));
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name, config },
        } => {
            let config = load(config.as_deref())?;
            crate::services::check(&config)?;
            crate::node::rebuild_projection(config, &name)
        }
        Command::Probe { address, path } => match probe(&address, &path) {
            Ok(200) => Ok(ExitCode::SUCCESS),
            Ok(status) => {
                eprintln!("playhouse probe: {address}{path} answered {status}");
                Ok(ExitCode::FAILURE)
            }
            Err(error) => {
                eprintln!("playhouse probe: {address}{path}: {error}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = load(Some(&file))?;
            crate::services::check(&config)?;
            println!("# {}: valid", file.display());
            println!("# auth key: from {}", config.auth.key_source);
            print!(
                "{}",
                toml::to_string_pretty(&config.file).context("printing the config")?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One HTTP/1.0 GET within 3 s; the answer's status code.
fn probe(address: &str, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = Duration::from_secs(3);
    let target = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

/// Loads `path`, or the embedded default.
fn load(path: Option<&Path>) -> anyhow::Result<NodeConfig> {
    let config = match path {
        Some(path) => NodeConfig::load(path)?,
        None => NodeConfig::parse(
            Path::new(EMBEDDED_NAME),
            EMBEDDED_DEFAULT,
            std::env::vars().collect(),
        )?,
    };
    Ok(config)
}
